import { Readable } from 'node:stream';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { InvalidBody } from '../errors.js';
import type { KernelResult } from '../kernels/task.js';
import { decodeSafetensors, encodeSafetensorsChunks, SafetensorsError } from '../tensor/safetensors.js';
import { BinaryTensor } from '../tensor/tensor.js';
import type { SharedBuffers } from '../workers/shared-buffers.js';
import { readSharedBody } from './shared-body.js';

/**
 * The safetensors transport: a request body of `application/x-safetensors` becomes
 * the same body object a JSON request would give (tensors named as the JSON
 * fields, scalar fields from `__metadata__` as JSON text), so one schema validates both.
 */
export const SAFETENSORS = 'application/x-safetensors';

/** A 400 naming the part of the body at fault; the error handler lists it in `errors`. */
function invalid(path: string, message: string) {
  const err = new InvalidBody(`Invalid safetensors body: ${path}: ${message}`);
  return Object.assign(err, { fields: [{ path, message }] });
}

/** `__metadata__` strings are JSON text ("1e-5", "true", "null", "[4]"); `op` and `dtype` may be bare words. */
function metadataValue(key: string, text: string): unknown {
  if ((key === 'op' || key === 'dtype') && !text.startsWith('"')) return text;
  try {
    return JSON.parse(text);
  } catch {
    throw invalid(
      `__metadata__.${key}`,
      `expected JSON text (e.g. "1e-5", "true", "null", "[4]"), got ${JSON.stringify(text)}`,
    );
  }
}

/** The request body object of a safetensors body held in shared memory. */
export function safetensorsToBody(bytes: Uint8Array): Record<string, unknown> {
  let file: ReturnType<typeof decodeSafetensors>;
  try {
    // A body in shared memory is ours alone: its tensors can be views on it.
    file = decodeSafetensors(bytes, bytes.buffer instanceof SharedArrayBuffer);
  } catch (err) {
    if (err instanceof SafetensorsError) throw invalid(err.path, err.message);
    throw err;
  }
  const body: Record<string, unknown> = Object.create(null);
  for (const [key, text] of Object.entries(file.metadata)) {
    if (key in file.tensors) throw invalid(`__metadata__.${key}`, `"${key}" is also a tensor`);
    body[key] = metadataValue(key, text);
  }
  for (const [name, t] of Object.entries(file.tensors)) body[name] = new BinaryTensor(t.shape, t.data);
  const x = file.tensors.x;
  if (x) {
    // The computation's element type is x's.
    const dtype = x.dtype === 'F32' ? 'float32' : 'float64';
    if (body.dtype !== undefined && body.dtype !== dtype) {
      throw invalid('dtype', `"${String(body.dtype)}" contradicts x's dtype ${x.dtype}; omit it or match it`);
    }
    body.dtype = dtype;
  }
  return { ...body };
}

declare module 'fastify' {
  interface FastifyRequest {
    /** shared memory this request took (its body, a split computation's tensors), to recycle once it is over */
    shared?: SharedArrayBuffer[];
    /** a computation on this request's memory was abandoned: its memory must not be recycled */
    abandoned?: boolean;
  }
}

/** Shared memory for this request, from the recycled buffers, given back when the request is over. */
export function sharedFor(request: FastifyRequest, buffers: SharedBuffers) {
  return (bytes: number): SharedArrayBuffer => {
    const buffer = buffers.take(bytes);
    request.shared ??= [];
    request.shared.push(buffer);
    return buffer;
  };
}

export function registerSafetensorsParser(app: FastifyInstance, bodyLimit: number, buffers: SharedBuffers) {
  // No parseAs: the raw stream goes straight into shared memory (see readSharedBody).
  app.addContentTypeParser(SAFETENSORS, async (request: FastifyRequest, payload: Readable) => {
    const length = Number(request.headers['content-length']);
    return safetensorsToBody(await readSharedBody(payload, length, bodyLimit, sharedFor(request, buffers)));
  });
  // The response is out and no worker can still read the request's memory: it serves the next ones.
  app.addHook('onResponse', async (request) => {
    if (request.abandoned) return;
    for (const buffer of request.shared ?? []) buffers.give(buffer);
  });
}

/** The quality the Accept header gives a media type (exact or wildcard match), 0 when absent. */
function quality(accept: string, type: string): number {
  let best = 0;
  for (const part of accept.split(',')) {
    const [range, ...params] = part.trim().toLowerCase().split(';');
    const r = range?.trim() ?? '';
    const matches = r === type || r === '*/*' || r === `${type.split('/')[0]}/*`;
    if (!matches) continue;
    const q = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    const value = q === undefined ? 1 : Number(q.slice(2));
    if (Number.isFinite(value)) best = Math.max(best, value);
  }
  return best;
}

/** True when the Accept header prefers safetensors to JSON (named explicitly, not by a wildcard). */
export function wantsSafetensors(request: FastifyRequest): boolean {
  const accept = request.headers.accept;
  if (!accept?.toLowerCase().includes(SAFETENSORS)) return false;
  const q = quality(accept, SAFETENSORS);
  return q > 0 && q >= quality(accept, 'application/json');
}

/** Sends a result as safetensors, streamed from the result's own memory (no copy into one buffer). */
export function sendBinaryResult(reply: FastifyReply, result: KernelResult): FastifyReply {
  const metadata = Object.fromEntries(Object.entries(result.scalars).map(([k, v]) => [k, String(v)]));
  const { chunks, length } = encodeSafetensorsChunks(result.tensors, metadata);
  return reply.type(SAFETENSORS).header('content-length', length).send(Readable.from(chunks));
}
