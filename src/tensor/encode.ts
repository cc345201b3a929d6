import type { DType, FloatArray, TensorForm } from './tensor.js';

/**
 * Writes tensors as JSON text directly, in one pass, without building nested
 * JS arrays first. Non-finite values travel as the strings "NaN", "Infinity"
 * and "-Infinity" (JSON has no literal for them and must never get `null`).
 *
 * float32 values are written with the fewest digits that round-trip to the
 * same float32 (0.1, not 0.10000000149011612); −0 keeps its sign.
 */
export function formatNumber(v: number, dtype: DType): string {
  if (Number.isNaN(v)) return '"NaN"';
  if (v === Number.POSITIVE_INFINITY) return '"Infinity"';
  if (v === Number.NEGATIVE_INFINITY) return '"-Infinity"';
  if (v === 0) return Object.is(v, -0) ? '-0' : '0';
  if (dtype === 'float64') return String(v);
  // Normal float32 values never round-trip with fewer than 6 digits tried first; subnormals may need 1.
  for (let p = Math.abs(v) < 2 ** -126 ? 1 : 6; p < 9; p++) {
    const short = Number(v.toPrecision(p));
    if (Math.fround(short) === v) return String(short);
  }
  return String(Number(v.toPrecision(9)));
}

function flatNumbers(data: FloatArray, dtype: DType, start: number, end: number): string {
  const parts = new Array<string>(end - start);
  for (let i = start; i < end; i++) parts[i - start] = formatNumber(data[i]!, dtype);
  return parts.join(',');
}

function nested(shape: readonly number[], data: FloatArray, dtype: DType): string {
  const rank = shape.length;
  const inner = shape[rank - 1]!;
  if (rank === 1) return `[${flatNumbers(data, dtype, 0, inner)}]`;
  const rec = (depth: number, offset: number, stride: number): string => {
    if (depth === rank - 1) return `[${flatNumbers(data, dtype, offset, offset + inner)}]`;
    const n = shape[depth]!;
    const sub = stride / n;
    const parts = new Array<string>(n);
    for (let i = 0; i < n; i++) parts[i] = rec(depth + 1, offset + i * sub, sub);
    return `[${parts.join(',')}]`;
  };
  return rec(0, 0, data.length);
}

export function encodeTensor(
  shape: readonly number[],
  data: FloatArray,
  dtype: DType,
  form: TensorForm,
): string {
  if (form === 'nested') return nested(shape, data, dtype);
  return `{"shape":${JSON.stringify(shape)},"data":[${flatNumbers(data, dtype, 0, data.length)}]}`;
}

export type JsonField =
  | { kind: 'tensor'; shape: readonly number[]; data: FloatArray }
  | { kind: 'scalar'; value: number | string | boolean | null };

/** Serializes a response object whose tensor fields are written by {@link encodeTensor}. */
export function encodeResponse(fields: Record<string, JsonField>, dtype: DType, form: TensorForm): string {
  const parts: string[] = [];
  for (const [key, field] of Object.entries(fields)) {
    const value =
      field.kind === 'tensor'
        ? encodeTensor(field.shape, field.data, dtype, form)
        : JSON.stringify(field.value);
    parts.push(`${JSON.stringify(key)}:${value}`);
  }
  return `{${parts.join(',')}}`;
}
