/**
 * Request bodies for the HTTP benchmarks: one op, pass, shape and element type, as
 * JSON (nested arrays, numbers of 7 significant digits, as a float32 client would
 * send) or as safetensors (asking for a safetensors answer). Only x (and dy) are
 * sent: gamma and beta take their defaults. The data is bench/cases.ts's.
 */
import type { OpName, Pass } from '../src/kernels/registry.js';
import { encodeSafetensors } from '../src/tensor/safetensors.js';
import type { DType, FloatArray } from '../src/tensor/tensor.js';
import { randomData } from './cases.js';

export type Transport = 'json' | 'safetensors';

export interface Payload {
  name: string;
  method: 'POST';
  path: string;
  headers: Record<string, string>;
  body: string | Buffer;
  /** request body size in bytes */
  bytes: number;
}

export const SAFETENSORS = 'application/x-safetensors';

/** The scalar fields each op needs at these shapes (as bench/cases.ts, defaults left out). */
function scalars(op: OpName, shape: number[]): Record<string, unknown> {
  switch (op) {
    case 'group_norm':
      return { numGroups: Math.min(32, shape[1]! / 2) };
    case 'layer_norm':
    case 'rms_norm':
      return { normalizedShape: shape.slice(1) };
    default:
      return {};
  }
}

function nest(shape: readonly number[], data: ArrayLike<number>, offset = 0, depth = 0): unknown {
  const n = shape[depth]!;
  if (depth === shape.length - 1) {
    return Array.from({ length: n }, (_, i) => Number(data[offset + i]!.toPrecision(7)));
  }
  const stride = shape.slice(depth + 1).reduce((a, b) => a * b, 1);
  return Array.from({ length: n }, (_, i) => nest(shape, data, offset + i * stride, depth + 1));
}

export function payload(
  op: OpName,
  pass: Pass,
  shape: number[],
  dtype: DType,
  transport: Transport,
): Payload {
  const n = shape.reduce((a, b) => a * b, 1);
  const Ctor = dtype === 'float32' ? Float32Array : Float64Array;
  const x = Ctor.from(randomData(n, 1));
  const dy = pass === 'backward' ? Ctor.from(randomData(n, 2)) : undefined;
  const name = `${op} ${pass} ${transport} ${dtype} [${shape.join(',')}]`;
  const path = pass === 'forward' ? '/forward' : '/backward';
  const fields = { op, ...scalars(op, shape) };
  if (transport === 'json') {
    const body = JSON.stringify({
      ...fields,
      dtype,
      x: nest(shape, x),
      ...(dy ? { dy: nest(shape, dy) } : {}),
    });
    const headers = { 'content-type': 'application/json' };
    return { name, method: 'POST', path, headers, body, bytes: Buffer.byteLength(body) };
  }
  const metadata = Object.fromEntries(
    Object.entries(fields).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)]),
  );
  const tensors: Record<string, { shape: number[]; data: FloatArray }> = { x: { shape, data: x } };
  if (dy) tensors.dy = { shape, data: dy };
  const body = encodeSafetensors(tensors, metadata);
  const headers = { 'content-type': SAFETENSORS, accept: SAFETENSORS };
  return { name, method: 'POST', path, headers, body, bytes: body.byteLength };
}

/** Sends a payload once and checks for a 200, so a benchmark never measures a stream of 400s. */
export async function check(base: string, p: Payload): Promise<void> {
  const res = await fetch(`${base}${p.path}`, {
    method: p.method,
    headers: p.headers,
    body: p.body,
    signal: AbortSignal.timeout(30_000),
  });
  const bytes = await res.arrayBuffer();
  if (res.status !== 200) {
    throw new Error(`${p.name}: status ${res.status}: ${Buffer.from(bytes).subarray(0, 500).toString()}`);
  }
}
