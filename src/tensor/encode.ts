import type { DType, FloatArray, TensorForm } from './tensor.js';

/**
 * Writes tensors as JSON text directly, in one pass, without building nested
 * JS arrays first. Non-finite values travel as the strings "NaN", "Infinity"
 * and "-Infinity" (JSON has no literal for them and must never get `null`).
 *
 * float32 values are written with the fewest digits that round-trip to the
 * same float32 (0.1, not 0.10000000149011612); −0 keeps its sign.
 */
/** 10^k for k in [0, 22]: exactly representable, so scaling by them rounds once. */
const POW10 = Array.from({ length: 23 }, (_, k) => 10 ** k);

/**
 * The shortest decimal that reads back as the float32 `v`: the fewest significant
 * digits p whose rounding of v rounds back to v in float32.
 *
 * Rounding |v| to p digits is one scaling by an exact power of ten (10^0 … 10^22),
 * rounding, and scaling back: each step rounds once, so the result is the double
 * nearest that p-digit decimal, which String() prints as that decimal. Most computed
 * values need 7 to 9 digits, so 6 is tried first: if it fails, 7, 8 and 9 follow;
 * if it works, the shorter ones are tried from 1 up. Magnitudes whose scaling would
 * need an inexact power of ten (below 1e-14, from 1e23) take the toPrecision route.
 */
function roundDigits(a: number, k: number, p: number): number {
  const n = p - 1 - k;
  return n >= 0 ? Math.round(a * POW10[n]!) / POW10[n]! : Math.round(a / POW10[-n]!) * POW10[-n]!;
}

function shortestFloat32(v: number): string {
  const a = Math.abs(v);
  const k = Math.floor(Math.log10(a));
  if (k >= -14 && k <= 22) {
    let c = roundDigits(a, k, 6);
    if (Math.fround(c) === a) {
      for (let p = 1; p < 6; p++) {
        const shorter = roundDigits(a, k, p);
        if (Math.fround(shorter) === a) {
          c = shorter;
          break;
        }
      }
    } else {
      for (let p = 7; p <= 9 && Math.fround(c) !== a; p++) c = roundDigits(a, k, p);
    }
    if (Math.fround(c) === a) return String(v < 0 ? -c : c);
  }
  for (let p = 1; p < 9; p++) {
    const short = Number(v.toPrecision(p));
    if (Math.fround(short) === v) return String(short);
  }
  return String(Number(v.toPrecision(9)));
}

export function formatNumber(v: number, dtype: DType): string {
  if (Number.isNaN(v)) return '"NaN"';
  if (v === Number.POSITIVE_INFINITY) return '"Infinity"';
  if (v === Number.NEGATIVE_INFINITY) return '"-Infinity"';
  if (v === 0) return Object.is(v, -0) ? '-0' : '0';
  if (dtype === 'float64') return String(v);
  return shortestFloat32(v);
}

function flatNumbers(data: FloatArray, dtype: DType, start: number, end: number): string {
  // Appending builds a rope V8 flattens once; cheaper than an array of strings and a join.
  if (start === end) return '';
  let out = formatNumber(data[start]!, dtype);
  for (let i = start + 1; i < end; i++) out += `,${formatNumber(data[i]!, dtype)}`;
  return out;
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
