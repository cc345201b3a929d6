import type { Readable } from 'node:stream';
import { errorCodes } from 'fastify';

/**
 * Reads a request body straight into shared memory, so its tensors can be
 * viewed in place and read by every worker at once (a request split across the
 * pool) without another copy. The limits are fastify's own: `BODY_LIMIT` (413)
 * and a body that does not match its Content-Length (400).
 *
 * With a Content-Length the chunks are copied in as they arrive; without one
 * they are kept and copied once at the end. `allocate` may hand out a recycled
 * buffer larger than the body: the result is a view of exactly the body's bytes.
 */
export function readSharedBody(
  payload: Readable,
  contentLength: number,
  limit: number,
  allocate: (bytes: number) => SharedArrayBuffer = (bytes) => new SharedArrayBuffer(bytes),
): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    if (contentLength > limit) {
      payload.resume();
      reject(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE());
      return;
    }
    const known = Number.isSafeInteger(contentLength) && contentLength >= 0;
    const body = known ? new Uint8Array(allocate(contentLength), 0, contentLength) : null;
    const chunks: Buffer[] = [];
    let received = 0;

    const cleanup = () => {
      payload.removeListener('data', onData);
      payload.removeListener('end', onEnd);
      payload.removeListener('error', onError);
    };
    function onData(chunk: Buffer) {
      const at = received;
      received += chunk.length;
      if (received > limit) {
        cleanup();
        payload.resume();
        reject(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE());
        return;
      }
      if (!body) chunks.push(chunk);
      else if (received <= body.length) body.set(chunk, at);
    }
    function onEnd() {
      cleanup();
      if (body) {
        if (received !== body.length) reject(new errorCodes.FST_ERR_CTP_INVALID_CONTENT_LENGTH());
        else resolve(body);
        return;
      }
      const out = new Uint8Array(allocate(received), 0, received);
      let at = 0;
      for (const c of chunks) {
        out.set(c, at);
        at += c.length;
      }
      resolve(out);
    }
    function onError(err: Error & { statusCode?: number }) {
      cleanup();
      if (!(typeof err.statusCode === 'number' && err.statusCode >= 400)) err.statusCode = 400;
      reject(err);
    }
    payload.on('data', onData);
    payload.on('end', onEnd);
    payload.on('error', onError);
    payload.resume();
  });
}
