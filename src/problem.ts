import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { clip } from './text.js';

/**
 * RFC 9457 problem details: the one shape of every error the service returns.
 * Field errors carry a `path` such as `gamma`, `x[1][0]` or `x.data[3]`.
 */
export interface FieldError {
  path: string;
  message: string;
}

export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  /** the fields at fault; empty when the problem is not about a field (overload, internal) */
  errors: FieldError[];
}

export const problemSchema = z
  .object({
    type: z.string().describe('A URI identifying the kind of problem.'),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    errors: z
      .array(
        z.object({ path: z.string().describe('The field, e.g. "gamma" or "x[1][0]".'), message: z.string() }),
      )
      .describe('The fields at fault; empty when the problem is not about a field.'),
  })
  .describe('RFC 9457 problem details (application/problem+json).');

// A URN: it names the kind of problem without pretending to be a page that resolves.
const TYPE_BASE = 'urn:normserve:problem:';

const TITLES: Record<number, string> = {
  400: 'Invalid request',
  401: 'Unauthorized',
  404: 'Not found',
  405: 'Method not allowed',
  408: 'Request timeout',
  431: 'Request header fields too large',
  413: 'Payload too large',
  415: 'Unsupported media type',
  500: 'Internal server error',
  503: 'Service unavailable',
  504: 'Gateway timeout',
};

/** `["x", 1, 0]` → `x[1][0]`; `["x", "data", 3]` → `x.data[3]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? clip(String(seg)) : `.${clip(String(seg))}`;
  }
  return out;
}

/** At most this many field errors are listed: a body with a million bad fields gets a small answer. */
const MAX_ERRORS = 20;

function zodIssues(error: FastifyError): FieldError[] {
  const out: FieldError[] = [];
  for (const v of error.validation ?? []) {
    if (out.length >= MAX_ERRORS) break;
    const path = v.instancePath
      .split('/')
      .filter((s) => s !== '')
      .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
    if (v.keyword === 'unrecognized_keys') {
      for (const key of ((v.params as { keys?: string[] }).keys ?? []).slice(0, MAX_ERRORS - out.length)) {
        out.push({ path: formatPath([...path, key]), message: 'unknown field for this op and endpoint' });
      }
      continue;
    }
    out.push({ path: formatPath(path) || 'body', message: v.message ?? 'invalid' });
  }
  return out;
}

export function sendProblem(reply: FastifyReply, problem: Problem): FastifyReply {
  return reply.code(problem.status).type('application/problem+json').send(JSON.stringify(problem));
}

export function problem(status: number, detail: string, errors: FieldError[] = [], code?: string): Problem {
  const slug = (code ?? TITLES[status] ?? 'error').toLowerCase().replace(/[^a-z0-9]+/g, '-');
  return { type: `${TYPE_BASE}${slug}`, title: TITLES[status] ?? 'Error', status, detail, errors };
}

function fromError(error: FastifyError, request: FastifyRequest): Problem {
  if (hasZodFastifySchemaValidationErrors(error)) {
    const errors = zodIssues(error);
    const total = (error.validation ?? []).reduce(
      (n, v) =>
        n + (v.keyword === 'unrecognized_keys' ? ((v.params as { keys?: string[] }).keys?.length ?? 1) : 1),
      0,
    );
    const more = total > errors.length ? ` (and ${total - errors.length} more)` : '';
    const fields = [...new Set(errors.map((e) => e.path))].join(', ');
    return problem(
      400,
      `The request ${error.validationContext ?? 'body'} is invalid: ${fields}${more}.`,
      errors,
      'invalid-request',
    );
  }
  const status = error.statusCode ?? 500;
  if (status >= 500 && status !== 503 && status !== 504) {
    request.log.error({ err: error }, 'request failed');
    return problem(500, 'The request could not be completed.', undefined, 'internal');
  }
  const kind = error.code?.replace(/^NORMSERVE_/, '');
  const fields = (error as { fields?: FieldError[] }).fields;
  if (status === 400 && fields) return problem(400, error.message, fields, 'invalid-request');
  if (fields) return problem(status, error.message, fields, kind);
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return problem(400, error.message, [{ path: 'body', message: error.message }], 'malformed-json');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return problem(413, error.message, [{ path: 'body', message: error.message }], 'body-too-large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return problem(
        415,
        `${error.message}. Send application/json or application/x-safetensors.`,
        [{ path: 'content-type', message: 'unsupported' }],
        'unsupported-media-type',
      );
  }
  if (error instanceof SyntaxError || /JSON/.test(error.message)) {
    return problem(400, error.message, [{ path: 'body', message: error.message }], 'malformed-json');
  }
  if (status === 401) {
    return problem(
      401,
      error.message,
      [{ path: 'authorization', message: 'expected "Bearer <key>"' }],
      'unauthorized',
    );
  }
  return problem(status, error.message, undefined, kind);
}

export function registerProblemHandlers(app: FastifyInstance) {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    const p = fromError(error, request);
    // Refusals by reason: the problem's kind (invalid-request, body-too-large, overloaded, …).
    request.server.metrics?.rejected.inc({ reason: p.type.slice(TYPE_BASE.length) });
    if (p.status === 503 || p.status === 504) reply.header('retry-after', '1');
    if (p.status === 401) reply.header('www-authenticate', 'Bearer');
    return sendProblem(reply, p);
  });
  app.setNotFoundHandler((request, reply) =>
    sendProblem(reply, problem(404, `No route ${request.method} ${request.url}.`, undefined, 'not-found')),
  );
}

/** A documented error response: problem details as application/problem+json. */
export function problemResponse(description: string) {
  return { description, content: { 'application/problem+json': { schema: problemSchema } } };
}

/**
 * Errors Node's HTTP parser raises before a request exists (a slow client's timeout,
 * oversized headers, a malformed request line or chunk) answered as problem details too,
 * in place of fastify's plain JSON, written straight to the socket as fastify does.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: import('node:stream').Duplex) {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, detail] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'The request did not arrive within REQUEST_TIMEOUT_MS.']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'The request headers are too large.']
        : [400, 'The request is not valid HTTP.'];
  const body = JSON.stringify(problem(status, detail, [], TITLES[status] ?? 'bad-request'));
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${TITLES[status] ?? 'Bad Request'}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/problem+json\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}
