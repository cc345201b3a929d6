import { allocate, type FloatArray } from '../tensor/tensor.js';
import { accumulator, chunkFunctions, cleanM2 } from './chunk.js';
import { cast, f64, f64Optional, type OpKernels } from './task.js';

/**
 * Layer normalization (PyTorch's `F.layer_norm`): `x` is read as `[rows, R]`,
 * R the product of `normalizedShape` (the trailing dims), and each row is one group:
 *
 *   mean_r = (1/R) Σ x_r·,   var_r = Σ (x − mean_r)² / (R − correction)   (default correction 0)
 *   y = gamma_i · (x − mean_r) · invstd_r + beta_i,   invstd_r = 1 / sqrt(var_r + eps)
 *
 * with gamma and beta elementwise over the normalized shape. Backward, with
 * u = gamma ⊙ dy and x̂ = (x − mean_r) · invstd_r:
 *
 *   dx = invstd_r · ( u − Σ u / R − x̂ · Σ (u · x̂) / (R − correction) )
 *   dgamma_i = Σ_rows dy · x̂,   dbeta_i = Σ_rows dy
 *
 * Example: x = [[1, 2, 3, 4]], correction 0: mean 2.5, var 1.25,
 * y ≈ [−1.341635, −0.447212, 0.447212, 1.341635].
 */
export interface RowStats {
  mean: Float64Array;
  var: Float64Array;
  invstd: Float64Array;
}

function create() {
  const { stridedMoments } = chunkFunctions();

  function stats(x: FloatArray, rows: number, R: number, eps: number, correction: number): RowStats {
    const acc = accumulator(rows);
    for (let r = 0; r < rows; r++) stridedMoments(x, r * R, 1, R, R, acc, r);
    const s: RowStats = { mean: acc.mean, var: new Float64Array(rows), invstd: new Float64Array(rows) };
    for (let r = 0; r < rows; r++) {
      const v = cleanM2(acc.m2[r]!, acc.mean[r]!) / (R - correction);
      s.var[r] = v;
      s.invstd[r] = 1 / Math.sqrt(v + eps);
    }
    return s;
  }

  function forward(
    x: FloatArray,
    y: FloatArray,
    rows: number,
    R: number,
    s: RowStats,
    gamma: Float64Array | null,
    beta: Float64Array | null,
  ): void {
    for (let r = 0, base = 0; r < rows; r++, base += R) {
      const mu = s.mean[r]!;
      const k = s.invstd[r]!;
      if (!gamma && !beta) {
        for (let i = 0; i < R; i++) y[base + i] = (x[base + i]! - mu) * k;
        continue;
      }
      for (let i = 0; i < R; i++) {
        const xh = (x[base + i]! - mu) * k;
        y[base + i] = (gamma ? gamma[i]! * xh : xh) + (beta ? beta[i]! : 0);
      }
    }
  }

  function backward(
    x: FloatArray,
    dy: FloatArray,
    rows: number,
    R: number,
    mean: Float64Array,
    invstd: Float64Array,
    gamma: Float64Array | null,
    correction: number,
    dx: FloatArray,
    dgamma: FloatArray,
    dbeta: FloatArray,
  ): void {
    const dg = new Float64Array(R);
    const db = new Float64Array(R);
    for (let r = 0, base = 0; r < rows; r++, base += R) {
      const mu = mean[r]!;
      const s = invstd[r]!;
      let su = 0;
      let suxh = 0;
      for (let i = 0; i < R; i++) {
        const d = dy[base + i]!;
        const xh = (x[base + i]! - mu) * s;
        const u = gamma ? gamma[i]! * d : d;
        su += u;
        suxh += u * xh;
        dg[i]! += d * xh;
        db[i]! += d;
      }
      const meanU = su / R;
      const proj = suxh / (R - correction);
      for (let i = 0; i < R; i++) {
        const xh = (x[base + i]! - mu) * s;
        const u = gamma ? gamma[i]! * dy[base + i]! : dy[base + i]!;
        dx[base + i] = s * (u - meanU - xh * proj);
      }
    }
    dgamma.set(dg);
    dbeta.set(db);
  }

  return { stats, forward, backward };
}

const f32 = create();
const f64k = create();
const kernels = (x: FloatArray) => (x instanceof Float32Array ? f32 : f64k);

export interface RowParams {
  eps: number;
  correction: number;
  normalizedShape: number[];
}

/** `[*leading, *normalizedShape]` → rows, R, and the statistics' shape (the leading dims, [1] when none). */
export function rowSizes(shape: readonly number[], normalizedShape: readonly number[]) {
  const lead = shape.slice(0, shape.length - normalizedShape.length);
  let R = 1;
  for (const d of normalizedShape) R *= d;
  let rows = 1;
  for (const d of lead) rows *= d;
  return { rows, R, statsShape: lead.length > 0 ? lead : [1] };
}

export const layerNorm: OpKernels<RowParams> = {
  forward({ dtype, shape, tensors: t, params: p }) {
    const { rows, R, statsShape } = rowSizes(shape, p.normalizedShape);
    const x = cast(t.x!, dtype);
    const k = kernels(x);
    const y = allocate(dtype, x.length);
    const s = k.stats(x, rows, R, p.eps, p.correction);
    k.forward(x, y, rows, R, s, f64Optional(t.gamma, dtype), f64Optional(t.beta, dtype));
    const out = (data: Float64Array) => ({ shape: statsShape, data: cast(data, dtype) });
    return {
      tensors: { y: { shape, data: y }, mean: out(s.mean), var: out(s.var), invstd: out(s.invstd) },
      scalars: {},
    };
  },
  backward({ dtype, shape, tensors: t, params: p }) {
    const { rows, R } = rowSizes(shape, p.normalizedShape);
    const x = cast(t.x!, dtype);
    const k = kernels(x);
    const dy = cast(t.dy!, dtype);
    const s =
      t.mean && t.invstd
        ? { mean: f64(cast(t.mean, dtype)), invstd: f64(cast(t.invstd, dtype)) }
        : k.stats(x, rows, R, p.eps, p.correction);
    const dx = allocate(dtype, x.length);
    const dgamma = allocate(dtype, R);
    const dbeta = allocate(dtype, R);
    k.backward(
      x,
      dy,
      rows,
      R,
      s.mean,
      s.invstd,
      f64Optional(t.gamma, dtype),
      p.correction,
      dx,
      dgamma,
      dbeta,
    );
    return {
      tensors: {
        dx: { shape, data: dx },
        dgamma: { shape: p.normalizedShape, data: dgamma },
        dbeta: { shape: p.normalizedShape, data: dbeta },
      },
      scalars: {},
    };
  },
};
