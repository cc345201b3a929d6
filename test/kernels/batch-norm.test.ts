import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { batchNorm } from '../../src/kernels/batch-norm.js';
import type { KernelResult } from '../../src/kernels/task.js';
import type { DType } from '../../src/tensor/tensor.js';
import { maxAbs, mismatches, product, randn, rng } from './numeric.js';

type Task = Parameters<typeof batchNorm.forward>[0];

interface GoldenCase {
  name: string;
  shape: number[];
  dtype: DType;
  eps: number;
  correction: number;
  training: boolean;
  momentum: number | null;
  numBatchesTracked: number;
  inputs: Record<'x' | 'dy', number[]> &
    Partial<Record<'gamma' | 'beta' | 'runningMean' | 'runningVar', number[]>>;
  expected: {
    forward: Record<string, number[] | number>;
    backward: Record<'dx' | 'dgamma' | 'dbeta', number[]>;
  };
}

const fixture = JSON.parse(readFileSync(new URL('../fixtures/batch_norm.json', import.meta.url), 'utf8')) as {
  generatedBy: string;
  cases: GoldenCase[];
};

/** float64: both paths are float64 end to end; float32: torch computed in float32 (see make_goldens.py). */
const TOL: Record<DType, { rtol: number; atol: number }> = {
  float64: { rtol: 1e-10, atol: 1e-10 },
  float32: { rtol: 1e-5, atol: 1e-5 },
};

interface Opts {
  dtype?: DType;
  eps?: number;
  correction?: number;
  training?: boolean;
  momentum?: number | null;
  numBatchesTracked?: number;
}

function makeTask(
  shape: number[],
  tensors: Record<string, ArrayLike<number> | undefined>,
  o: Opts = {},
): Task {
  const t: Record<string, Float64Array | undefined> = {};
  for (const [k, v] of Object.entries(tensors)) if (v !== undefined) t[k] = Float64Array.from(v);
  return {
    op: 'batch_norm',
    dtype: o.dtype ?? 'float64',
    shape,
    tensors: t,
    params: {
      eps: o.eps ?? 1e-5,
      correction: o.correction ?? 1,
      training: o.training ?? true,
      momentum: o.momentum === undefined ? 0.1 : o.momentum,
      numBatchesTracked: o.numBatchesTracked ?? 0,
    },
  };
}

function goldenTask(
  c: GoldenCase,
  pass: 'forward' | 'backward',
  extra: Record<string, ArrayLike<number>> = {},
) {
  const { x, dy, gamma, beta, runningMean, runningVar } = c.inputs;
  const tensors =
    pass === 'forward'
      ? { x, gamma, beta, runningMean, runningVar }
      : { x, dy, gamma, runningMean, runningVar };
  return makeTask(c.shape, { ...tensors, ...extra }, c);
}

function data(r: KernelResult, name: string) {
  const t = r.tensors[name];
  if (!t) throw new Error(`result has no tensor ${name}`);
  return t.data;
}

/** Asserts the result tensor's element type, shape and values. */
function expectTensor(r: KernelResult, name: string, shape: number[], expected: number[], dtype: DType) {
  const t = r.tensors[name];
  expect(t, name).toBeDefined();
  expect(t!.shape, `${name} shape`).toEqual(shape);
  expect(t!.data, `${name} element type`).toBeInstanceOf(dtype === 'float32' ? Float32Array : Float64Array);
  const { rtol, atol } = TOL[dtype];
  expect(mismatches(t!.data, expected, rtol, atol), name).toEqual([]);
}

