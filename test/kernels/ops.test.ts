import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { KernelResult } from '../../src/kernels/task.js';
import type { DType } from '../../src/tensor/tensor.js';
import { maxAbs, mismatches, product, randn, rng } from './numeric.js';
import {
  affineShape,
  CENTERED,
  data,
  groups,
  MACHINE_EPS,
  type Op,
  type Params,
  refMoments,
  run,
  statsShape,
  type Tensors,
} from './ops-task.js';

/**
 * layer_norm, group_norm, instance_norm and rms_norm through the public runner
 * `runKernel`, against PyTorch goldens (test/fixtures/ops.json, written by
 * make_goldens_ops.py) and against hand-checkable edge cases.
 */

interface GoldenCase {
  name: string;
  op: Op;
  shape: number[];
  dtype: DType;
  params: Params;
  inputs: Record<'x' | 'dy', number[]> &
    Partial<Record<'gamma' | 'beta' | 'runningMean' | 'runningVar', number[]>>;
  expected: {
    forward: Record<string, number[] | number>;
    backward: Record<string, number[]>;
  };
}

const fixture = JSON.parse(readFileSync(new URL('../fixtures/ops.json', import.meta.url), 'utf8')) as {
  generatedBy: string;
  cases: GoldenCase[];
};

/** float64: both sides float64 end to end; float32: torch in float32 or float64 rounded once (see the script). */
const TOL: Record<DType, { rtol: number; atol: number }> = {
  float64: { rtol: 1e-10, atol: 1e-10 },
  float32: { rtol: 1e-5, atol: 1e-5 },
};

const STAT_NAMES: Record<Op, string[]> = {
  layer_norm: ['mean', 'var', 'invstd'],
  group_norm: ['mean', 'var', 'invstd'],
  instance_norm: ['mean', 'var', 'invstd'],
  rms_norm: ['rrms'],
};
const SAVED: Record<Op, string[]> = {
  layer_norm: ['mean', 'invstd'],
  group_norm: ['mean', 'invstd'],
  instance_norm: ['mean', 'invstd'],
  rms_norm: ['rrms'],
};

function expectTensor(
  r: KernelResult,
  name: string,
  shape: number[],
  expected: ArrayLike<number>,
  dtype: DType,
  tol = TOL[dtype],
) {
  const t = r.tensors[name];
  expect(t, name).toBeDefined();
  expect(t!.shape, `${name} shape`).toEqual(shape);
  expect(t!.data, `${name} element type`).toBeInstanceOf(dtype === 'float32' ? Float32Array : Float64Array);
  expect(mismatches(t!.data, expected, tol.rtol, tol.atol), name).toEqual([]);
}

function forwardInputs(c: GoldenCase): Tensors {
  const { x, gamma, beta, runningMean, runningVar } = c.inputs;
  return { x, gamma, beta, runningMean, runningVar };
}

function backwardInputs(c: GoldenCase, saved: Tensors = {}): Tensors {
  const { x, dy, gamma, runningMean, runningVar } = c.inputs;
  return { x, dy, gamma, runningMean, runningVar, ...saved };
}

const isTraining = (c: GoldenCase) => c.params.training !== false;

