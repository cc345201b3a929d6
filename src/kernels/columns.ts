import type { FloatArray } from '../tensor/tensor.js';
import type { ChannelBackwardArgs } from './channel-norm.js';
import { cleanM2 } from './chunk.js';

/**
 * The column fast path of the channel ops: `x` of shape [N, C] (no spatial dims)
 * normalized per channel, as batch norm does (and every op in eval mode). Each
 * channel is a column, so the loops run down the rows with one accumulator per
 * column, in memory order; the math is the one of channel-norm.ts:
 *
 *   two passes per column (mean, then Σ d and Σ d² about it, compensated),
 *   y = (x − mean_c) · invstd_c · gamma_c + beta_c,
 *   dx = invstd_c · (gamma_c·dy − Σ gamma_c·dy / N − x̂ · Σ gamma_c·dy·x̂ / (N − correction)).
 *
 * Only columns [c0, c1) are touched (one part of a split request).
 */
export function columnFunctions() {
  function moments(
    x: FloatArray,
    N: number,
    C: number,
    mean: Float64Array,
    m2: Float64Array,
    c0: number,
    c1: number,
  ): void {
    const sum = new Float64Array(C);
    for (let n = 0, base = 0; n < N; n++, base += C) for (let c = c0; c < c1; c++) sum[c]! += x[base + c]!;
    for (let c = c0; c < c1; c++) {
      mean[c] = sum[c]! / N;
      if (Number.isFinite(mean[c]!)) continue;
      // The sum overflowed (values near 1e308) or the column holds ±Infinity/NaN: sum x/N instead.
      let s = 0;
      for (let n = 0, i = c; n < N; n++, i += C) s += x[i]! / N;
      mean[c] = s;
    }
    const sd = new Float64Array(C);
    const sq = new Float64Array(C);
    for (let n = 0, base = 0; n < N; n++, base += C) {
      for (let c = c0; c < c1; c++) {
        const d = x[base + c]! - mean[c]!;
        sd[c]! += d;
        sq[c]! += d * d;
      }
    }
    for (let c = c0; c < c1; c++) {
      const s = sd[c]!;
      // An infinite mean stays infinite: its deviations are NaN and must not correct it.
      if (Number.isFinite(mean[c]!)) mean[c] = mean[c]! + s / N;
      m2[c] = cleanM2(sq[c]! - (s * s) / N, mean[c]!);
    }
  }

  function affine(
    x: FloatArray,
    y: FloatArray,
    N: number,
    C: number,
    mean: Float64Array,
    invstd: Float64Array,
    gamma: Float64Array | null,
    beta: Float64Array | null,
    c0: number,
    c1: number,
  ): void {
    const scale = new Float64Array(C);
    const shift = new Float64Array(C);
    for (let c = c0; c < c1; c++) {
      scale[c] = invstd[c]! * (gamma ? gamma[c]! : 1);
      shift[c] = beta ? beta[c]! : 0;
    }
    for (let n = 0, base = 0; n < N; n++, base += C) {
      for (let c = c0; c < c1; c++) y[base + c] = (x[base + c]! - mean[c]!) * scale[c]! + shift[c]!;
    }
  }

  function backward(a: ChannelBackwardArgs): void {
    const { x, dy, dx, L, gamma, training } = a;
    const { N, C } = L;
    const c0 = a.g0 ?? 0;
    const c1 = a.g1 ?? C;
    let stats = a.stats;
    if (!stats) {
      const mean = new Float64Array(C);
      const m2 = new Float64Array(C);
      moments(x, N, C, mean, m2, c0, c1);
      const invstd = Float64Array.from(m2, (q) => 1 / Math.sqrt(q / (N - a.correction) + a.eps));
      stats = { mean, invstd };
    }
    const { mean, invstd } = stats;
    const sdy = new Float64Array(C);
    const sdyx = new Float64Array(C);
    for (let n = 0, base = 0; n < N; n++, base += C) {
      for (let c = c0; c < c1; c++) {
        const d = dy[base + c]!;
        sdy[c]! += d;
        sdyx[c]! += d * (x[base + c]! - mean[c]!);
      }
    }
    // Per column: dbeta, dgamma, and the coefficients of dx = k·dy − bias − (x − mean)·proj.
    const k = new Float64Array(C);
    const bias = new Float64Array(C);
    const proj = new Float64Array(C);
    for (let c = c0; c < c1; c++) {
      const s = invstd[c]!;
      const w = gamma ? gamma[c]! : 1;
      const dgamma = sdyx[c]! * s;
      a.dbeta[c]! += sdy[c]!;
      a.dgamma[c]! += dgamma;
      k[c] = w * s;
      bias[c] = training ? (w * s * sdy[c]!) / N : 0;
      proj[c] = training ? (w * s * s * dgamma) / (N - a.correction) : 0;
    }
    for (let n = 0, base = 0; n < N; n++, base += C) {
      for (let c = c0; c < c1; c++) {
        const i = base + c;
        dx[i] = k[c]! * dy[i]! - bias[c]! - (x[i]! - mean[c]!) * proj[c]!;
      }
    }
  }

  return { moments, affine, backward };
}
