import { BinaryTensor, type DecodedTensor, MAX_RANK, NON_FINITE } from './tensor.js';

/**
 * Decodes one JSON tensor in a single tight pass over its numbers.
 *
 * Validating million-element arrays element by element through zod would cost
 * far more than the computation; the schema validates the envelope and calls
 * this for the numbers, reporting the first offending element by its path.
 */
export type PathSegment = string | number;

export interface DecodeIssue {
  path: PathSegment[];
  message: string;
}

export type DecodeResult = { ok: true; tensor: DecodedTensor } | { ok: false; issue: DecodeIssue };

const LEAF_EXPECTED =
  'expected a finite number (within float64 range) or one of the strings "NaN", "Infinity", "-Infinity"';

export interface DecodeLimits {
  /** Largest number of elements a tensor may hold. */
  maxElements: number;
}

export const DEFAULT_LIMITS: DecodeLimits = { maxElements: 1 << 27 };

export function decodeTensor(value: unknown, limits: DecodeLimits = DEFAULT_LIMITS): DecodeResult {
  if (value === undefined) return fail([], 'required');
  if (value instanceof BinaryTensor) return checkBinary(value);
  if (Array.isArray(value)) return decodeNested(value, limits);
  if (value !== null && typeof value === 'object') return decodeFlat(value as Record<string, unknown>);
  return fail(
    [],
    'expected a tensor: a nested array of numbers or an object {"shape": [...], "data": [...]}',
  );
}

function fail(path: PathSegment[], message: string): DecodeResult {
  return { ok: false, issue: { path, message } };
}

function leaf(v: unknown): number | undefined {
  // A literal beyond float64's range (1e400) parses as Infinity: non-finite values must be spelled out.
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v === 'string' && Object.hasOwn(NON_FINITE, v)) return NON_FINITE[v as keyof typeof NON_FINITE];
  return undefined;
}

function decodeNested(value: unknown[], limits: DecodeLimits): DecodeResult {
  const shape: number[] = [];
  let probe: unknown = value;
  while (Array.isArray(probe)) {
    if (shape.length === MAX_RANK) return fail([], `rank above ${MAX_RANK} is not supported`);
    if (probe.length === 0)
      return fail(
        shape.map(() => 0),
        'empty arrays are not allowed: every dimension must be ≥ 1',
      );
    shape.push(probe.length);
    probe = probe[0];
  }
  let size = 1;
  for (const d of shape) size *= d;
  if (size > limits.maxElements) {
    return fail([], `tensor has ${size} elements, more than the limit of ${limits.maxElements}`);
  }
  const data = new Float64Array(size);
  const path: number[] = [];
  let offset = 0;
  let issue: DecodeIssue | undefined;

  const walk = (node: unknown[], depth: number): boolean => {
    const expected = shape[depth]!;
    if (node.length !== expected) {
      issue = {
        path: [...path],
        message: `ragged array: expected ${expected} elements at this depth, got ${node.length}`,
      };
      return false;
    }
    if (depth === shape.length - 1) {
      for (let i = 0; i < expected; i++) {
        const v = leaf(node[i]);
        if (v === undefined) {
          issue = {
            path: [...path, i],
            message: Array.isArray(node[i]) ? 'ragged array: too deep' : LEAF_EXPECTED,
          };
          return false;
        }
        data[offset++] = v;
      }
      return true;
    }
    for (let i = 0; i < expected; i++) {
      const child = node[i];
      path.push(i);
      if (!Array.isArray(child)) {
        issue = {
          path: [...path],
          message: `ragged array: expected an array of ${shape[depth + 1]} elements`,
        };
        return false;
      }
      if (!walk(child, depth + 1)) return false;
      path.pop();
    }
    return true;
  };

  if (!walk(value, 0)) return { ok: false, issue: issue! };
  return { ok: true, tensor: { shape, data, form: 'nested' } };
}

function decodeFlat(value: Record<string, unknown>): DecodeResult {
  for (const key of Object.keys(value)) {
    if (key !== 'shape' && key !== 'data')
      return fail([key], 'unexpected key: a tensor object has only "shape" and "data"');
  }
  const { shape, data } = value;
  if (!Array.isArray(shape)) return fail(['shape'], 'expected an array of positive integers');
  if (shape.length === 0) return fail(['shape'], 'rank must be ≥ 1');
  if (shape.length > MAX_RANK) return fail(['shape'], `rank above ${MAX_RANK} is not supported`);
  let size = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i];
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 1) {
      return fail(['shape', i], 'expected a positive integer');
    }
    size *= d;
  }
  if (!Array.isArray(data)) return fail(['data'], 'expected a flat array of numbers');
  // The data array exists, so a shape that matches it needs no size limit of its own; a shape
  // that does not is named as such (not as too large).
  if (data.length !== size) {
    return fail(
      ['data'],
      `length ${data.length} does not match shape [${shape.join(', ')}] (${size} elements)`,
    );
  }
  const out = new Float64Array(size);
  for (let i = 0; i < size; i++) {
    const v = leaf(data[i]);
    if (v === undefined) return fail(['data', i], LEAF_EXPECTED);
    out[i] = v;
  }
  return { ok: true, tensor: { shape: shape as number[], data: out, form: 'flat' } };
}

function checkBinary(t: BinaryTensor): DecodeResult {
  if (t.shape.length === 0) return fail([], 'rank must be ≥ 1');
  if (t.shape.length > MAX_RANK) return fail([], `rank above ${MAX_RANK} is not supported`);
  if (t.shape.some((d) => d < 1))
    return fail([], 'empty dimensions are not allowed: every dimension must be ≥ 1');
  return { ok: true, tensor: { shape: t.shape, data: t.data, form: 'flat' } };
}
