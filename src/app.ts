import { randomUUID } from 'node:crypto';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance, LogController } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { registerApiKeys } from './auth.js';
import type { Config } from './config.js';
import { metrics } from './metrics.js';
import { clientErrorHandler, problem, registerProblemHandlers, sendProblem } from './problem.js';
import { computeRoutes } from './routes/compute.js';
import { healthRoutes } from './routes/health.js';
import { addBinaryContent, openapiInfo } from './routes/openapi.js';
import { registerRequestLog } from './routes/request-log.js';
import { computePool } from './workers/pool.js';

/** A client's X-Request-Id is kept when it is a sane token; otherwise the request gets a fresh UUID. */
const REQUEST_ID = /^[\w.:-]{1,128}$/;

/** The whole service as a Fastify instance; the process concerns live in server.ts. */
export async function buildApp(config: Config): Promise<FastifyInstance> {
  const app = Fastify({
    logger: { level: config.logLevel, redact: ['req.headers.authorization', 'headers.authorization'] },
    bodyLimit: config.bodyLimit,
    // Slow clients: the whole request must arrive within REQUEST_TIMEOUT_MS. An idle socket is
    // closed only after a computation could have finished, so a long task keeps its connection.
    requestTimeout: config.requestTimeoutMs,
    // Node checks those deadlines only every connectionsCheckingInterval (30 s by default), and
    // enforces requestTimeout on a body only when headersTimeout ≤ requestTimeout at creation.
    http: {
      requestTimeout: config.requestTimeoutMs,
      headersTimeout: Math.min(60_000, config.requestTimeoutMs),
      connectionsCheckingInterval: Math.min(1_000, config.requestTimeoutMs),
    },
    connectionTimeout: config.taskTimeoutMs + config.requestTimeoutMs,
    requestIdHeader: false,
    clientErrorHandler,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    // One line per request, written by registerRequestLog with what matters (sizes, not contents).
    logController: new LogController({ disableRequestLogging: true }),
    // While closing, requests get our own 503 problem (below), not fastify's plain JSON one.
    return503OnClosing: false,
  });
  // Shutdown: every response after close() began asks its client to hang up, so that the keep-alive
  // connections busy at SIGTERM end with their last answer instead of holding the close open.
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async (_request, reply) => {
    if (!closing) return;
    reply.header('connection', 'close').header('retry-after', '1');
    return sendProblem(
      reply,
      problem(503, 'The service is shutting down; retry on another instance.', undefined, 'shutting-down'),
    );
  });
  app.addHook('onSend', async (_request, reply) => {
    if (closing) reply.header('connection', 'close');
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // Only JSON and safetensors bodies are accepted: anything else is a 415, not a string for the validator to reject.
  app.removeContentTypeParser(['text/plain']);
  registerProblemHandlers(app);
  registerRequestLog(app);
  registerApiKeys(app, config.apiKeys);

  await app.register(swagger, {
    openapi: openapiInfo,
    transform: jsonSchemaTransform,
    transformObject: addBinaryContent as never,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(computePool, {
    workers: config.workers,
    maxQueue: config.maxQueue,
    taskTimeoutMs: config.taskTimeoutMs,
    thresholds: config.thresholds,
    testHooks: config.testHooks,
  });
  await app.register(metrics);
  await app.register(healthRoutes);
  await app.register(computeRoutes, {
    bodyLimit: config.bodyLimit,
    maxElements: config.maxElements,
    pressure: config.pressure,
  });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
