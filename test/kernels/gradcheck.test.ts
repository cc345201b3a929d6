import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { batchNormBackward, batchNormForward, batchNormForwardEval } from '../../src/kernels/batch-norm.js';
import { central, maxAbs, mismatches, product, randn, rng } from './numeric.js';

/**
 * Central finite differences of L = Σ w·y through the forward kernels, against
 * the closed-form backward (dy = w). Independent of the backward formula: only
 * the forward pass is trusted here, and the forward pass is checked against
 * PyTorch in batch-norm.test.ts.
 */

interface Problem {
  shape: number[];
  N: number;
  C: number;
  inner: number;
  x: Float64Array;
  w: Float64Array;
  gamma: Float64Array | null;
  beta: Float64Array;
  runningMean: Float64Array;
  runningVar: Float64Array;
  eps: number;
  correction: number;
  training: boolean;
}

function forward(p: Problem, x: Float64Array, gamma: Float64Array | null, beta: Float64Array): Float64Array {
  const { N, C, inner, eps } = p;
  const y = new Float64Array(x.length);
  if (p.training) {
    const stats = {
      mean: new Float64Array(C),
      var: new Float64Array(C),
      invstd: new Float64Array(C),
      m2: new Float64Array(C),
    };
    batchNormForward({ x, N, C, inner, gamma, beta, eps, correction: p.correction, y, stats });
  } else {
    const { runningMean, runningVar } = p;
    batchNormForwardEval({ x, N, C, inner, gamma, beta, eps, runningMean, runningVar, y });
  }
  return y;
}

function loss(p: Problem, x: Float64Array, gamma: Float64Array | null, beta: Float64Array): number {
  const y = forward(p, x, gamma, beta);
  let s = 0;
  for (let i = 0; i < y.length; i++) s += p.w[i]! * y[i]!;
  return s;
}

function analytic(p: Problem) {
  const { x, N, C, inner, gamma, eps, correction, training } = p;
  let mean: Float64Array;
  let invstd: Float64Array;
  if (training) {
    // Statistics from the forward kernel: the backward is checked, not the statistics.
    const stats = {
      mean: new Float64Array(C),
      var: new Float64Array(C),
      invstd: new Float64Array(C),
      m2: new Float64Array(C),
    };
    batchNormForward({
      x,
      N,
      C,
      inner,
      gamma,
      beta: null,
      eps,
      correction,
      y: new Float64Array(x.length),
      stats,
    });
    mean = stats.mean;
    invstd = stats.invstd;
  } else {
    mean = p.runningMean;
    invstd = p.runningVar.map((v) => 1 / Math.sqrt(v + eps));
  }
  const dx = new Float64Array(x.length);
  const dgamma = new Float64Array(C);
  const dbeta = new Float64Array(C);
  batchNormBackward({
    x,
    dy: p.w,
    N,
    C,
    inner,
    gamma,
    mean,
    invstd,
    correction,
    training,
    dx,
    dgamma,
    dbeta,
  });
  return { dx, dgamma, dbeta };
}

function numeric(p: Problem) {
  const x = Float64Array.from(p.x);
  // dgamma is the gradient at gamma = 1 when gamma is omitted.
  const gamma = p.gamma ? Float64Array.from(p.gamma) : new Float64Array(p.C).fill(1);
  const beta = Float64Array.from(p.beta);
  const L = () => loss(p, x, p.gamma ? gamma : null, beta);
  const Lg = () => loss(p, x, gamma, beta);
  return {
    dx: x.map((_, i) => central(L, x, i)),
    dgamma: gamma.map((_, i) => central(Lg, gamma, i)),
    dbeta: beta.map((_, i) => central(L, beta, i)),
  };
}

function makeProblem(
  shape: number[],
  seed: number,
  correction: number,
  training: boolean,
  affine: boolean,
  eps: number,
): Problem {
  const rand = rng(seed);
  const [N, C] = [shape[0]!, shape[1]!];
  const inner = product(shape.slice(2));
  const n = product(shape);
  return {
    shape,
    N,
    C,
    inner,
    x: randn(rand, n, 1.5, 0.5),
    w: randn(rand, n),
    gamma: affine ? randn(rand, C, 0.5, 1) : null,
    beta: randn(rand, C, 0.5),
    runningMean: randn(rand, C, 0.5),
    runningVar: randn(rand, C, 0.2, 1).map(Math.abs),
    eps,
    correction,
    training,
  };
}

function check(p: Problem) {
  const a = analytic(p);
  const f = numeric(p);
  for (const k of ['dx', 'dgamma', 'dbeta'] as const) {
    const scale = 1 + maxAbs(a[k]);
    expect(mismatches(a[k], f[k], 1e-5, 1e-6 * scale), `${k} of ${JSON.stringify(p.shape)}`).toEqual([]);
  }
}

/** Smallest per-channel variance of x: finite differences need a well-conditioned 1/sqrt(var + eps). */
function minVariance(p: Problem): number {
  let min = Number.POSITIVE_INFINITY;
  for (let c = 0; c < p.C; c++) {
    const vals: number[] = [];
    for (let n = 0; n < p.N; n++)
      for (let i = 0; i < p.inner; i++) vals.push(p.x[(n * p.C + c) * p.inner + i]!);
    const mean = vals.reduce((s, v) => s + v, 0) / vals.length;
    min = Math.min(min, vals.reduce((s, v) => s + (v - mean) ** 2, 0) / vals.length);
  }
  return min;
}

const shapeArb = fc
  .tuple(
    fc.integer({ min: 2, max: 5 }),
    fc.integer({ min: 1, max: 4 }),
    fc.integer({ min: 1, max: 3 }),
    fc.array(fc.integer({ min: 1, max: 3 }), { minLength: 3, maxLength: 3 }),
  )
  .map(([rank, N, C, spatial]) => [N, C, ...spatial.slice(0, rank - 2)]);

describe('batch_norm gradients against central finite differences', () => {
  for (const training of [true, false]) {
    for (const correction of [0, 1, 2]) {
      for (const affine of [true, false]) {
        const mode = training ? 'training' : 'eval';
        it(`${mode}, correction ${correction}, ${affine ? 'with' : 'without'} gamma, random shapes of rank 2–5`, () => {
          fc.assert(
            fc.property(shapeArb, fc.integer(), fc.constantFrom(1e-5, 1e-3, 0.1), (shape, seed, eps) => {
              const m = shape[0]! * product(shape.slice(2));
              fc.pre(m > correction + 1);
              const p = makeProblem(shape, seed, correction, training, affine, eps);
              fc.pre(!training || minVariance(p) > 0.05);
              check(p);
            }),
            { numRuns: 25 },
          );
        });
      }
    }
  }

  it('every rank appears with every correction (fixed shapes)', () => {
    const shapes = [
      [5, 3],
      [3, 2, 4],
      [2, 3, 2, 3],
      [2, 2, 2, 2, 3],
    ];
    for (const shape of shapes) {
      for (const correction of [0, 1, 2]) {
        for (const training of [true, false]) {
          check(makeProblem(shape, 1000 + correction + shape.length, correction, training, true, 1e-5));
        }
      }
    }
  });

  it('would notice a backward that ignores the correction (control)', () => {
    // Same problem, forward with correction 2, backward told correction 0: must disagree.
    const p = makeProblem([3, 2], 99, 2, true, true, 1e-5);
    const wrong = analytic({ ...p, correction: 0 });
    const f = numeric(p);
    expect(mismatches(wrong.dx, f.dx, 1e-5, 1e-6 * (1 + maxAbs(wrong.dx))).length).toBeGreaterThan(0);
  });
});