describe('ops against PyTorch goldens (ops.json)', () => {
  it('has the fixture written by make_goldens_ops.py, covering every op, rank and correction asked for', () => {
    expect(fixture.generatedBy).toMatch(/make_goldens_ops\.py \(torch /);
    const of = (op: Op) => fixture.cases.filter((c) => c.op === op);
    const ranks = (op: Op) => [...new Set(of(op).map((c) => c.shape.length))].sort();
    expect(ranks('layer_norm')).toEqual([1, 2, 3, 4]);
    expect(ranks('rms_norm')).toEqual([1, 2, 3, 4]);
    expect(ranks('group_norm')).toEqual(expect.arrayContaining([2, 3, 4]));
    expect(ranks('instance_norm')).toEqual([3, 4, 5]);
    for (const op of ['layer_norm', 'rms_norm'] as const) {
      const nsRanks = new Set(of(op).map((c) => (c.params.normalizedShape as number[]).length));
      expect([...nsRanks].sort(), op).toEqual([1, 2, 3]);
      const whole = of(op).filter((c) => product(c.params.normalizedShape as number[]) === product(c.shape));
      expect(whole.length, `${op}: x.shape == normalizedShape`).toBeGreaterThan(1);
    }
    const gn = of('group_norm');
    expect(gn.some((c) => c.params.numGroups === 1)).toBe(true);
    expect(gn.some((c) => c.params.numGroups === c.shape[1])).toBe(true);
    expect(gn.some((c) => (c.params.numGroups as number) > 1 && c.params.numGroups !== c.shape[1])).toBe(
      true,
    );
    const inst = of('instance_norm');
    expect(inst.some((c) => c.params.training === false)).toBe(true);
    expect(inst.some((c) => 'runningMean' in c.expected.forward && c.params.momentum === null)).toBe(true);
    expect(inst.some((c) => 'runningMean' in c.expected.forward && c.params.momentum === 0.1)).toBe(true);
    for (const op of CENTERED) {
      const corrections = new Set(of(op).map((c) => c.params.correction));
      expect(corrections.has(0) && corrections.has(1), op).toBe(true);
    }
    for (const op of ['layer_norm', 'group_norm', 'instance_norm', 'rms_norm'] as const) {
      expect(
        of(op).some((c) => c.dtype === 'float32'),
        op,
      ).toBe(true);
    }
  });

  for (const c of fixture.cases) {
    const exp = c.expected;
    const sShape = statsShape(c.op, c.shape, c.params);
    const aShape = affineShape(c.op, c.shape, c.params);
    const gradNames = c.op === 'rms_norm' ? ['dx', 'dgamma'] : ['dx', 'dgamma', 'dbeta'];

    const expectGrads = (r: KernelResult) => {
      expect(Object.keys(r.tensors).sort()).toEqual([...gradNames].sort());
      expectTensor(r, 'dx', c.shape, exp.backward.dx!, c.dtype);
      for (const k of gradNames.slice(1)) expectTensor(r, k, aShape, exp.backward[k]!, c.dtype);
    };

    describe(`${c.op}: ${c.name}`, () => {
      it('forward', () => {
        const r = run('forward', c.op, c.shape, forwardInputs(c), c.params, c.dtype);
        expectTensor(r, 'y', c.shape, exp.forward.y as number[], c.dtype);
        const stats = isTraining(c) ? STAT_NAMES[c.op] : [];
        const runningNames = ['runningMean', 'runningVar'].filter((k) => k in exp.forward);
        expect(Object.keys(r.tensors).sort()).toEqual(['y', ...stats, ...runningNames].sort());
        for (const k of stats) expectTensor(r, k, sShape, exp.forward[k] as number[], c.dtype);
        for (const k of runningNames) expectTensor(r, k, [c.shape[1]!], exp.forward[k] as number[], c.dtype);
        expect(r.scalars.numBatchesTracked).toBe(exp.forward.numBatchesTracked);
      });

      it('backward (statistics recomputed from x)', () => {
        expectGrads(run('backward', c.op, c.shape, backwardInputs(c), c.params, c.dtype));
      });

      if (isTraining(c)) {
        it("backward with PyTorch's statistics as saved statistics", () => {
          const saved = Object.fromEntries(SAVED[c.op].map((k) => [k, exp.forward[k] as number[]]));
          expectGrads(run('backward', c.op, c.shape, backwardInputs(c, saved), c.params, c.dtype));
        });

        it("backward with the forward's own statistics equals backward recomputing them", () => {
          const f = run('forward', c.op, c.shape, forwardInputs(c), c.params, c.dtype);
          const saved = Object.fromEntries(SAVED[c.op].map((k) => [k, data(f, k)]));
          const withSaved = run('backward', c.op, c.shape, backwardInputs(c, saved), c.params, c.dtype);
          const recomputed = run('backward', c.op, c.shape, backwardInputs(c), c.params, c.dtype);
          // float64: the same float64 statistics either way; float32: saved ones were rounded to float32.
          const tol = c.dtype === 'float64' ? { rtol: 1e-13, atol: 1e-13 } : TOL.float32;
          for (const k of gradNames) {
            const scale = 1 + maxAbs(data(recomputed, k));
            expect(
              mismatches(data(withSaved, k), data(recomputed, k), tol.rtol, tol.atol * scale),
              k,
            ).toEqual([]);
          }
        });
      } else {
        it('eval backward ignores saved mean/invstd (the running statistics are used)', () => {
          const bogus = Array.from({ length: product(sShape) }, () => 100);
          const r = run(
            'backward',
            c.op,
            c.shape,
            backwardInputs(c, { mean: bogus, invstd: bogus }),
            c.params,
            c.dtype,
          );
          expectGrads(r);
        });
      }
    });
  }
});

/** Ops with a layout for a given number of values per group: one group of `values`. */
function oneGroup(op: Op, values: number[]): { shape: number[]; params: Params } {
  const m = values.length;
  switch (op) {
    case 'layer_norm':
    case 'rms_norm':
      return { shape: [m], params: { normalizedShape: [m] } };
    case 'group_norm':
      return { shape: [1, 1, m], params: { numGroups: 1 } };
    case 'instance_norm':
      return { shape: [1, 1, m], params: {} };
  }
}

describe('constant groups: var exactly 0, y exactly beta (exact zeros without affine)', () => {
  const values = [0.1, 1 / 3, -7.25, 1e9 + 0.1, 1e-300, 123456.789, 0];
  // k samples; every group of 6 values is a constant, a different one per group.
  const layouts: Record<Exclude<Op, 'rms_norm'>, (k: number) => { shape: number[]; params: Params }> = {
    layer_norm: (k) => ({ shape: [k, 2, 3], params: { normalizedShape: [2, 3] } }),
    group_norm: (k) => ({ shape: [k, 4, 3], params: { numGroups: 2 } }),
    instance_norm: (k) => ({ shape: [k, 2, 6], params: {} }),
  };
  /** Index into gamma/beta of element i: elementwise over the row, or the channel. */
  const affineOf = (op: Op, shape: number[], i: number) =>
    op === 'layer_norm' ? i % 6 : Math.floor(i / product(shape.slice(2))) % shape[1]!;

  for (const op of ['layer_norm', 'group_norm', 'instance_norm'] as const) {
    for (const dtype of ['float64', 'float32'] as const) {
      it(`${op} ${dtype}`, () => {
        const round = (v: number) => (dtype === 'float32' ? Math.fround(v) : v);
        for (const k of [1, 3]) {
          const { shape, params } = layouts[op](k);
          const idx = groups(op, shape, params);
          const nAffine = product(affineShape(op, shape, params));
          const gamma = Array.from({ length: nAffine }, (_, i) => (i % 2 ? -3 : 2.5));
          const beta = Array.from({ length: nAffine }, (_, i) => 0.375 - i);
          for (const value of values) {
            const consts = idx.map((_, g) => round(value * (g + 1)));
            const x = new Float64Array(product(shape));
            idx.forEach((group, g) => {
              for (const i of group) x[i] = consts[g]!;
            });
            const label = `value ${value} k ${k}`;

            const r = run('forward', op, shape, { x, gamma, beta }, params, dtype);
            expect(Array.from(data(r, 'var')), label).toEqual(consts.map(() => 0));
            expect(Array.from(data(r, 'mean')), label).toEqual(consts);
            const y = data(r, 'y');
            for (let i = 0; i < y.length; i++)
              expect(y[i], `${label} y[${i}]`).toBe(beta[affineOf(op, shape, i)]);

            const bare = run('forward', op, shape, { x }, params, dtype);
            expect(Array.from(data(bare, 'y'), Math.abs), label).toEqual(new Array(y.length).fill(0));

            const dy = randn(rng(k), x.length);
            const b = run('backward', op, shape, { x, dy, gamma }, params, dtype);
            for (const g of ['dx', 'dgamma', 'dbeta'])
              expect(data(b, g).every(Number.isFinite), `${label} ${g}`).toBe(true);
            // x̂ = 0 everywhere: dgamma = Σ dy·x̂ = 0 exactly.
            expect(Array.from(data(b, 'dgamma'), Math.abs), label).toEqual(new Array(nAffine).fill(0));
          }
        }
      });
    }
  }

  it('rms_norm: a row of zeros gives y = 0 exactly and rrms = 1/sqrt(eps)', () => {
    for (const dtype of ['float64', 'float32'] as const) {
      const r = run(
        'forward',
        'rms_norm',
        [2, 4],
        { x: [0, 0, 0, 0, 1, 2, 3, 4], gamma: [1, 2, 3, 4] },
        {},
        dtype,
      );
      expect(Array.from(data(r, 'y')).slice(0, 4).map(Math.abs)).toEqual([0, 0, 0, 0]);
      const rrms0 = 1 / Math.sqrt(MACHINE_EPS[dtype]);
      expect(data(r, 'rrms')[0]).toBe(dtype === 'float32' ? Math.fround(rrms0) : rrms0);
    }
  });
});

describe('values far from zero', () => {
  // The float64 answer for x = [0, 1, 2, 3]: mean 1.5, var 1.25, y = (x − 1.5)/sqrt(1.25 + eps).
  const eps = 1e-5;
  const s = 1 / Math.sqrt(1.25 + eps);
  const y64 = [0, 1, 2, 3].map((v) => (v - 1.5) * s);
  const ulp32 = 2 ** -23;

  it('layer_norm of [40000, 40001, 40002, 40003] in float32 is within one float32 ulp of the float64 answer for [0, 1, 2, 3]', () => {
    for (const shape of [[4], [3, 4]]) {
      const x = Array.from({ length: product(shape) }, (_, i) => 40000 + (i % 4));
      const r = run('forward', 'layer_norm', shape, { x }, { eps }, 'float32');
      const y = data(r, 'y');
      expect(y).toBeInstanceOf(Float32Array);
      for (let i = 0; i < y.length; i++) {
        const e = y64[i % 4]!;
        expect(Math.abs(y[i]! - e), `y[${i}] = ${y[i]} vs ${e}`).toBeLessThanOrEqual(ulp32 * Math.abs(e));
      }
      expect(Array.from(data(r, 'mean'))).toEqual(new Array(product(shape) / 4).fill(40001.5));
      expect(Array.from(data(r, 'var'))).toEqual(new Array(product(shape) / 4).fill(1.25));
    }
  });

  it('layer_norm float32 backward at 40000 + [0, 1, 2, 3] matches the float64 gradients at [0, 1, 2, 3]', () => {
    const dy = [0.5, -1.25, 2, 0.75];
    const gamma = [1.5, -0.5, 2, 1];
    const far = run(
      'backward',
      'layer_norm',
      [4],
      { x: [40000, 40001, 40002, 40003], dy, gamma },
      { eps },
      'float32',
    );
    const near = run('backward', 'layer_norm', [4], { x: [0, 1, 2, 3], dy, gamma }, { eps }, 'float64');
    for (const k of ['dx', 'dgamma', 'dbeta']) {
      expect(
        mismatches(data(far, k), data(near, k), 2 * ulp32, 2 * ulp32 * maxAbs(data(near, k))),
        k,
      ).toEqual([]);
    }
  });

  it('group_norm and instance_norm of 40000 + [0, 1, 2, 3] in float32: within one float32 ulp too', () => {
    for (const op of ['group_norm', 'instance_norm'] as const) {
      const { shape, params } = oneGroup(op, [0, 1, 2, 3]);
      const r = run('forward', op, shape, { x: [40000, 40001, 40002, 40003] }, { ...params, eps }, 'float32');
      const y = data(r, 'y');
      for (let i = 0; i < 4; i++)
        expect(Math.abs(y[i]! - y64[i]!), `${op} y[${i}]`).toBeLessThanOrEqual(ulp32 * Math.abs(y64[i]!));
    }
  });
});

describe('one value per group (R = 1) with a huge gamma', () => {
  for (const dtype of ['float64', 'float32'] as const) {
    for (const op of ['layer_norm', 'group_norm', 'instance_norm'] as const) {
      it(`${op} ${dtype}: y = beta exactly and finite, dx = 0, dgamma = 0, dbeta = dy`, () => {
        const { shape, params } = oneGroup(op, [12345.678]);
        const x = [12345.678];
        const r = run('forward', op, shape, { x, gamma: [1e30], beta: [0.25] }, params, dtype);
        expect(Array.from(data(r, 'y'))).toEqual([0.25]);
        expect(Array.from(data(r, 'var'))).toEqual([0]);
        const b = run('backward', op, shape, { x, dy: [-0.75], gamma: [1e30] }, params, dtype);
        // y does not depend on x when each group is one value: dx is exactly 0, however large gamma is.
        expect(Array.from(data(b, 'dx'), Math.abs)).toEqual([0]);
        expect(Array.from(data(b, 'dgamma'), Math.abs)).toEqual([0]);
        expect(Array.from(data(b, 'dbeta'))).toEqual([-0.75]);
      });
    }

    it(`layer_norm ${dtype}: several rows of one value each`, () => {
      const rows = run(
        'forward',
        'layer_norm',
        [3, 1],
        { x: [1, -2e6, 3e-7], gamma: [1e30], beta: [-4] },
        { normalizedShape: [1] },
        dtype,
      );
      expect(Array.from(data(rows, 'y'))).toEqual([-4, -4, -4]);
    });
  }

  it('any gamma and dy: dx of a one-value group is exactly 0 (no rounding residue)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...(['layer_norm', 'group_norm', 'instance_norm'] as const)),
        fc.constantFrom(...(['float64', 'float32'] as const)),
        fc.double({ min: -1e6, max: 1e6, noNaN: true }),
        fc.double({ min: 1e-3, max: 1e30, noNaN: true }),
        fc.double({ min: -10, max: 10, noNaN: true }),
        fc.constantFrom(1e-5, 1e-3, 0.1),
        (op, dtype, x, gamma, dy, eps) => {
          const { shape, params } = oneGroup(op, [x]);
          const b = run(
            'backward',
            op,
            shape,
            { x: [x], dy: [dy], gamma: [gamma] },
            { ...params, eps },
            dtype,
          );
          expect(Math.abs(data(b, 'dx')[0]!)).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('rms_norm R = 1: y = gamma·x/sqrt(x² + eps), finite even with gamma 1e30', () => {
    for (const dtype of ['float64', 'float32'] as const) {
      const x = [2, -0.5, 1e-3];
      const r = run('forward', 'rms_norm', [3, 1], { x, gamma: [1e30] }, {}, dtype);
      const eps = MACHINE_EPS[dtype];
      const expected = x.map((v) => (Math.fround(v) / Math.sqrt(Math.fround(v) ** 2 + eps)) * 1e30);
      const y = data(r, 'y');
      expect(y.every(Number.isFinite)).toBe(true);
      const rtol = dtype === 'float32' ? 2 ** -22 : 1e-14;
      expect(mismatches(y, expected, rtol, 0)).toEqual([]);
    }
  });
});

describe('rms_norm of float32 values whose squares overflow float32 (±3e20)', () => {
  const shape = [2, 4];
  const x = [3e20, -3e20, 3e20, 1e20, 2e20, -1e20, 0.5, -3e20].map(Math.fround);
  const gamma = [1.5, -0.5, 1, 2].map(Math.fround);
  const dy = [0.25, -1, 0.5, 2, -0.75, 1.25, 1, -0.5].map(Math.fround);
  const eps = MACHINE_EPS.float32;

  it('forward: finite, y and rrms as computed in float64', () => {
    const r = run('forward', 'rms_norm', shape, { x, gamma }, {}, 'float32');
    const y = data(r, 'y');
    const rrms = data(r, 'rrms');
    expect(y.every(Number.isFinite) && rrms.every(Number.isFinite)).toBe(true);
    for (let row = 0; row < 2; row++) {
      const idx = [0, 1, 2, 3].map((i) => row * 4 + i);
      const { ms } = refMoments(x, idx);
      expect(ms).toBeGreaterThan(3.4e38); // the squares themselves overflow float32
      const s = 1 / Math.sqrt(ms + eps);
      expect(mismatches([rrms[row]!], [s], 2 ** -23, 0), `rrms[${row}]`).toEqual([]);
      const expected = idx.map((i, j) => x[i]! * s * gamma[j]!);
      expect(
        mismatches(
          idx.map((i) => y[i]!),
          expected,
          2 ** -22,
          2 ** -22 * maxAbs(expected),
        ),
        `row ${row}`,
      ).toEqual([]);
    }
  });

  it('backward: finite, equal to the float64 gradients at x/1e20 scaled back (rms_norm is scale invariant up to eps)', () => {
    const b = run('backward', 'rms_norm', shape, { x, dy, gamma }, {}, 'float32');
    for (const k of ['dx', 'dgamma']) expect(data(b, k).every(Number.isFinite), k).toBe(true);
    const small = run('backward', 'rms_norm', shape, { x: x.map((v) => v / 1e20), dy, gamma }, {}, 'float64');
    // y(x) = y(x/s) when eps is negligible next to mean(x²): dx(x) = dx(x/s)/s, dgamma unchanged.
    const dxSmall = Array.from(data(small, 'dx'), (v) => v / 1e20);
    expect(mismatches(data(b, 'dx'), dxSmall, 1e-6, 1e-6 * maxAbs(dxSmall))).toEqual([]);
    expect(mismatches(data(b, 'dgamma'), data(small, 'dgamma'), 1e-6, 1e-6)).toEqual([]);
  });
});

describe('hand-checkable values (the doc comments’ examples)', () => {
  it('layer_norm x = [[1, 2, 3, 4]], correction 0: mean 2.5, var 1.25; correction 1: var 5/3', () => {
    const r = run('forward', 'layer_norm', [1, 4], { x: [1, 2, 3, 4] });
    expect(Array.from(data(r, 'mean'))).toEqual([2.5]);
    expect(Array.from(data(r, 'var'))).toEqual([1.25]);
    expect(data(r, 'y')[0]).toBeCloseTo(-1.341635, 6);
    const r1 = run('forward', 'layer_norm', [1, 4], { x: [1, 2, 3, 4] }, { correction: 1 });
    expect(data(r1, 'var')[0]).toBeCloseTo(5 / 3, 15);
    expect(r1.tensors.var!.shape).toEqual([1]);
  });

  it('group_norm x = [[1, 2, 3, 4]], G = 2: mean [1.5, 3.5], var [0.25, 0.25], statistics [N, G]', () => {
    const r = run('forward', 'group_norm', [1, 4], { x: [1, 2, 3, 4] }, { numGroups: 2 });
    expect(Array.from(data(r, 'mean'))).toEqual([1.5, 3.5]);
    expect(Array.from(data(r, 'var'))).toEqual([0.25, 0.25]);
    expect(r.tensors.mean!.shape).toEqual([1, 2]);
    const e = 0.5 / Math.sqrt(0.25 + 1e-5);
    expect(mismatches(data(r, 'y'), [-e, e, -e, e], 1e-15, 0)).toEqual([]);
  });

  it('rms_norm x = [[3, 4]], eps → 0: rrms = 1/sqrt(12.5), y = [3, 4]/sqrt(12.5)', () => {
    const r = run('forward', 'rms_norm', [1, 2], { x: [3, 4] }, { eps: 1e-300 });
    expect(data(r, 'rrms')[0]).toBeCloseTo(1 / Math.sqrt(12.5), 15);
    expect(mismatches(data(r, 'y'), [3 / Math.sqrt(12.5), 4 / Math.sqrt(12.5)], 1e-15, 0)).toEqual([]);
  });

  it('instance_norm running statistics by hand: per-instance unbiased variance averaged over N', () => {
    // Two samples, one channel: [1, 2, 3] (mean 2, unbiased var 1) and [2, 4, 6] (mean 4, var 4).
    const r = run(
      'forward',
      'instance_norm',
      [2, 1, 3],
      { x: [1, 2, 3, 2, 4, 6], runningMean: [0], runningVar: [1] },
      { momentum: 0.1 },
    );
    expect(data(r, 'runningMean')[0]).toBeCloseTo(0.1 * 3, 15);
    expect(data(r, 'runningVar')[0]).toBeCloseTo(0.9 + 0.1 * 2.5, 15);
    expect(r.scalars.numBatchesTracked).toBe(1);
    const cumulative = run(
      'forward',
      'instance_norm',
      [2, 1, 3],
      { x: [1, 2, 3, 2, 4, 6], runningMean: [0], runningVar: [1] },
      { momentum: null, numBatchesTracked: 3 },
    );
    expect(data(cumulative, 'runningMean')[0]).toBeCloseTo(0.25 * 3, 15);
    expect(data(cumulative, 'runningVar')[0]).toBeCloseTo(0.75 + 0.25 * 2.5, 15);
    expect(cumulative.scalars.numBatchesTracked).toBe(4);
  });
});

describe('statistics against plain two-pass float64 moments', () => {
  it('every op, corrections 0–2, statistics per group in the SPEC order and shape', () => {
    const cases: { op: Op; shape: number[]; params: Params }[] = [
      { op: 'layer_norm', shape: [3, 2, 5], params: { normalizedShape: [5] } },
      { op: 'layer_norm', shape: [3, 2, 5], params: { normalizedShape: [2, 5] } },
      { op: 'layer_norm', shape: [3, 2, 5], params: { normalizedShape: [3, 2, 5] } },
      { op: 'group_norm', shape: [2, 6, 2, 2], params: { numGroups: 3 } },
      { op: 'group_norm', shape: [3, 4], params: { numGroups: 1 } },
      { op: 'instance_norm', shape: [2, 3, 2, 2, 2], params: {} },
      { op: 'rms_norm', shape: [3, 2, 5], params: { normalizedShape: [2, 5] } },
      { op: 'rms_norm', shape: [4, 3], params: { normalizedShape: [3] } },
    ];
    for (const { op, shape, params } of cases) {
      for (const correction of op === 'rms_norm' ? [0] : [0, 1, 2]) {
        const x = randn(rng(shape.length * 10 + correction), product(shape), 2, 5);
        const p = op === 'rms_norm' ? params : { ...params, correction };
        const r = run('forward', op, shape, { x }, p);
        const label = `${op} ${JSON.stringify(shape)} ${JSON.stringify(p)}`;
        const idx = groups(op, shape, p);
        if (op === 'rms_norm') {
          expect(r.tensors.rrms!.shape, label).toEqual(statsShape(op, shape, p));
          const rrms = data(r, 'rrms');
          idx.forEach((group, g) => {
            const { ms } = refMoments(x, group);
            const e = 1 / Math.sqrt(ms + MACHINE_EPS.float64);
            expect(mismatches([rrms[g]!], [e], 1e-14, 0), label).toEqual([]);
          });
          continue;
        }
        for (const k of ['mean', 'var', 'invstd'])
          expect(r.tensors[k]!.shape, `${label} ${k}`).toEqual(statsShape(op, shape, p));
        const [mean, variance, invstd] = ['mean', 'var', 'invstd'].map((k) => data(r, k));
        idx.forEach((group, g) => {
          const ref = refMoments(x, group);
          const v = ref.m2 / (ref.m - correction);
          expect(mismatches([mean![g]!], [ref.mean], 1e-14, 0), label).toEqual([]);
          expect(mismatches([variance![g]!], [v], 1e-13, 0), label).toEqual([]);
          expect(mismatches([invstd![g]!], [1 / Math.sqrt(v + 1e-5)], 1e-13, 0), label).toEqual([]);
        });
      }
    }
  });
});

/**
 * The SPEC's formulas written out plainly in float64 (two-pass statistics, closed-form
 * backward), for groups too long for a golden file. The closed form itself is checked
 * against finite differences in ops-gradcheck.test.ts.
 */
function reference(
  op: Op,
  shape: number[],
  params: Params,
  x: ArrayLike<number>,
  dy: ArrayLike<number>,
  gamma: ArrayLike<number>,
  beta: ArrayLike<number> | undefined,
) {
  const n = product(shape);
  const nAffine = gamma.length;
  const R = op === 'layer_norm' || op === 'rms_norm' ? nAffine : 0;
  const inner = product(shape.slice(2));
  const a = (i: number) => (R ? i % R : Math.floor(i / inner) % shape[1]!);
  const y = new Float64Array(n);
  const dx = new Float64Array(n);
  const dgamma = new Float64Array(nAffine);
  const dbeta = new Float64Array(nAffine);
  const eps = params.eps as number;
  const c = (params.correction as number | undefined) ?? 0;
  for (const idx of groups(op, shape, params)) {
    const { mean, m2, ms, m } = refMoments(x, idx);
    if (op === 'rms_norm') {
      const r = 1 / Math.sqrt(ms + eps);
      let sux = 0;
      for (const i of idx) {
        y[i] = x[i]! * r * gamma[a(i)]!;
        sux += gamma[a(i)]! * dy[i]! * x[i]!;
        dgamma[a(i)]! += dy[i]! * x[i]! * r;
      }
      for (const i of idx) dx[i] = r * gamma[a(i)]! * dy[i]! - (r ** 3 * x[i]! * sux) / m;
      continue;
    }
    const s = 1 / Math.sqrt(m2 / (m - c) + eps);
    let su = 0;
    let suxh = 0;
    for (const i of idx) {
      const xh = (x[i]! - mean) * s;
      const u = gamma[a(i)]! * dy[i]!;
      y[i] = gamma[a(i)]! * xh + (beta ? beta[a(i)]! : 0);
      su += u;
      suxh += u * xh;
      dgamma[a(i)]! += dy[i]! * xh;
      dbeta[a(i)]! += dy[i]!;
    }
    for (const i of idx) {
      const xh = (x[i]! - mean) * s;
      dx[i] = s * (gamma[a(i)]! * dy[i]! - su / m - (xh * suxh) / (m - c));
    }
  }
  return { y, dx, dgamma, dbeta };
}

describe('long groups (thousands of values, far from zero) against the written-out SPEC', () => {
  const layouts: { op: Op; shape: number[]; params: Params }[] = [
    { op: 'layer_norm', shape: [2, 5000], params: { eps: 1e-5, correction: 1, normalizedShape: [5000] } },
    {
      op: 'layer_norm',
      shape: [2, 3, 1500],
      params: { eps: 1e-5, correction: 0, normalizedShape: [3, 1500] },
    },
    { op: 'group_norm', shape: [2, 4, 1300], params: { eps: 1e-5, correction: 0, numGroups: 2 } },
    { op: 'group_norm', shape: [1, 3, 4500], params: { eps: 1e-5, correction: 1, numGroups: 1 } },
    { op: 'instance_norm', shape: [2, 2, 4500], params: { eps: 1e-5, correction: 0 } },
    { op: 'instance_norm', shape: [1, 2, 50, 90], params: { eps: 1e-3, correction: 2 } },
    { op: 'rms_norm', shape: [2, 5000], params: { eps: 2 ** -52, normalizedShape: [5000] } },
    { op: 'rms_norm', shape: [3, 2, 2100], params: { eps: 1e-6, normalizedShape: [2, 2100] } },
  ];
  for (const { op, shape, params } of layouts) {
    for (const dtype of ['float64', 'float32'] as const) {
      for (const shift of [0, 1e6]) {
        it(`${op} ${JSON.stringify(shape)} ${dtype}, x = ${shift} + 2·N(0, 1)`, () => {
          const rand = rng(product(shape) + shift);
          const round = (a: Float64Array) => (dtype === 'float32' ? a.map(Math.fround) : a);
          const x = round(randn(rand, product(shape), 2, shift));
          const dy = round(randn(rand, product(shape)));
          const k = product(affineShape(op, shape, params));
          const gamma = round(Float64Array.from({ length: k }, (_, i) => 1 + 0.25 * Math.sin(i)));
          const beta =
            op === 'rms_norm' ? undefined : round(Float64Array.from({ length: k }, (_, i) => Math.cos(i)));
          const exp = reference(op, shape, params, x, dy, gamma, beta);
          const tol = dtype === 'float64' ? { rtol: 1e-9, atol: 1e-9 } : TOL.float32;
          const scaled = (a: ArrayLike<number>) => ({ rtol: tol.rtol, atol: tol.atol * (1 + maxAbs(a)) });

          const f = run('forward', op, shape, { x, gamma, beta }, params, dtype);
          expectTensor(f, 'y', shape, exp.y, dtype, scaled(exp.y));
          const sNames = SAVED[op];
          const saved = Object.fromEntries(sNames.map((k) => [k, data(f, k)]));
          // Saved float32 statistics are rounded to float32: a mean near 1e6 is then off by up to
          // 2⁻²⁴·1e6 ≈ 0.03, 1.5% of σ = 2, whatever the kernel does (PyTorch saves float32 too).
          const savedToo = dtype === 'float64' || shift === 0;
          for (const extra of savedToo ? [{}, saved] : [{}]) {
            const b = run('backward', op, shape, { x, dy, gamma, ...extra }, params, dtype);
            expectTensor(b, 'dx', shape, exp.dx, dtype, scaled(exp.dx));
            const aShape = affineShape(op, shape, params);
            expectTensor(b, 'dgamma', aShape, exp.dgamma, dtype, scaled(exp.dgamma));
            if (op !== 'rms_norm') expectTensor(b, 'dbeta', aShape, exp.dbeta, dtype, scaled(exp.dbeta));
          }
        });
      }
    }
  }
});

describe('non-finite values stay in their group', () => {
  for (const op of ['layer_norm', 'group_norm', 'instance_norm', 'rms_norm'] as const) {
    it(`${op}: NaN or ±Infinity in the second group leaves the first bit-identical (short and long groups)`, () => {
      for (const half of [8, 80, 5000]) {
        const { shape, params } = {
          layer_norm: { shape: [2, half], params: { normalizedShape: [half] } },
          rms_norm: { shape: [2, half], params: { normalizedShape: [half] } },
          group_norm: { shape: [2, 2, half / 2], params: { numGroups: 1 } },
          instance_norm: { shape: [2, 1, half], params: {} },
        }[op];
        const n = 2 * half;
        const rand = rng(half);
        const x = randn(rand, n, 3, 1);
        const dy = randn(rand, n);
        const clean = {
          f: run('forward', op, shape, { x }, params),
          b: run('backward', op, shape, { x, dy }, params),
        };
        for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
          const xBad = Float64Array.from(x);
          xBad[n - 3] = bad;
          const f = run('forward', op, shape, { x: xBad }, params);
          const b = run('backward', op, shape, { x: xBad, dy }, params);
          const label = `${half} ${bad}`;
          for (const [r, ref, k] of [
            [f, clean.f, 'y'],
            [b, clean.b, 'dx'],
          ] as const) {
            expect(Array.from(data(r, k).slice(0, half)), `${label} ${k}`).toEqual(
              Array.from(data(ref, k).slice(0, half)),
            );
            // The bad value's own output is NaN (for rms_norm ±Infinity·0 too).
            expect(data(r, k)[n - 3], `${label} ${k}`).toBeNaN();
          }
        }
      }
    });
  }
});
