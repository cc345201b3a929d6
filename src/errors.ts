import createError from '@fastify/error';

/**
 * The service's own error kinds, each with a code and a status. The error
 * handler (`src/problem.ts`) turns them, fastify's and zod's errors into RFC 9457
 * problem details.
 */
export const Overloaded = createError('NORMSERVE_OVERLOADED', 'The worker queue is full; retry shortly', 503);
export const Unauthorized = createError('NORMSERVE_UNAUTHORIZED', 'A valid API key is required', 401);
export const InvalidBody = createError<[string]>('NORMSERVE_INVALID_BODY', '%s', 400);
