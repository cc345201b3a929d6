import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { DType } from '../../src/tensor/tensor.js';
import { maxAbs, product, randn, rng } from './numeric.js';
import {
  affineShape,
  CENTERED,
  data,
  groups,
  MACHINE_EPS,
  OPS,
  type Op,
  type Params,
  refMoments,
  run,
} from './ops-task.js';

/**
 * Properties every normalization must have whatever the data, through runKernel,
 * with unit gamma and zero beta (sent explicitly or omitted). Each tolerance is
 * derived from the rounding of the computation, never tuned:
 *
 * - u64 = 2⁻⁵³ bounds one float64 rounding; float32 cases add the rounding of the
 *   inputs (u_in = 2⁻²⁴, x' = fl32(x + k) or fl32(s·x)) and of the output y (u_out = 2⁻²⁴).
 * - A deviation d = x − mean computed in float64 is off by at most a few u64·max|x|,
 *   so x̂ = d·invstd is off by ~u64·max|x|/σ, σ = sqrt(M2/m), plus a relative few u64;
 *   a change Δd of the deviations changes x̂ by at most Δd/σ·(1 + |x̂|).
 */

const U64 = 2 ** -53;
const U32 = 2 ** -24;
const uOut = (dtype: DType) => (dtype === 'float32' ? U32 : 0);
const uIn = (dtype: DType) => (dtype === 'float32' ? U32 : U64);
const asStored = (x: Float64Array, dtype: DType) => (dtype === 'float32' ? x.map(Math.fround) : x);

interface Layout {
  op: Op;
  shape: number[];
  params: Params;
}

const dimsArb = (n: number, max = 4) => fc.array(fc.integer({ min: 1, max }), { minLength: n, maxLength: n });

/** A layout of each op: layer/rms norm x rank 1–4 with 1..rank normalized dims; group norm rank 2–4; instance norm rank 3–5. */
function layoutArb(
  op: Op,
  eps: fc.Arbitrary<number>,
  correction: fc.Arbitrary<number>,
): fc.Arbitrary<Layout> {
  switch (op) {
    case 'layer_norm':
    case 'rms_norm':
      return fc
        .tuple(fc.integer({ min: 1, max: 4 }), dimsArb(4, 5), fc.integer({ min: 1, max: 4 }), eps, correction)
        .map(([rank, d, k, e, c]) => {
          const shape = d.slice(0, rank);
          const normalizedShape = shape.slice(rank - Math.min(k, rank));
          const params: Params =
            op === 'rms_norm' ? { eps: e, normalizedShape } : { eps: e, correction: c, normalizedShape };
          return { op, shape, params };
        });
    case 'group_norm':
      return fc
        .tuple(
          fc.integer({ min: 2, max: 4 }),
          dimsArb(2, 3),
          fc.integer({ min: 1, max: 4 }),
          dimsArb(2),
          eps,
          correction,
        )
        .map(([rank, [N, G], per, spatial, e, c]) => ({
          op,
          shape: [N!, G! * per, ...spatial.slice(0, rank - 2)],
          params: { eps: e, correction: c, numGroups: G },
        }));
    case 'instance_norm':
      return fc
        .tuple(fc.integer({ min: 3, max: 5 }), dimsArb(2, 3), dimsArb(3), eps, correction)
        .map(([rank, [N, C], spatial, e, c]) => ({
          op,
          shape: [N!, C!, ...spatial.slice(0, rank - 2)],
          params: { eps: e, correction: c, training: true, momentum: 0.1, numBatchesTracked: 0 },
        }));
  }
}

/** m − correction ≥ 1 in every group (what the request schema enforces). */
const valid = ({ op, shape, params }: Layout) =>
  op === 'rms_norm' || groups(op, shape, params)[0]!.length > (params.correction as number);

const epsArb = fc.constantFrom(1e-5, 1e-3, 0.1, 2 ** -23);
const dtypeArb = fc.constantFrom<DType>('float64', 'float32');
/** x = shift + scale · N(0, 1): far from zero, tiny and huge spreads. */
const dataArb = fc.record({
  seed: fc.integer(),
  scale: fc.constantFrom(1e-3, 0.1, 1, 30, 1e3),
  shift: fc.constantFrom(0, 0.5, -10, 1e4),
});

/** Unit gamma and zero beta: sent explicitly or omitted (the defaults), per `explicit`. */
function unitAffine(l: Layout, explicit: boolean) {
  if (!explicit) return {};
  const k = product(affineShape(l.op, l.shape, l.params));
  const gamma = new Float64Array(k).fill(1);
  return l.op === 'rms_norm' ? { gamma } : { gamma, beta: new Float64Array(k) };
}

