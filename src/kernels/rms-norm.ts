import type { FloatArray } from '../tensor/tensor.js';
import { rowSizes } from './layer-norm.js';
import { cast, f64, f64Optional, gather, perElementType, sum, whole } from './task.js';

/**
 * RMS normalization (PyTorch's `F.rms_norm`): `x` read as `[rows, R]`, R the
 * product of `normalizedShape`; no centering, no beta:
 *
 *   rrms_r = 1 / sqrt( (1/R) Σ x_r·² + eps )        (eps default: the dtype's machine epsilon)
 *   y      = x · rrms_r · gamma_i
 *
 * Backward, with u = gamma ⊙ dy:
 *
 *   dx = rrms_r · u − rrms_r³ · x · Σ (u · x) / R
 *   dgamma_i = Σ_rows dy · x · rrms_r
 *
 * The mean of squares is accumulated in float64, so float32 values whose
 * squares overflow float32 stay finite.
 *
 * Example: x = [[3, 4]], eps → 0: mean of squares 12.5, rrms ≈ 0.282843, y ≈ [0.848528, 1.131371].
 */
function create() {
  /** rrms of rows [r0, r1) (entries outside the range stay 0). */
  function stats(x: FloatArray, rows: number, R: number, r0: number, r1: number, eps: number): Float64Array {
    const rrms = new Float64Array(rows);
    for (let r = r0, base = r0 * R; r < r1; r++, base += R) {
      let s0 = 0;
      let s1 = 0;
      let i = base;
      const end = base + R;
      for (; i + 1 < end; i += 2) {
        const a = x[i]!;
        const b = x[i + 1]!;
        s0 += a * a;
        s1 += b * b;
      }
      if (i < end) s0 += x[i]! * x[i]!;
      rrms[r] = 1 / Math.sqrt((s0 + s1) / R + eps);
    }
    return rrms;
  }

  function forward(
    x: FloatArray,
    y: FloatArray,
    r0: number,
    r1: number,
    R: number,
    rrms: Float64Array,
    gamma: Float64Array | null,
  ) {
    for (let r = r0, base = r0 * R; r < r1; r++, base += R) {
      const s = rrms[r]!;
      if (gamma) for (let i = 0; i < R; i++) y[base + i] = x[base + i]! * s * gamma[i]!;
      else for (let i = 0; i < R; i++) y[base + i] = x[base + i]! * s;
    }
  }

  /** dx of rows [r0, r1); adds their Σ dy · x · rrms to dg. */
  function backward(
    x: FloatArray,
    dy: FloatArray,
    r0: number,
    r1: number,
    R: number,
    rrms: Float64Array,
    gamma: Float64Array | null,
    dx: FloatArray,
    dg: Float64Array,
  ) {
    for (let r = r0, base = r0 * R; r < r1; r++, base += R) {
      const s = rrms[r]!;
      let sux = 0;
      for (let i = 0; i < R; i++) {
        const d = dy[base + i]!;
        const xi = x[base + i]!;
        sux += (gamma ? gamma[i]! * d : d) * xi;
        dg[i]! += d * xi * s;
      }
      const k = (s * s * s * sux) / R;
      for (let i = 0; i < R; i++) {
        const u = gamma ? gamma[i]! * dy[base + i]! : dy[base + i]!;
        dx[base + i] = s * u - k * x[base + i]!;
      }
    }
  }

  return { stats, forward, backward };
}

const kernels = perElementType(create);

export interface RmsParams {
  eps: number;
  normalizedShape: number[];
}

/** Units are rows; a part normalizes a range of rows. */
export const rmsNorm = whole<RmsParams>({
  units: ({ shape, params: p }) => rowSizes(shape, p.normalizedShape).rows,

  forwardPart({ dtype, shape, tensors: t, params: p }, { begin, end }, y) {
    const { rows, R } = rowSizes(shape, p.normalizedShape);
    const x = cast(t.x!, dtype);
    const k = kernels(x);
    const rrms = k.stats(x, rows, R, begin, end, p.eps);
    k.forward(x, y, begin, end, R, rrms, f64Optional(t.gamma, dtype));
    return { rrms };
  },

  finishForward({ dtype, shape, params: p }, done, y) {
    const { rows, statsShape } = rowSizes(shape, p.normalizedShape);
    const rrms = gather(done, 'rrms', rows);
    return {
      tensors: { y: { shape, data: y }, rrms: { shape: statsShape, data: cast(rrms, dtype) } },
      scalars: {},
    };
  },

  backwardPart({ dtype, shape, tensors: t, params: p }, { begin, end }, dx) {
    const { rows, R } = rowSizes(shape, p.normalizedShape);
    const x = cast(t.x!, dtype);
    const k = kernels(x);
    const rrms = t.rrms ? f64(cast(t.rrms, dtype)) : k.stats(x, rows, R, begin, end, p.eps);
    const dgamma = new Float64Array(R);
    k.backward(x, cast(t.dy!, dtype), begin, end, R, rrms, f64Optional(t.gamma, dtype), dx, dgamma);
    return { dgamma };
  },

  finishBackward({ dtype, shape, params: p }, done, dx) {
    const dgamma = { shape: p.normalizedShape, data: cast(sum(done, 'dgamma'), dtype) };
    return { tensors: { dx: { shape, data: dx }, dgamma }, scalars: {} };
  },
});
