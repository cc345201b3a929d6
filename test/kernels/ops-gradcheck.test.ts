import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { central, maxAbs, mismatches, product, randn, rng } from './numeric.js';
import { affineShape, data, groups, type Op, type Params, refMoments, run } from './ops-task.js';

/**
 * Central finite differences of L = Σ w·y through runKernel('forward'), against
 * runKernel('backward') with dy = w, for layer_norm, group_norm, instance_norm
 * (training and eval) and rms_norm, all in float64. Only the forward pass is
 * trusted here, and the forward pass is checked against PyTorch in ops.test.ts.
 */

interface Problem {
  op: Op;
  shape: number[];
  params: Params;
  x: Float64Array;
  w: Float64Array;
  /** null: gamma omitted (the gradient is then the one at gamma = 1) */
  gamma: Float64Array | null;
  beta: Float64Array;
  running: { runningMean: Float64Array; runningVar: Float64Array } | null;
}

const hasBeta = (op: Op) => op !== 'rms_norm';

function loss(p: Problem, x: Float64Array, gamma: Float64Array | null, beta: Float64Array): number {
  const tensors = { x, gamma: gamma ?? undefined, beta: hasBeta(p.op) ? beta : undefined, ...p.running };
  const y = data(run('forward', p.op, p.shape, tensors, p.params), 'y');
  let s = 0;
  for (let i = 0; i < y.length; i++) s += p.w[i]! * y[i]!;
  return s;
}

function numeric(p: Problem): Record<string, Float64Array> {
  const x = Float64Array.from(p.x);
  const gamma = p.gamma ? Float64Array.from(p.gamma) : new Float64Array(p.beta.length).fill(1);
  const beta = Float64Array.from(p.beta);
  const L = () => loss(p, x, p.gamma ? gamma : null, beta);
  const Lg = () => loss(p, x, gamma, beta);
  const out: Record<string, Float64Array> = {
    dx: x.map((_, i) => central(L, x, i)),
    dgamma: gamma.map((_, i) => central(Lg, gamma, i)),
  };
  if (hasBeta(p.op)) out.dbeta = beta.map((_, i) => central(L, beta, i));
  return out;
}

function check(p: Problem) {
  const tensors = { x: p.x, dy: p.w, gamma: p.gamma ?? undefined, ...p.running };
  const a = run('backward', p.op, p.shape, tensors, p.params);
  const f = numeric(p);
  expect(Object.keys(a.tensors).sort()).toEqual(Object.keys(f).sort());
  for (const k of Object.keys(f)) {
    const analytic = data(a, k);
    const scale = 1 + maxAbs(analytic);
    const label = `${k} of ${p.op} ${JSON.stringify(p.shape)} ${JSON.stringify(p.params)}`;
    expect(mismatches(analytic, f[k]!, 1e-5, 1e-6 * scale), label).toEqual([]);
  }
}

function makeProblem(op: Op, shape: number[], params: Params, seed: number, affine: boolean): Problem {
  const rand = rng(seed);
  const n = product(shape);
  const k = product(affineShape(op, shape, params));
  const C = shape[1] ?? 1;
  const eval_ = op === 'instance_norm' && params.training === false;
  return {
    op,
    shape,
    params,
    x: randn(rand, n, 1.5, 0.5),
    w: randn(rand, n),
    gamma: affine ? randn(rand, k, 0.5, 1) : null,
    beta: randn(rand, k, 0.5),
    running: eval_
      ? { runningMean: randn(rand, C, 0.5), runningVar: randn(rand, C, 0.2, 1).map(Math.abs) }
      : null,
  };
}

/**
 * Finite differences need a well-conditioned 1/sqrt(var + eps) (or 1/sqrt(ms + eps)):
 * the smallest per-group variance (mean of squares for rms_norm) of x.
 */
function minSpread(p: Problem): number {
  let min = Number.POSITIVE_INFINITY;
  for (const idx of groups(p.op, p.shape, p.params)) {
    const { m2, ms, m } = refMoments(p.x, idx);
    min = Math.min(min, p.op === 'rms_norm' ? ms : m2 / m);
  }
  return min;
}

const dims = (min: number, max: number, n: number) =>
  fc.array(fc.integer({ min, max }), { minLength: n, maxLength: n });

/** [x shape, normalizedShape]: x rank 1–4, normalizedShape its trailing 1..rank dims. */
const rowShapeArb = fc
  .tuple(fc.integer({ min: 1, max: 4 }), dims(1, 4, 4), fc.integer({ min: 1, max: 4 }))
  .map(([rank, d, k]) => {
    const shape = d.slice(0, rank);
    return { shape, normalizedShape: shape.slice(rank - Math.min(k, rank)) };
  });

/** [N, C, *spatial] of rank 2–4 with C = G·(C/G). */
const groupShapeArb = fc
  .tuple(
    fc.integer({ min: 2, max: 4 }),
    fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 1, max: 3 }),
    dims(1, 3, 2),
  )
  .map(([rank, N, G, perGroup, spatial]) => ({
    shape: [N, G * perGroup, ...spatial.slice(0, rank - 2)],
    numGroups: G,
  }));

/** [N, C, *spatial] of rank 3–5. */
const instanceShapeArb = fc
  .tuple(
    fc.integer({ min: 3, max: 5 }),
    fc.integer({ min: 1, max: 3 }),
    fc.integer({ min: 1, max: 3 }),
    dims(1, 4, 3),
  )
  .map(([rank, N, C, spatial]) => [N, C, ...spatial.slice(0, rank - 2)]);

