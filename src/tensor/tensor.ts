/**
 * The service's in-memory tensor: a shape and a flat row-major buffer.
 *
 * `form` remembers how the request spelled `x` so that responses can mirror it
 * (nested arrays in, nested arrays out).
 */
export type FloatArray = Float32Array | Float64Array;
export type DType = 'float32' | 'float64';
export type TensorForm = 'nested' | 'flat';

export interface Tensor<A extends FloatArray = FloatArray> {
  shape: number[];
  data: A;
}

export interface DecodedTensor extends Tensor {
  form: TensorForm;
}

/**
 * A tensor that arrived already binary (safetensors): the schema takes it as is,
 * checking only its shape. Responses to it are flat JSON or safetensors.
 */
export class BinaryTensor {
  constructor(
    readonly shape: number[],
    readonly data: FloatArray,
  ) {}
}

/** Deepest rank a tensor may have; keeps recursion over nested arrays shallow. */
export const MAX_RANK = 8;

export const NON_FINITE = {
  NaN: Number.NaN,
  Infinity: Number.POSITIVE_INFINITY,
  '-Infinity': Number.NEGATIVE_INFINITY,
} as const;

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

export function allocate(dtype: DType, length: number): FloatArray {
  return dtype === 'float32' ? new Float32Array(length) : new Float64Array(length);
}
