import { allocate, type DType, type FloatArray, sizeOf, type Tensor } from '../tensor/tensor.js';

/**
 * What the event loop sends a worker: the validated request's tensors as flat
 * float64 buffers (moved, not copied) and its scalar parameters. Every shape
 * has been checked before a task is made; kernels trust them.
 */
export interface KernelTask<P = Record<string, unknown>> {
  op: string;
  dtype: DType;
  /** Shape of x. */
  shape: number[];
  tensors: Record<string, FloatArray | undefined>;
  params: P;
}

export interface KernelResult {
  tensors: Record<string, Tensor>;
  scalars: Record<string, number>;
}

export interface OpKernels<P = never> {
  forward(task: KernelTask<P>): KernelResult;
  backward(task: KernelTask<P>): KernelResult;
}

/** The computation's element type: float32 rounds the inputs once, as a float32 framework would. */
export function cast(data: FloatArray, dtype: DType): FloatArray {
  if (dtype === 'float32') return data instanceof Float32Array ? data : Float32Array.from(data);
  return data instanceof Float64Array ? data : Float64Array.from(data);
}

export function castOptional(data: FloatArray | undefined, dtype: DType): FloatArray | null {
  return data === undefined ? null : cast(data, dtype);
}

/** Parameters and statistics as float64 (after rounding to the element type), so kernels see one array kind. */
export function f64(data: FloatArray): Float64Array {
  return data instanceof Float64Array ? data : Float64Array.from(data);
}

export function f64Optional(data: FloatArray | undefined, dtype: DType): Float64Array | null {
  return data === undefined ? null : f64(cast(data, dtype));
}

/**
 * A request's work split into parts, so one large request can use every worker:
 * `units` independent pieces (groups, channels or rows); a part is a range of them.
 * `forwardPart`/`backwardPart` run in workers and write their share of y or dx into
 * a buffer all parts share; they return small float64 partials (statistics of their
 * units, partial sums of parameter gradients) that `finish*` merges on the caller's thread.
 */
export interface Part {
  begin: number;
  end: number;
}

export type Partials = Record<string, Float64Array>;

export interface PartDone {
  part: Part;
  partials: Partials;
}

export interface SplitKernels<P = never> {
  units(task: KernelTask<P>, pass: 'forward' | 'backward'): number;
  forwardPart(task: KernelTask<P>, part: Part, y: FloatArray): Partials;
  finishForward(task: KernelTask<P>, done: PartDone[], y: FloatArray): KernelResult;
  backwardPart(task: KernelTask<P>, part: Part, dx: FloatArray): Partials;
  finishBackward(task: KernelTask<P>, done: PartDone[], dx: FloatArray): KernelResult;
}

/** The op run whole: one part over every unit, then its finish. */
export function whole<P>(k: SplitKernels<P>): OpKernels<P> & SplitKernels<P> {
  return {
    ...k,
    forward(task) {
      const y = allocate(task.dtype, sizeOf(task.shape));
      const part = { begin: 0, end: k.units(task, 'forward') };
      return k.finishForward(task, [{ part, partials: k.forwardPart(task, part, y) }], y);
    },
    backward(task) {
      const dx = allocate(task.dtype, sizeOf(task.shape));
      const part = { begin: 0, end: k.units(task, 'backward') };
      return k.finishBackward(task, [{ part, partials: k.backwardPart(task, part, dx) }], dx);
    },
  };
}

/** Values of units [begin, end) from each part, into one array. */
export function gather(done: PartDone[], name: string, length: number): Float64Array {
  const out = new Float64Array(length);
  for (const { part, partials } of done) out.set(partials[name]!.subarray(part.begin, part.end), part.begin);
  return out;
}

/** Elementwise sum of each part's partial sums. */
export function sum(done: PartDone[], name: string): Float64Array {
  const out = new Float64Array(done[0]!.partials[name]!.length);
  for (const { partials } of done) {
    const p = partials[name]!;
    for (let i = 0; i < out.length; i++) out[i]! += p[i]!;
  }
  return out;
}

/**
 * Kernels built twice, once per element type: each copy only ever sees one kind of
 * typed array, so V8 keeps its element accesses monomorphic (one shared copy fed both
 * Float32Array and Float64Array ran float64 batch norm 64 ms instead of 45).
 */
export function perElementType<K>(create: () => K): (x: FloatArray) => K {
  const f32 = create();
  const f64 = create();
  return (x) => (x instanceof Float32Array ? f32 : f64);
}