const epsArb = fc.constantFrom(1e-5, 1e-3, 0.1);
const RUNS = 20;

describe('gradients of the other ops against central finite differences (through runKernel)', () => {
  for (const correction of [0, 1, 2]) {
    for (const affine of [true, false]) {
      const gammaLabel = affine ? 'with' : 'without';

      it(`layer_norm, correction ${correction}, ${gammaLabel} gamma, x rank 1–4, normalizedShape 1–4 dims`, () => {
        fc.assert(
          fc.property(rowShapeArb, fc.integer(), epsArb, ({ shape, normalizedShape }, seed, eps) => {
            fc.pre(product(normalizedShape) > correction + 1);
            const p = makeProblem('layer_norm', shape, { eps, correction, normalizedShape }, seed, affine);
            fc.pre(minSpread(p) > 0.05);
            check(p);
          }),
          { numRuns: RUNS },
        );
      });

      it(`group_norm, correction ${correction}, ${gammaLabel} gamma, rank 2–4, G from 1 to C`, () => {
        fc.assert(
          fc.property(groupShapeArb, fc.integer(), epsArb, ({ shape, numGroups }, seed, eps) => {
            fc.pre(product(shape.slice(1)) / numGroups > correction + 1);
            const p = makeProblem('group_norm', shape, { eps, correction, numGroups }, seed, affine);
            fc.pre(minSpread(p) > 0.05);
            check(p);
          }),
          { numRuns: RUNS },
        );
      });

      for (const training of [true, false]) {
        it(`instance_norm ${training ? 'training' : 'eval'}, correction ${correction}, ${gammaLabel} gamma, rank 3–5`, () => {
          fc.assert(
            fc.property(instanceShapeArb, fc.integer(), epsArb, (shape, seed, eps) => {
              fc.pre(product(shape.slice(2)) > correction + 1);
              const params = { eps, correction, training, momentum: 0.1, numBatchesTracked: 0 };
              const p = makeProblem('instance_norm', shape, params, seed, affine);
              fc.pre(!training || minSpread(p) > 0.05);
              check(p);
            }),
            { numRuns: RUNS },
          );
        });
      }
    }
  }

  for (const affine of [true, false]) {
    it(`rms_norm, ${affine ? 'with' : 'without'} gamma, x rank 1–4, normalizedShape 1–4 dims`, () => {
      fc.assert(
        fc.property(
          rowShapeArb,
          fc.integer(),
          fc.constantFrom(2 ** -52, 1e-6, 1e-3, 0.1),
          ({ shape, normalizedShape }, seed, eps) => {
            const p = makeProblem('rms_norm', shape, { eps, normalizedShape }, seed, affine);
            fc.pre(minSpread(p) > 0.05);
            check(p);
          },
        ),
        { numRuns: RUNS },
      );
    });
  }

  it('every op at fixed shapes, every correction (no shrinking luck involved)', () => {
    const fixed: { op: Op; shape: number[]; params: Params }[] = [
      { op: 'layer_norm', shape: [6], params: { normalizedShape: [6] } },
      { op: 'layer_norm', shape: [3, 5], params: { normalizedShape: [5] } },
      { op: 'layer_norm', shape: [2, 3, 4], params: { normalizedShape: [3, 4] } },
      { op: 'layer_norm', shape: [2, 2, 2, 3], params: { normalizedShape: [2, 2, 3] } },
      { op: 'group_norm', shape: [3, 6], params: { numGroups: 2 } },
      { op: 'group_norm', shape: [2, 4, 3], params: { numGroups: 1 } },
      { op: 'group_norm', shape: [2, 4, 2, 2], params: { numGroups: 4 } },
      { op: 'instance_norm', shape: [2, 3, 4], params: {} },
      { op: 'instance_norm', shape: [2, 2, 2, 3], params: {} },
      { op: 'instance_norm', shape: [1, 2, 2, 2, 2], params: {} },
      { op: 'instance_norm', shape: [2, 3, 4], params: { training: false } },
    ];
    let seed = 500;
    for (const { op, shape, params } of fixed) {
      for (const correction of [0, 1, 2]) {
        const p = makeProblem(op, shape, { ...params, eps: 1e-5, correction }, seed++, true);
        expect(minSpread(p), `${op} ${JSON.stringify(shape)}`).toBeGreaterThan(0.05);
        check(p);
      }
    }
    for (const [shape, normalizedShape] of [
      [[6], [6]],
      [[3, 5], [5]],
      [
        [2, 3, 4],
        [3, 4],
      ],
      [
        [2, 2, 2, 3],
        [2, 2, 3],
      ],
    ] as const) {
      check(
        makeProblem(
          'rms_norm',
          [...shape],
          { eps: 1e-6, normalizedShape: [...normalizedShape] },
          seed++,
          true,
        ),
      );
    }
  });

  it('would notice a backward that ignores the correction (control)', () => {
    // Forward with correction 2, backward told correction 0: the gradients must disagree.
    const p = makeProblem('layer_norm', [2, 4], { eps: 1e-5, correction: 2, normalizedShape: [4] }, 99, true);
    const wrong = run(
      'backward',
      'layer_norm',
      p.shape,
      { x: p.x, dy: p.w, gamma: p.gamma! },
      { ...p.params, correction: 0 },
    );
    const f = numeric(p);
    const dx = data(wrong, 'dx');
    expect(mismatches(dx, f.dx!, 1e-5, 1e-6 * (1 + maxAbs(dx))).length).toBeGreaterThan(0);
  });
});
