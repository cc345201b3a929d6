import createError from '@fastify/error';

/**
 * The service's own error kinds, each with a code and a status. The error
 * handler (`src/problem.ts`) turns them, fastify's and zod's errors into RFC 9457
 * problem details.
 */
export const Overloaded = createError('NORMSERVE_OVERLOADED', 'The worker queue is full; retry shortly', 503);
export const Unauthorized = createError('NORMSERVE_UNAUTHORIZED', 'A valid API key is required', 401);
export const InvalidBody = createError<[string]>('NORMSERVE_INVALID_BODY', '%s', 400);
export const TaskTimeout = createError<[number]>(
  'NORMSERVE_TASK_TIMEOUT',
  'The computation did not finish within TASK_TIMEOUT_MS (%d ms) and was abandoned',
  504,
);
export const TooManyElements = createError<[string]>('NORMSERVE_TOO_MANY_ELEMENTS', '%s', 413);
export const ComputeFailed = createError('NORMSERVE_COMPUTE_FAILED', 'The computation failed', 500);
export const ClientClosedRequest = createError(
  'NORMSERVE_CLIENT_CLOSED_REQUEST',
  'The client closed the connection before the answer',
  499,
);