function forwardY(l: Layout, x: ArrayLike<number>, dtype: DType, explicit: boolean) {
  return data(run('forward', l.op, l.shape, { x, ...unitAffine(l, explicit) }, l.params, dtype), 'y');
}

const at = (a: ArrayLike<number>, idx: number[]) => idx.map((i) => a[i]!);

describe('invariants (fast-check, every op, unit gamma and zero beta)', () => {
  for (const op of OPS) {
    const centered = op !== 'rms_norm';
    const title = centered
      ? `${op}: per group mean(y) = 0 and mean(y²) = (M2/m) / (M2/(m − c) + eps)`
      : 'rms_norm: per row mean(y²) = ms / (ms + eps), ms = mean(x²)';
    it(title, () => {
      fc.assert(
        fc.property(
          layoutArb(op, epsArb, fc.constantFrom(0, 1, 2)).filter(valid),
          dataArb,
          dtypeArb,
          fc.boolean(),
          (l, d, dtype, explicit) => {
            const x = asStored(randn(rng(d.seed), product(l.shape), d.scale, d.shift), dtype);
            const y = forwardY(l, x, dtype, explicit);
            const eps = l.params.eps as number;
            const c = centered ? (l.params.correction as number) : 0;
            for (const idx of groups(op, l.shape, l.params)) {
              const ref = refMoments(x, idx);
              const { m } = ref;
              const yg = at(y, idx);
              const my = maxAbs(yg);
              const meanY = yg.reduce((a, v) => a + v, 0) / m;
              const meanY2 = yg.reduce((a, v) => a + v * v, 0) / m;
              const label = `${op} ${dtype} ${JSON.stringify(l)} ${JSON.stringify(d)}`;
              if (centered) {
                const expected = ref.m2 / m / (ref.m2 / (m - c) + eps);
                // Error of each ŷ: the deviations' (relative to σ) plus a few relative roundings.
                const sigmaInv = ref.m2 > 0 ? Math.sqrt(m / ref.m2) : 0;
                const dyhat = 8 * U64 * maxAbs(at(x, idx)) * sigmaInv + (8 * U64 + uOut(dtype)) * my;
                expect(Math.abs(meanY), label).toBeLessThanOrEqual(dyhat + 2 * m * U64 * my);
                const tolExpected = expected * (4 * U64 * maxAbs(at(x, idx)) * sigmaInv + 4 * m * U64);
                expect(Math.abs(meanY2 - expected), label).toBeLessThanOrEqual(
                  2 * my * dyhat + 2 * m * U64 * my * my + tolExpected,
                );
              } else {
                const expected = ref.ms / (ref.ms + eps);
                expect(Math.abs(meanY2 - expected), label).toBeLessThanOrEqual(
                  my * my * (16 * m * U64 + 4 * uOut(dtype)) + 4 * m * U64 * expected,
                );
              }
            }
          },
        ),
        { numRuns: 150 },
      );
    });
  }

  for (const op of CENTERED) {
    it(`${op}: shifting x by a constant leaves y unchanged (to rounding of x + k)`, () => {
      fc.assert(
        fc.property(
          layoutArb(op, epsArb, fc.constantFrom(0, 1, 2)).filter(valid),
          dataArb,
          fc.constantFrom(0.5, -3, 1e3, -1e6),
          fc.double({ min: 0.5, max: 1, noNaN: true }),
          dtypeArb,
          fc.boolean(),
          (l, d, k0, frac, dtype, explicit) => {
            const k = k0 * frac;
            const x = asStored(randn(rng(d.seed), product(l.shape), d.scale, d.shift), dtype);
            const y = forwardY(l, x, dtype, explicit);
            const ys = forwardY(
              l,
              x.map((v) => v + k),
              dtype,
              explicit,
            );
            for (const idx of groups(op, l.shape, l.params)) {
              const ref = refMoments(x, idx);
              if (ref.m2 === 0) continue; // a constant group gives exactly beta either way (tested in ops.test.ts)
              const A = maxAbs(at(x, idx)) + Math.abs(k);
              const my = maxAbs(at(y, idx));
              // Δd ≤ 2·u_in·A (rounding of x + k) + 8·u64·A (the kernel's float64 deviations).
              const dd = (2 * uIn(dtype) + 8 * U64) * A;
              const tol = 2 * dd * Math.sqrt(ref.m / ref.m2) * (1 + my) + 2 * uOut(dtype) * my + 8 * U64 * my;
              for (const i of idx) {
                expect(
                  Math.abs(ys[i]! - y[i]!),
                  `${op} ${dtype} k=${k} ${JSON.stringify(l)} [${i}]`,
                ).toBeLessThanOrEqual(tol);
              }
            }
          },
        ),
        { numRuns: 150 },
      );
    });
  }

  for (const op of OPS) {
    it(`${op}: scaling x by s > 0 changes y only through eps: y(s·x) = y(x)·sqrt((v + eps)/(v + eps/s²))`, () => {
      fc.assert(
        fc.property(
          layoutArb(op, epsArb, fc.constantFrom(0, 1, 2)).filter(valid),
          dataArb,
          fc.double({ min: Math.log(1e-2), max: Math.log(1e2), noNaN: true }),
          dtypeArb,
          fc.boolean(),
          (l, d, logS, dtype, explicit) => {
            const s = Math.exp(logS);
            const x = asStored(randn(rng(d.seed), product(l.shape), d.scale, d.shift), dtype);
            const y = forwardY(l, x, dtype, explicit);
            const ys = forwardY(
              l,
              x.map((v) => v * s),
              dtype,
              explicit,
            );
            const eps = l.params.eps as number;
            const c = op === 'rms_norm' ? 0 : (l.params.correction as number);
            for (const idx of groups(op, l.shape, l.params)) {
              const ref = refMoments(x, idx);
              // v: what eps is added to — the variance (divisor m − c), or the mean of squares.
              const v = op === 'rms_norm' ? ref.ms : ref.m2 / (ref.m - c);
              const spread = op === 'rms_norm' ? ref.m * ref.ms : ref.m2;
              if (spread === 0) continue;
              const my = maxAbs(at(y, idx));
              const dd = (2 * uIn(dtype) + 8 * U64) * maxAbs(at(x, idx));
              const round =
                2 * dd * Math.sqrt(ref.m / spread) * (1 + my) + 2 * uOut(dtype) * my + 8 * U64 * my;
              // |1 − sqrt(a)| ≤ |1 − a| = eps·|1 − s⁻²| / (v + eps/s²) ≤ eps·|1 − s⁻²| / v.
              const epsBound = (eps * Math.abs(1 - s ** -2)) / v;
              const factor = Math.sqrt((v + eps) / (v + eps / (s * s)));
              const label = `${op} ${dtype} s=${s} ${JSON.stringify(l)} ${JSON.stringify(d)}`;
              for (const i of idx) {
                expect(Math.abs(ys[i]! - y[i]!), `${label} [${i}] unchanged up to eps`).toBeLessThanOrEqual(
                  Math.abs(y[i]!) * epsBound + round,
                );
                expect(
                  Math.abs(ys[i]! - y[i]! * factor),
                  `${label} [${i}] exact eps factor`,
                ).toBeLessThanOrEqual(round * (1 + factor));
              }
            }
          },
        ),
        { numRuns: 150 },
      );
    });
  }

  for (const op of OPS) {
    it(`${op}: y (and dx) finite for every finite float32 x, and for float64 |x| ≤ 1e150`, () => {
      // float64 beyond ~1e154: (x − mean)² overflows float64; PyTorch returns NaN there as well.
      const valuesArb = (dtype: DType) =>
        dtype === 'float32'
          ? fc.float({ noNaN: true, noDefaultInfinity: true })
          : fc.double({ min: -1e150, max: 1e150, noNaN: true });
      fc.assert(
        fc.property(
          layoutArb(op, epsArb, fc.constantFrom(0, 1)).filter(valid),
          dtypeArb.chain((dtype) =>
            fc.tuple(fc.constant(dtype), fc.array(valuesArb(dtype), { minLength: 300, maxLength: 300 })),
          ),
          fc.boolean(),
          (l, [dtype, pool], explicit) => {
            const n = product(l.shape);
            const x = Float64Array.from({ length: n }, (_, i) => pool[i % pool.length]!);
            const y = forwardY(l, x, dtype, explicit);
            const label = `${op} ${dtype} ${JSON.stringify(l)}`;
            expect(y.every(Number.isFinite), label).toBe(true);
            const dy = Float64Array.from({ length: n }, (_, i) => ((i % 7) - 3) / 4);
            const b = run('backward', op, l.shape, { x, dy, ...unitAffine(l, explicit) }, l.params, dtype);
            expect(data(b, 'dx').every(Number.isFinite), label).toBe(true);
          },
        ),
        { numRuns: 200 },
      );
    });
  }

  it('rms_norm default eps is the machine epsilon of the dtype (sanity of the helper the properties use)', () => {
    expect(MACHINE_EPS).toEqual({ float64: Number.EPSILON, float32: 2 ** -23 });
  });
});
