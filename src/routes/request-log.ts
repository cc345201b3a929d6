import type { FastifyInstance } from 'fastify';

/**
 * One structured log line per request: id, method, route, status, duration and
 * the shapes of the tensors it carried — never their values. The request id is
 * echoed in the X-Request-Id response header.
 */
function shapes(body: unknown): Record<string, number[]> | undefined {
  if (body === null || typeof body !== 'object') return undefined;
  const out: Record<string, number[]> = {};
  for (const [key, value] of Object.entries(body)) {
    const shape = (value as { shape?: unknown } | null)?.shape;
    const data = (value as { data?: unknown } | null)?.data;
    if (Array.isArray(shape) && ArrayBuffer.isView(data)) out[key] = shape as number[];
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

export function registerRequestLog(app: FastifyInstance) {
  app.addHook('onRequest', async (request, reply) => {
    reply.header('x-request-id', request.id);
  });
  app.addHook('onResponse', async (request, reply) => {
    const body = request.body as { op?: unknown; dtype?: unknown } | undefined;
    request.log.info(
      {
        method: request.method,
        route: request.routeOptions.url ?? request.url.split('?', 1)[0],
        status: reply.statusCode,
        ms: Math.round(reply.elapsedTime * 100) / 100,
        op: typeof body?.op === 'string' ? body.op : undefined,
        dtype: typeof body?.dtype === 'string' ? body.dtype : undefined,
        tensors: shapes(body),
        bytesIn: Number(request.headers['content-length']) || undefined,
      },
      'request',
    );
  });
}
