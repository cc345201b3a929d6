import type { DType, FloatArray, Tensor } from '../tensor/tensor.js';

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
