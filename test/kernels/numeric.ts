/**
 * Small numeric helpers shared by the kernel tests: a seeded PRNG (so every
 * failing case can be replayed) and an elementwise closeness check that reports
 * the offending indices instead of a bare boolean.
 */

/** mulberry32: a tiny deterministic PRNG, uniform in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n standard-normal draws (Box–Muller) times `scale` plus `shift`. */
export function randn(rand: () => number, n: number, scale = 1, shift = 0): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const u = 1 - rand();
    const v = rand();
    out[i] = shift + scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

export interface Mismatch {
  index: number;
  actual: number;
  expected: number;
}

/**
 * Elements where |actual − expected| > atol + rtol·|expected| (NaN must meet NaN,
 * infinities must be equal). A length difference is reported at index −1.
 * Returns at most `limit` entries so that a failure message stays readable.
 */
export function mismatches(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
  atol: number,
  limit = 5,
): Mismatch[] {
  if (actual.length !== expected.length)
    return [{ index: -1, actual: actual.length, expected: expected.length }];
  const out: Mismatch[] = [];
  for (let i = 0; i < expected.length && out.length < limit; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    const ok = Number.isNaN(e)
      ? Number.isNaN(a)
      : Number.isFinite(e)
        ? Math.abs(a - e) <= atol + rtol * Math.abs(e)
        : a === e;
    if (!ok) out.push({ index: i, actual: a, expected: e });
  }
  return out;
}

export function maxAbs(values: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < values.length; i++) m = Math.max(m, Math.abs(values[i]!));
  return m;
}

export function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Central difference of f along one element of `target` (perturbed in place, then restored). */
export function central(f: () => number, target: Float64Array, i: number): number {
  const v = target[i]!;
  const h = 1e-6 * Math.max(1, Math.abs(v));
  target[i] = v + h;
  const up = f();
  target[i] = v - h;
  const down = f();
  target[i] = v;
  return (up - down) / (2 * h);
}
