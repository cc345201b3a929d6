import type { FastifyInstance } from 'fastify';
import type { ZodTypeProvider } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { problem, problemResponse, sendProblem } from '../problem.js';

const status = z.object({ status: z.string() });

export async function healthRoutes(app: FastifyInstance) {
  const r = app.withTypeProvider<ZodTypeProvider>();
  r.get(
    '/health',
    {
      schema: {
        summary: 'Liveness',
        description: 'Answers 200 while the process serves HTTP.',
        tags: ['operations'],
        response: { 200: status },
      },
    },
    async () => ({ status: 'ok' }),
  );
  r.get(
    '/ready',
    {
      schema: {
        summary: 'Readiness',
        description:
          'Answers 200 when the worker pool is up and the service is not shutting down, 503 otherwise.',
        tags: ['operations'],
        response: { 200: status, 503: problemResponse('Starting or shutting down.') },
      },
    },
    async (_request, reply) => {
      if (app.compute.ready) return { status: 'ready' };
      reply.header('retry-after', '1');
      return sendProblem(
        reply,
        problem(503, 'The worker pool is starting or the service is shutting down.', undefined, 'not-ready'),
      );
    },
  );
}
