import type { FloatArray } from '../tensor/tensor.js';
import { accumulator, chunkFunctions, cleanM2 } from './chunk.js';
import { cast, f64, f64Optional, gather, perElementType, sum, whole } from './task.js';

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

  /** Mean and M2 of rows [r0, r1) (entries outside the range stay 0). */
  function moments(x: FloatArray, rows: number, R: number, r0: number, r1: number) {
    const acc = accumulator(rows);
    for (let r = r0; r < r1; r++) {
      stridedMoments(x, r * R, 1, R, R, acc, r);
      acc.m2[r] = cleanM2(acc.m2[r]!, acc.mean[r]!);
    }
    return { mean: acc.mean, m2: acc.m2 };
  }

  function forward(
    x: FloatArray,
    y: FloatArray,
    r0: number,
    r1: number,
    R: number,
    s: { mean: Float64Array; invstd: Float64Array },
    gamma: Float64Array | null,
    beta: Float64Array | null,
  ): void {
    for (let r = r0, base = r0 * R; r < r1; r++, base += R) {
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

  /** dx of rows [r0, r1); adds their Σ dy · x̂ and Σ dy to dgamma and dbeta. */
  function backward(
    x: FloatArray,
    dy: FloatArray,
    r0: number,
    r1: number,
    R: number,
    mean: Float64Array,
    invstd: Float64Array,
    gamma: Float64Array | null,
    correction: number,
    dx: FloatArray,
    dg: Float64Array,
    db: Float64Array,
  ): void {
    for (let r = r0, base = r0 * R; r < r1; r++, base += R) {
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
  }

  return { moments, forward, backward };
}

const kernels = perElementType(create);

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

function finishStats(
  mean: Float64Array,
  m2: Float64Array,
  R: number,
  eps: number,
  correction: number,
): RowStats {
  const v = Float64Array.from(m2, (q) => q / (R - correction));
  return { mean, var: v, invstd: Float64Array.from(v, (q) => 1 / Math.sqrt(q + eps)) };
}

/** Units are rows; a part normalizes a range of rows. */
export const layerNorm = whole<RowParams>({
  units: ({ shape, params: p }) => rowSizes(shape, p.normalizedShape).rows,

  forwardPart({ dtype, shape, tensors: t, params: p }, { begin, end }, y) {
    const { rows, R } = rowSizes(shape, p.normalizedShape);
    const x = cast(t.x!, dtype);
    const k = kernels(x);
    const { mean, m2 } = k.moments(x, rows, R, begin, end);
    const s = finishStats(mean, m2, R, p.eps, p.correction);
    k.forward(x, y, begin, end, R, s, f64Optional(t.gamma, dtype), f64Optional(t.beta, dtype));
    return { mean, m2 };
  },

  finishForward({ dtype, shape, params: p }, done, y) {
    const { rows, R, statsShape } = rowSizes(shape, p.normalizedShape);
    const s = finishStats(gather(done, 'mean', rows), gather(done, 'm2', rows), R, p.eps, p.correction);
    const out = (data: Float64Array) => ({ shape: statsShape, data: cast(data, dtype) });
    return {
      tensors: { y: { shape, data: y }, mean: out(s.mean), var: out(s.var), invstd: out(s.invstd) },
      scalars: {},
    };
  },

  backwardPart({ dtype, shape, tensors: t, params: p }, { begin, end }, dx) {
    const { rows, R } = rowSizes(shape, p.normalizedShape);
    const x = cast(t.x!, dtype);
    const k = kernels(x);
    let s: { mean: Float64Array; invstd: Float64Array };
    if (t.mean && t.invstd) s = { mean: f64(cast(t.mean, dtype)), invstd: f64(cast(t.invstd, dtype)) };
    else {
      const { mean, m2 } = k.moments(x, rows, R, begin, end);
      s = finishStats(mean, m2, R, p.eps, p.correction);
    }
    const dgamma = new Float64Array(R);
    const dbeta = new Float64Array(R);
    const dy = cast(t.dy!, dtype);
    k.backward(
      x,
      dy,
      begin,
      end,
      R,
      s.mean,
      s.invstd,
      f64Optional(t.gamma, dtype),
      p.correction,
      dx,
      dgamma,
      dbeta,
    );
    return { dgamma, dbeta };
  },

  finishBackward({ dtype, shape, params: p }, done, dx) {
    const param = (name: string) => ({ shape: p.normalizedShape, data: cast(sum(done, name), dtype) });
    return {
      tensors: { dx: { shape, data: dx }, dgamma: param('dgamma'), dbeta: param('dbeta') },
      scalars: {},
    };
  },
});