describe('batch_norm against PyTorch goldens', () => {
  it('has the fixture written by make_goldens.py', () => {
    expect(fixture.generatedBy).toMatch(/make_goldens\.py \(torch /);
    expect(fixture.cases.length).toBeGreaterThanOrEqual(39);
    const ranks = new Set(fixture.cases.map((c) => c.shape.length));
    expect([...ranks].sort()).toEqual([2, 3, 4, 5]);
  });

  for (const c of fixture.cases) {
    const C = c.shape[1]!;
    const exp = c.expected;
    describe(c.name, () => {
      it('forward', () => {
        const r = batchNorm.forward(goldenTask(c, 'forward'));
        expectTensor(r, 'y', c.shape, exp.forward.y as number[], c.dtype);
        const statNames = ['mean', 'var', 'invstd', 'runningMean', 'runningVar'].filter(
          (k) => k in exp.forward,
        );
        expect(Object.keys(r.tensors).sort()).toEqual(['y', ...statNames].sort());
        for (const k of statNames) expectTensor(r, k, [C], exp.forward[k] as number[], c.dtype);
        if ('numBatchesTracked' in exp.forward) {
          expect(r.scalars.numBatchesTracked).toBe(exp.forward.numBatchesTracked);
        } else {
          expect(r.scalars.numBatchesTracked).toBeUndefined();
        }
      });

      it('backward (statistics recomputed from x)', () => {
        const r = batchNorm.backward(goldenTask(c, 'backward'));
        expectTensor(r, 'dx', c.shape, exp.backward.dx, c.dtype);
        expectTensor(r, 'dgamma', [C], exp.backward.dgamma, c.dtype);
        expectTensor(r, 'dbeta', [C], exp.backward.dbeta, c.dtype);
      });

      if (c.training) {
        it('backward with the saved mean/invstd of forward equals the recomputed path', () => {
          const fwd = batchNorm.forward(goldenTask(c, 'forward'));
          const saved = { mean: data(fwd, 'mean'), invstd: data(fwd, 'invstd') };
          const withSaved = batchNorm.backward(goldenTask(c, 'backward', saved));
          const recomputed = batchNorm.backward(goldenTask(c, 'backward'));
          for (const k of ['dx', 'dgamma', 'dbeta']) {
            if (c.dtype === 'float64') {
              // The same statistics; the recomputing path sums about each chunk's mean in the
              // same sweep, so the gradients may differ in the last bits only.
              expect(mismatches(data(withSaved, k), data(recomputed, k), 1e-13, 1e-15), k).toEqual([]);
            } else {
              // float32 responses round mean/invstd to float32 before they come back.
              const { rtol, atol } = TOL.float32;
              expect(mismatches(data(withSaved, k), data(recomputed, k), rtol, atol), k).toEqual([]);
            }
          }
        });

        it("backward with PyTorch's mean/invstd as saved statistics", () => {
          const saved = { mean: exp.forward.mean as number[], invstd: exp.forward.invstd as number[] };
          const r = batchNorm.backward(goldenTask(c, 'backward', saved));
          expectTensor(r, 'dx', c.shape, exp.backward.dx, c.dtype);
          expectTensor(r, 'dgamma', [C], exp.backward.dgamma, c.dtype);
          expectTensor(r, 'dbeta', [C], exp.backward.dbeta, c.dtype);
        });
      }
    });
  }
});

/** Independent float64 reference for one channel: two passes, written out plainly. */
function channelRef(x: ArrayLike<number>, shape: number[], c: number, correction: number) {
  const [N, C] = [shape[0]!, shape[1]!];
  const inner = product(shape.slice(2));
  const vals: number[] = [];
  for (let n = 0; n < N; n++) for (let i = 0; i < inner; i++) vals.push(x[(n * C + c) * inner + i]!);
  const mean = vals.reduce((a, b) => a + b, 0) / vals.length;
  const m2 = vals.reduce((a, v) => a + (v - mean) ** 2, 0);
  return { mean, var: m2 / (vals.length - correction), m: vals.length };
}

/** Indices of channel c in a row-major [N, C, inner] buffer. */
function channelIndices(shape: number[], c: number): number[] {
  const [N, C] = [shape[0]!, shape[1]!];
  const inner = product(shape.slice(2));
  const out: number[] = [];
  for (let n = 0; n < N; n++) for (let i = 0; i < inner; i++) out.push((n * C + c) * inner + i);
  return out;
}

describe('batch_norm hand-checkable values', () => {
  const x = [1, 2, 3, 4];
  const shape = [4, 1];

  it('x = [[1], [2], [3], [4]], correction 1: mean 2.5, var 5/3, y[0] ≈ −1.161892 (the doc comment example)', () => {
    const r = batchNorm.forward(makeTask(shape, { x }, { correction: 1, eps: 1e-5 }));
    expect(data(r, 'mean')[0]).toBe(2.5);
    expect(data(r, 'var')[0]).toBeCloseTo(5 / 3, 15);
    expect(data(r, 'invstd')[0]).toBeCloseTo(0.774594, 6);
    // −1.5·invstd = −1.1618915…
    expect(data(r, 'y')[0]).toBeCloseTo(-1.161892, 6);
    // y is antisymmetric around the mean.
    const y = Array.from(data(r, 'y'));
    expect(y[0]! + y[3]!).toBeCloseTo(0, 15);
    expect(y[1]! + y[2]!).toBeCloseTo(0, 15);
  });

  it('same x, correction 0: var 1.25 (PyTorch), correction 2: var 2.5', () => {
    const r0 = batchNorm.forward(makeTask(shape, { x }, { correction: 0 }));
    expect(data(r0, 'var')[0]).toBe(1.25);
    const r2 = batchNorm.forward(makeTask(shape, { x }, { correction: 2 }));
    expect(data(r2, 'var')[0]).toBe(2.5);
  });

  it('backward by hand: dy = [1, 0, 0, 0], correction 1, eps → 0 gives dx = sqrt(3/5)·[0.3, −0.4, −0.1, 0.2]', () => {
    // x̂ = v·s with v = x − 2.5, s² = 3/5; dgamma = x̂₀ = −1.5·s; dbeta = 1;
    // dx = s·(dy − 1/4 − x̂·dgamma/3) = s·([1,0,0,0] − 0.25 − [0.45, 0.15, −0.15, −0.45]).
    const s = Math.sqrt(3 / 5);
    const r = batchNorm.backward(makeTask(shape, { x, dy: [1, 0, 0, 0] }, { correction: 1, eps: 1e-14 }));
    expect(mismatches(data(r, 'dx'), [0.3 * s, -0.4 * s, -0.1 * s, 0.2 * s], 1e-12, 1e-12)).toEqual([]);
    expect(data(r, 'dgamma')[0]).toBeCloseTo(-1.5 * s, 12);
    expect(data(r, 'dbeta')[0]).toBe(1);
  });

  it('running statistics by hand: momentum 0.1 and null (numBatchesTracked 4 → factor 1/5)', () => {
    const running = { x, runningMean: [0], runningVar: [1] };
    // The running variance is the unbiased one (5/3) even with correction 0.
    const r = batchNorm.forward(makeTask(shape, running, { correction: 0, momentum: 0.1 }));
    expect(data(r, 'runningMean')[0]).toBeCloseTo(0.25, 15);
    expect(data(r, 'runningVar')[0]).toBeCloseTo(0.9 + 0.1 * (5 / 3), 15);
    expect(r.scalars.numBatchesTracked).toBe(1);
    const rc = batchNorm.forward(
      makeTask(shape, running, { correction: 0, momentum: null, numBatchesTracked: 4 }),
    );
    expect(data(rc, 'runningMean')[0]).toBeCloseTo(0.5, 15);
    expect(data(rc, 'runningVar')[0]).toBeCloseTo(0.8 + 0.2 * (5 / 3), 15);
    expect(rc.scalars.numBatchesTracked).toBe(5);
  });

  it('eval mode by hand: y = gamma·(x − rm)/sqrt(rv + eps) + beta, dx = dy·gamma/sqrt(rv + eps)', () => {
    const t = { x, dy: [1, 1, 1, 1], gamma: [2], beta: [0.5], runningMean: [1], runningVar: [4] };
    const f = batchNorm.forward(makeTask(shape, t, { training: false, eps: 1e-12 }));
    expect(mismatches(data(f, 'y'), [0.5, 1.5, 2.5, 3.5], 1e-12, 1e-12)).toEqual([]);
    const b = batchNorm.backward(makeTask(shape, t, { training: false, eps: 1e-12 }));
    expect(mismatches(data(b, 'dx'), [1, 1, 1, 1], 1e-12, 1e-12)).toEqual([]);
    expect(data(b, 'dbeta')[0]).toBe(4);
    // x̂ = (x − 1)/2 = [0, 0.5, 1, 1.5]
    expect(data(b, 'dgamma')[0]).toBeCloseTo(3, 12);
  });
});

describe('batch_norm invariants', () => {
  it('without affine, each channel of y has mean 0 and Σ y²/(m − correction) = var/(var + eps)', () => {
    const shapeArb = fc.tuple(
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 3 }),
      fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 3 }),
    );
    fc.assert(
      fc.property(
        shapeArb,
        fc.constantFrom(0, 1, 2),
        fc.integer(),
        fc.constantFrom(1e-5, 1e-2),
        ([N, C, spatial], correction, seed, eps) => {
          const shape = [N, C, ...spatial];
          const m = N * product(spatial);
          fc.pre(m > correction + 1);
          const x = randn(rng(seed), product(shape), 3, 10);
          const r = batchNorm.forward(makeTask(shape, { x }, { correction, eps }));
          const y = data(r, 'y');
          const v = data(r, 'var');
          for (let c = 0; c < C; c++) {
            const idx = channelIndices(shape, c);
            const mean = idx.reduce((a, i) => a + y[i]!, 0) / m;
            const ss = idx.reduce((a, i) => a + y[i]! ** 2, 0) / (m - correction);
            expect(Math.abs(mean)).toBeLessThan(1e-12);
            expect(ss).toBeCloseTo(v[c]! / (v[c]! + eps), 12);
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('training backward: Σ dx = 0 per channel, and dx ⟂ x̂ when eps → 0 (any correction)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 6 }),
        fc.constantFrom(0, 1, 2),
        fc.integer(),
        (N, correction, seed) => {
          const shape = [N, 2, 3];
          const rand = rng(seed);
          const x = randn(rand, product(shape));
          const dy = randn(rand, product(shape));
          const gamma = randn(rand, 2, 1, 1);
          const r = batchNorm.backward(makeTask(shape, { x, dy, gamma }, { correction, eps: 1e-300 }));
          const f = batchNorm.forward(makeTask(shape, { x }, { correction, eps: 1e-300 }));
          const dx = data(r, 'dx');
          const xhat = data(f, 'y');
          for (let c = 0; c < 2; c++) {
            const idx = channelIndices(shape, c);
            const scale = maxAbs(idx.map((i) => dx[i]!)) + 1;
            expect(Math.abs(idx.reduce((a, i) => a + dx[i]!, 0))).toBeLessThan(1e-12 * scale);
            expect(Math.abs(idx.reduce((a, i) => a + dx[i]! * xhat[i]!, 0))).toBeLessThan(1e-11 * scale);
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe('batch_norm degenerate and hostile inputs', () => {
  it('values far from zero: 1e9 + noise (std 0.5) gives the y, var and gradients of the noise alone', () => {
    const shape = [40, 2, 3];
    const rand = rng(7);
    // noise = (1e9 + n) − 1e9 exactly (Sterbenz), so both tensors hold the same deviations.
    const far = randn(rand, product(shape), 0.5).map((n) => 1e9 + n);
    const noise = far.map((v) => v - 1e9);
    const dy = randn(rand, product(shape));
    const gamma = [1.5, -0.7];
    const beta = [0.25, 2];
    const o = { correction: 1 };
    const rf = batchNorm.forward(makeTask(shape, { x: far, gamma, beta }, o));
    const rn = batchNorm.forward(makeTask(shape, { x: noise, gamma, beta }, o));
    expect(mismatches(data(rf, 'y'), data(rn, 'y'), 0, 1e-6)).toEqual([]);
    expect(mismatches(data(rf, 'var'), data(rn, 'var'), 1e-8, 0)).toEqual([]);
    for (let c = 0; c < 2; c++) {
      expect(Math.abs(data(rf, 'mean')[c]! - (1e9 + data(rn, 'mean')[c]!))).toBeLessThanOrEqual(2 ** -23);
    }
    const bf = batchNorm.backward(makeTask(shape, { x: far, dy, gamma }, o));
    const bn = batchNorm.backward(makeTask(shape, { x: noise, dy, gamma }, o));
    for (const k of ['dx', 'dgamma', 'dbeta']) {
      expect(mismatches(data(bf, k), data(bn, k), 0, 1e-6 * (1 + maxAbs(data(bn, k)))), k).toEqual([]);
    }
  });

  it('values far from zero: 1e9 + noise (std 1e-3), y within one rounding of the float64 mean', () => {
    // Near 1e9 float64 values are 2^-23 ≈ 1.2e-7 apart, 1.2e-4 of this noise's std: the mean
    // itself is a float64 near 1e9, so y can be off by (ulp/2)·invstd·|gamma| at best. A naive
    // E[x²] − E[x]² is off by ~100 in var here (x² ≈ 1e18 has an ulp of 128).
    const shape = [100, 2];
    const rand = rng(11);
    const far = randn(rand, product(shape), 1e-3).map((n) => 1e9 + n);
    const noise = far.map((v) => v - 1e9);
    const rf = batchNorm.forward(makeTask(shape, { x: far }, { correction: 0 }));
    const rn = batchNorm.forward(makeTask(shape, { x: noise }, { correction: 0 }));
    const ref0 = channelRef(noise, shape, 0, 0);
    expect(mismatches(data(rf, 'var'), data(rn, 'var'), 1e-8, 0)).toEqual([]);
    expect(data(rn, 'var')[0]).toBeCloseTo(ref0.var, 15);
    const tol = 2 ** -23 * maxAbs(data(rn, 'invstd'));
    expect(mismatches(data(rf, 'y'), data(rn, 'y'), 0, tol)).toEqual([]);
  });

  it('a constant channel has var exactly 0, mean exactly the constant and y exactly beta', () => {
    for (const value of [0.1, 1 / 3, -7.25, 1e9 + 0.1, 1e-300, 123456.789]) {
      for (const N of [2, 3, 7, 1000]) {
        const shape = [N, 2];
        const x = new Float64Array(2 * N);
        const rand = rng(N);
        for (let n = 0; n < N; n++) {
          x[2 * n] = value;
          x[2 * n + 1] = rand();
        }
        const beta = [0.375, -1];
        for (const dtype of ['float64', 'float32'] as const) {
          const r = batchNorm.forward(makeTask(shape, { x, gamma: [3, 1], beta }, { dtype, correction: 1 }));
          const label = `${dtype} value ${value} N ${N}`;
          expect(data(r, 'var')[0], label).toBe(0);
          expect(data(r, 'mean')[0], label).toBe(dtype === 'float32' ? Math.fround(value) : value);
          expect(data(r, 'invstd')[0], label).toBe(
            dtype === 'float32' ? Math.fround(1 / Math.sqrt(1e-5)) : 1 / Math.sqrt(1e-5),
          );
          const y = data(r, 'y');
          for (let n = 0; n < N; n++) expect(y[2 * n], label).toBe(0.375);
          // dx of a constant channel: gamma·invstd·(dy − mean(dy)), finite.
          const dy = randn(rand, 2 * N);
          const b = batchNorm.backward(makeTask(shape, { x, dy, gamma: [3, 1] }, { dtype, correction: 1 }));
          expect(b.tensors.dx!.data.every(Number.isFinite), label).toBe(true);
        }
      }
    }
  });

  it('one value per channel with correction 0: var 0, y = beta exactly, dx = 0, dbeta = dy', () => {
    for (const shape of [
      [1, 3],
      [1, 3, 1, 1],
      [1, 3, 1, 1, 1],
    ]) {
      const x = [5, -1e6, 0.3];
      const dy = [0.5, -2, 7];
      const beta = [1, 2, -3];
      const r = batchNorm.forward(makeTask(shape, { x, gamma: [2, 3, 4], beta }, { correction: 0 }));
      expect(Array.from(data(r, 'y'))).toEqual(beta);
      expect(Array.from(data(r, 'mean'))).toEqual(x);
      expect(Array.from(data(r, 'var'))).toEqual([0, 0, 0]);
      const noAffine = batchNorm.forward(makeTask(shape, { x }, { correction: 0 }));
      expect(Array.from(data(noAffine, 'y')).map(Math.abs)).toEqual([0, 0, 0]);
      const b = batchNorm.backward(makeTask(shape, { x, dy, gamma: [2, 3, 4] }, { correction: 0 }));
      expect(Array.from(data(b, 'dx')).map(Math.abs)).toEqual([0, 0, 0]);
      expect(Array.from(data(b, 'dgamma')).map(Math.abs)).toEqual([0, 0, 0]);
      expect(Array.from(data(b, 'dbeta'))).toEqual(dy);
    }
  });

  it('float32 values whose squares overflow float32 (±3e20): finite, correct y and invstd', () => {
    const shape = [6, 2];
    const big = [3e20, -3e20, 3e20, -3e20, 1e20, -2e20];
    const small = [0.5, -1, 2, 0.25, -0.75, 1.5];
    const x = big.flatMap((v, i) => [v, small[i]!]);
    const gamma = [1.5, 1];
    const beta = [-0.5, 0];
    const r = batchNorm.forward(makeTask(shape, { x, gamma, beta }, { dtype: 'float32', correction: 1 }));
    const ref = channelRef(x.map(Math.fround), shape, 0, 1);
    const invstd = 1 / Math.sqrt(ref.var + 1e-5);
    const y = data(r, 'y');
    const expectedY = big.map((v) => Math.fround(1.5 * (Math.fround(v) - ref.mean) * invstd - 0.5));
    const y0 = channelIndices(shape, 0).map((i) => y[i]!);
    expect(y0.every(Number.isFinite)).toBe(true);
    expect(mismatches(y0, expectedY, 1e-6, 1e-6)).toEqual([]);
    expect(mismatches([data(r, 'invstd')[0]!], [invstd], 1e-6, 0)).toEqual([]);
    expect(mismatches([data(r, 'mean')[0]!], [ref.mean], 1e-6, 0)).toEqual([]);
    // var ≈ 9.6e40 itself exceeds float32's range (3.4e38): it is returned as +Infinity, honestly rounded.
    expect(data(r, 'var')[0]).toBe(Number.POSITIVE_INFINITY);
    const dy = small.flatMap((v) => [v, -v]);
    const b = batchNorm.backward(makeTask(shape, { x, dy, gamma }, { dtype: 'float32', correction: 1 }));
    expect(b.tensors.dx!.data.every(Number.isFinite)).toBe(true);
    // Batch norm is scale-invariant: x → x/k (eps → eps/k²) leaves x̂, dgamma, dbeta alone and scales dx by k.
    const k = 1e20;
    const scaled = x.map((v, i) => (i % 2 === 0 ? Math.fround(v) / k : v));
    const s = batchNorm.backward(
      makeTask(shape, { x: scaled, dy, gamma }, { correction: 1, eps: 1e-5 / k ** 2 }),
    );
    const ch0 = channelIndices(shape, 0);
    const dxBig = ch0.map((i) => data(b, 'dx')[i]! * k);
    const dxScaled = ch0.map((i) => data(s, 'dx')[i]!);
    expect(mismatches(dxBig, dxScaled, 1e-5, 1e-5 * maxAbs(dxScaled))).toEqual([]);
    expect(mismatches([data(b, 'dgamma')[0]!], [data(s, 'dgamma')[0]!], 1e-5, 1e-6)).toEqual([]);
    expect(data(b, 'dbeta')[0]).toBe(Math.fround(data(s, 'dbeta')[0]!));
  });

  it('float32: a few values of 2e19 among zeros (squares overflow float32, var does not) give the right var', () => {
    const shape = [1000, 1];
    const x = new Float64Array(1000);
    x[0] = 2e19;
    x[500] = -2e19;
    x[999] = 2e19;
    const r = batchNorm.forward(makeTask(shape, { x }, { dtype: 'float32', correction: 1 }));
    const ref = channelRef(Float32Array.from(x), shape, 0, 1);
    expect(Number.isFinite(data(r, 'var')[0]!)).toBe(true);
    expect(mismatches(data(r, 'var'), [ref.var], 1e-6, 0)).toEqual([]);
    expect(mismatches(data(r, 'mean'), [ref.mean], 1e-6, 0)).toEqual([]);
  });

  it('NaN in one channel makes that channel NaN and leaves the others untouched', () => {
    const shape = [4, 3, 2];
    const rand = rng(3);
    const x = randn(rand, product(shape));
    const dy = randn(rand, product(shape));
    const gamma = [1, 2, 3];
    const beta = [0.5, 0.5, 0.5];
    const clean = {
      f: batchNorm.forward(makeTask(shape, { x, gamma, beta })),
      b: batchNorm.backward(makeTask(shape, { x, dy, gamma })),
    };
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const xBad = Float64Array.from(x);
      xBad[(2 * 3 + 1) * 2 + 1] = bad; // n = 2, c = 1
      const f = batchNorm.forward(makeTask(shape, { x: xBad, gamma, beta }));
      const b = batchNorm.backward(makeTask(shape, { x: xBad, dy, gamma }));
      for (const [r, k] of [
        [f, 'y'],
        [b, 'dx'],
      ] as const) {
        const ref = data(k === 'y' ? clean.f : clean.b, k);
        const out = data(r, k);
        for (const c of [0, 2])
          for (const i of channelIndices(shape, c)) expect(out[i], `${bad} ${k}[${i}]`).toBe(ref[i]);
        for (const i of channelIndices(shape, 1)) expect(out[i], `${bad} ${k}[${i}]`).toBeNaN();
      }
      // The mean of a channel holding ±Infinity is ±Infinity (Σ x / m, as PyTorch); var and invstd are NaN.
      expect(data(f, 'mean')[1], `${bad} mean`).toBe(Number.isNaN(bad) ? Number.NaN : bad);
      for (const k of ['var', 'invstd']) expect(data(f, k)[1], `${bad} ${k}`).toBeNaN();
      for (const k of ['mean', 'var', 'invstd']) {
        for (const c of [0, 2]) expect(data(f, k)[c]).toBe(data(clean.f, k)[c]);
      }
      expect(data(b, 'dgamma')[1]).toBeNaN();
      // dbeta = Σ dy does not involve x at all.
      expect(Array.from(data(b, 'dbeta'))).toEqual(Array.from(data(clean.b, 'dbeta')));
      for (const c of [0, 2]) expect(data(b, 'dgamma')[c]).toBe(data(clean.b, 'dgamma')[c]);
    }
  });

  it('float32 rounds the inputs once: unrounded and pre-rounded inputs give identical float32 results', () => {
    const shape = [5, 2, 3];
    const rand = rng(5);
    const x = randn(rand, product(shape), 2, 1);
    const dy = randn(rand, product(shape));
    const gamma = [0.1, 0.7];
    const beta = [0.3, -0.2];
    const rounded = (a: ArrayLike<number>) => Array.from(a, Math.fround);
    for (const pass of ['forward', 'backward'] as const) {
      const a = batchNorm[pass](makeTask(shape, { x, dy, gamma, beta }, { dtype: 'float32' }));
      const b = batchNorm[pass](
        makeTask(
          shape,
          { x: rounded(x), dy: rounded(dy), gamma: rounded(gamma), beta: rounded(beta) },
          { dtype: 'float32' },
        ),
      );
      for (const [k, t] of Object.entries(a.tensors)) {
        expect(t.data, k).toBeInstanceOf(Float32Array);
        expect(Array.from(t.data), k).toEqual(Array.from(b.tensors[k]!.data));
      }
    }
  });

  it('eval mode ignores saved mean/invstd and uses the running statistics', () => {
    const shape = [3, 2];
    const t = { x: [1, 2, 3, 4, 5, 6], dy: [1, 1, 1, 1, 1, 1], runningMean: [0, 1], runningVar: [1, 4] };
    const plain = batchNorm.backward(makeTask(shape, t, { training: false }));
    const withSaved = batchNorm.backward(
      makeTask(shape, { ...t, mean: [100, 100], invstd: [100, 100] }, { training: false }),
    );
    expect(Array.from(data(withSaved, 'dx'))).toEqual(Array.from(data(plain, 'dx')));
    expect(Array.from(data(withSaved, 'dgamma'))).toEqual(Array.from(data(plain, 'dgamma')));
  });
});

describe('means near the top of float64', () => {
  it('a constant channel of 1e308 has mean 1e308 and y = beta exactly (the sum would overflow)', () => {
    for (const shape of [
      [2, 1],
      [2, 1, 20],
    ]) {
      const n = shape.reduce((a, b) => a * b, 1);
      const x = new Float64Array(n).fill(1e308);
      const r = batchNorm.forward({
        op: 'batch_norm',
        dtype: 'float64',
        shape,
        tensors: { x, beta: Float64Array.of(0.5) },
        params: { eps: 1e-5, correction: 0, training: true, momentum: 0.1, numBatchesTracked: 0 },
      });
      expect(Array.from(r.tensors.mean!.data)).toEqual([1e308]);
      expect(Array.from(r.tensors.y!.data)).toEqual(new Array(n).fill(0.5));
    }
  });
});
