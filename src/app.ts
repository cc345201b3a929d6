import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import { registerApiKeys } from './auth.js';
import type { Config } from './config.js';
import { registerProblemHandlers } from './problem.js';
import { computeRoutes } from './routes/compute.js';
import { healthRoutes } from './routes/health.js';
import { addBinaryContent, openapiInfo } from './routes/openapi.js';
import { computePool } from './workers/pool.js';

/** The whole service as a Fastify instance; the process concerns live in server.ts. */
export async function buildApp(config: Config): Promise<FastifyInstance> {
  const app = Fastify({
    logger: {
      level: config.logLevel,
      redact: ['req.headers.authorization'],
    },
    bodyLimit: config.bodyLimit,
    // A long computation must not be cut off mid-answer by Node's default request timeout.
    requestTimeout: 0,
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  // Only JSON bodies are accepted: anything else is a 415, not a string for the validator to reject.
  app.removeContentTypeParser(['text/plain']);
  registerProblemHandlers(app);
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
    thresholds: config.thresholds,
  });
  await app.register(healthRoutes);
  await app.register(computeRoutes);
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  return app;
}
