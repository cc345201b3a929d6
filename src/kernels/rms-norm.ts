import { allocate, type FloatArray } from '../tensor/tensor.js';
import { rowSizes } from './layer-norm.js';
import { cast, f64, f64Optional, type OpKernels } from './task.js';

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
  function stats(x: FloatArray, rows: number, R: number, eps: number): Float64Array {
    const rrms = new Float64Array(rows);
    for (let r = 0, base = 0; r < rows; r++, base += R) {
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
    rows: number,
    R: number,
    rrms: Float64Array,
    gamma: Float64Array | null,
  ) {
    for (let r = 0, base = 0; r < rows; r++, base += R) {
      const s = rrms[r]!;
      if (gamma) for (let i = 0; i < R; i++) y[base + i] = x[base + i]! * s * gamma[i]!;
      else for (let i = 0; i < R; i++) y[base + i] = x[base + i]! * s;
    }
  }

  function backward(
    x: FloatArray,
    dy: FloatArray,
    rows: number,
    R: number,
    rrms: Float64Array,
    gamma: Float64Array | null,
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

  return { stats, forward, backward };
}

const f32 = create();
const f64k = create();
const kernels = (x: FloatArray) => (x instanceof Float32Array ? f32 : f64k);

export interface RmsParams {
  eps: number;
  normalizedShape: number[];
}

export const rmsNorm: OpKernels<RmsParams> = {
  forward({ dtype, shape, tensors: t, params: p }) {
    const { rows, R, statsShape } = rowSizes(shape, p.normalizedShape);
    const x = cast(t.x!, dtype);
    const k = kernels(x);
    const y = allocate(dtype, x.length);
    const rrms = k.stats(x, rows, R, p.eps);
    k.forward(x, y, rows, R, rrms, f64Optional(t.gamma, dtype));
    return {
      tensors: { y: { shape, data: y }, rrms: { shape: statsShape, data: cast(rrms, dtype) } },
      scalars: {},
    };
  },
  backward({ dtype, shape, tensors: t, params: p }) {
    const { rows, R } = rowSizes(shape, p.normalizedShape);
    const x = cast(t.x!, dtype);
    const k = kernels(x);
    const dy = cast(t.dy!, dtype);
    const rrms = t.rrms ? f64(cast(t.rrms, dtype)) : k.stats(x, rows, R, p.eps);
    const dx = allocate(dtype, x.length);
    const dgamma = allocate(dtype, R);
    k.backward(x, dy, rows, R, rrms, f64Optional(t.gamma, dtype), dx, dgamma);
    return {
      tensors: { dx: { shape, data: dx }, dgamma: { shape: p.normalizedShape, data: dgamma } },
      scalars: {},
    };
  },
};
