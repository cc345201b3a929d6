import type { Piscina } from 'piscina';
import { finishParts, type PartTask, type Pass, runKernel, unitsOf } from '../kernels/registry.js';
import type { KernelResult, KernelTask, Part } from '../kernels/task.js';
import { type DType, type FloatArray, sizeOf } from '../tensor/tensor.js';

/**
 * Where a request runs, by its size (elements of x):
 *
 *   ≤ inlineMax   on the event loop: the kernel takes less time than a round trip to a worker
 *   < splitMin    in one worker, its buffers moved there and back
 *   ≥ splitMin    split across every worker over shared memory, its partial results merged here
 *
 * The defaults come from `npm run bench` (bench/dispatch.ts); see bench/RESULTS.md.
 */
export interface Thresholds {
  inlineMax: number;
  splitMin: number;
}

export const DEFAULT_THRESHOLDS: Thresholds = { inlineMax: 2048, splitMin: 1 << 20 };

export type Route = 'inline' | 'pool' | 'split';

export function routeOf(elements: number, threads: number, t: Thresholds): Route {
  if (elements <= t.inlineMax) return 'inline';
  if (elements >= t.splitMin && threads > 1) return 'split';
  return 'pool';
}

/** The buffers to move to the worker: every tensor's, but shared memory, which workers see as it is. */
function buffersOf(task: KernelTask): ArrayBuffer[] {
  const seen = new Set<ArrayBuffer>();
  for (const t of Object.values(task.tensors)) {
    if (t && !(t.buffer instanceof SharedArrayBuffer)) seen.add(t.buffer as ArrayBuffer);
  }
  return [...seen];
}

export type SharedAllocator = (bytes: number) => SharedArrayBuffer;

const freshShared: SharedAllocator = (bytes) => new SharedArrayBuffer(bytes);

/** A typed array of exactly `length` elements on memory from `allocate` (which may be larger). */
function sharedArray(dtype: DType, length: number, allocate: SharedAllocator): FloatArray {
  return dtype === 'float32'
    ? new Float32Array(allocate(length * 4), 0, length)
    : new Float64Array(allocate(length * 8), 0, length);
}

/** `data` in shared memory with the computation's element type: as it is when it already is (a safetensors body). */
function shared(data: FloatArray, dtype: DType, allocate: SharedAllocator): FloatArray {
  const ok =
    data.buffer instanceof SharedArrayBuffer && data instanceof Float32Array === (dtype === 'float32');
  if (ok) return data;
  const out = sharedArray(dtype, data.length, allocate);
  out.set(data);
  return out;
}

/** Splits `units` into at most `parts` contiguous ranges of nearly equal size. */
export function partition(units: number, parts: number): Part[] {
  const n = Math.max(1, Math.min(parts, units));
  return Array.from({ length: n }, (_, i) => ({
    begin: Math.floor((i * units) / n),
    end: Math.floor(((i + 1) * units) / n),
  }));
}

export async function dispatch(
  pool: Piscina,
  threads: number,
  thresholds: Thresholds,
  pass: Pass,
  task: KernelTask,
  signal?: AbortSignal,
  allocate: SharedAllocator = freshShared,
): Promise<KernelResult> {
  const elements = sizeOf(task.shape);
  const route = routeOf(elements, threads, thresholds);
  if (route === 'inline') return runKernel(pass, task);
  if (route === 'pool') {
    return (await pool.run(task, { name: pass, transferList: buffersOf(task), signal })) as KernelResult;
  }
  // Split: the tensors as big as x must be in shared memory with the computation's element
  // type; a safetensors body already is, a JSON body is copied once (rounding to float32 once).
  const tensors: KernelTask['tensors'] = {};
  for (const [name, data] of Object.entries(task.tensors)) {
    tensors[name] = data && data.length === elements ? shared(data, task.dtype, allocate) : data;
  }
  const sharedTask: KernelTask = { ...task, tensors };
  const output = sharedArray(task.dtype, elements, allocate);
  const parts = partition(unitsOf(pass, sharedTask), threads);
  const done = await Promise.all(
    parts.map(async (part) => {
      const job: PartTask = { pass, task: sharedTask, part, out: output };
      return { part, partials: await pool.run(job, { name: 'part', signal }) };
    }),
  );
  return finishParts(pass, sharedTask, done, output);
}
