import { allocate, type FloatArray } from '../tensor/tensor.js';
import { rowSizes } from './layer-norm.js';
import { cast, castOptional, type OpKernels } from './task.js';

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
export function rmsNormStats(x: FloatArray, rows: number, R: number, eps: number): Float64Array {
  const rrms = new Float64Array(rows);
  for (let r = 0, base = 0; r < rows; r++, base += R) {
    let s0 = 0;
    let s1 = 0;
    let i = 0;
    for (; i + 1 < R; i += 2) {
      const a = x[base + i]!;
      const b = x[base + i + 1]!;
      s0 += a * a;
      s1 += b * b;
    }
    if (i < R) s0 += x[base + i]! * x[base + i]!;
    rrms[r] = 1 / Math.sqrt((s0 + s1) / R + eps);
  }
  return rrms;
}

export function rmsNormForward(
  x: FloatArray,
  y: FloatArray,
  rows: number,
  R: number,
  rrms: ArrayLike<number>,
  gamma: FloatArray | null,
) {
  for (let r = 0, base = 0; r < rows; r++, base += R) {
    const s = rrms[r]!;
    for (let i = 0; i < R; i++) y[base + i] = gamma ? x[base + i]! * s * gamma[i]! : x[base + i]! * s;
  }
}

export function rmsNormBackward(
  x: FloatArray,
  dy: FloatArray,
  rows: number,
  R: number,
  rrms: ArrayLike<number>,
  gamma: FloatArray | null,
  dx: FloatArray,
  dgamma: FloatArray,
) {
  const dg = new Float64Array(R);
  for (let r = 0, base = 0; r < rows; r++, base += R) {
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
  dgamma.set(dg);
}

export interface RmsParams {
  eps: number;
  normalizedShape: number[];
}

export const rmsNorm: OpKernels<RmsParams> = {
  forward({ dtype, shape, tensors: t, params: p }) {
    const { rows, R, statsShape } = rowSizes(shape, p.normalizedShape);
    const x = cast(t.x!, dtype);
    const y = allocate(dtype, x.length);
    const rrms = rmsNormStats(x, rows, R, p.eps);
    rmsNormForward(x, y, rows, R, rrms, castOptional(t.gamma, dtype));
    return {
      tensors: { y: { shape, data: y }, rrms: { shape: statsShape, data: cast(rrms, dtype) } },
      scalars: {},
    };
  },
  backward({ dtype, shape, tensors: t, params: p }) {
    const { rows, R } = rowSizes(shape, p.normalizedShape);
    const x = cast(t.x!, dtype);
    const dy = cast(t.dy!, dtype);
    const rrms = t.rrms ? cast(t.rrms, dtype) : rmsNormStats(x, rows, R, p.eps);
    const dx = allocate(dtype, x.length);
    const dgamma = allocate(dtype, R);
    rmsNormBackward(x, dy, rows, R, rrms, castOptional(t.gamma, dtype), dx, dgamma);
    return {
      tensors: { dx: { shape, data: dx }, dgamma: { shape: p.normalizedShape, data: dgamma } },
      scalars: {},
    };
  },
};
