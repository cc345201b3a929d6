import type { FloatArray } from '../tensor/tensor.js';

/**
 * Mean and sum of squared deviations (M2) of one group of values laid out as
 * `blocks` runs of `len` contiguous elements, the first at `start`, each
 * `stride` after the previous (batch norm's channel c in `[N, C, inner]` is
 * `blocks = N, len = inner, start = c·inner, stride = C·inner`; a row of layer
 * norm is a single block).
 *
 * Two passes in float64: a first estimate of the mean, then the deviations from
 * it with the compensated correction
 *
 *   M2 = Σ d² − (Σ d)² / m,   mean = mean₀ + (Σ d) / m,   d = x − mean₀
 *
 * which stays accurate far from zero (1e9 + small noise), unlike
 * E[x²] − E[x]², and gives M2 = 0 exactly for a constant group.
 *
 * Example: x = [1, 2, 3, 4] → mean = 2.5, M2 = 5 (var = 5/3 with correction 1).
 *
 * Writes the results to `out[0]` (mean) and `out[1]` (M2).
 */
export function moments(
  x: FloatArray,
  start: number,
  blocks: number,
  len: number,
  stride: number,
  out: Float64Array,
): void {
  const m = blocks * len;
  let s0 = 0;
  let s1 = 0;
  for (let b = 0, base = start; b < blocks; b++, base += stride) {
    const end = base + len;
    let i = base;
    for (; i + 1 < end; i += 2) {
      s0 += x[i]!;
      s1 += x[i + 1]!;
    }
    if (i < end) s0 += x[i]!;
  }
  const mean0 = (s0 + s1) / m;
  let sd = 0;
  let sd2a = 0;
  let sd2b = 0;
  for (let b = 0, base = start; b < blocks; b++, base += stride) {
    const end = base + len;
    let i = base;
    for (; i + 1 < end; i += 2) {
      const d0 = x[i]! - mean0;
      const d1 = x[i + 1]! - mean0;
      sd += d0 + d1;
      sd2a += d0 * d0;
      sd2b += d1 * d1;
    }
    if (i < end) {
      const d = x[i]! - mean0;
      sd += d;
      sd2a += d * d;
    }
  }
  const m2 = sd2a + sd2b - (sd * sd) / m;
  // An infinite mean stays infinite: its deviations are NaN and must not correct it.
  out[0] = Number.isFinite(mean0) ? mean0 + sd / m : mean0;
  // Rounding can leave a tiny negative M2 for a constant group; a variance is never negative.
  out[1] = m2 > 0 || Number.isNaN(m2) ? m2 : 0;
}

/**
 * The two reductions of every normalization's backward pass over one group
 * (same layout as {@link moments}):
 *
 *   out[0] = Σ dy,   out[1] = Σ dy·(x − mean)
 *
 * from which dbeta = out[0] and dgamma = out[1]·invstd for channel-wise affines.
 */
export function gradSums(
  x: FloatArray,
  dy: FloatArray,
  start: number,
  blocks: number,
  len: number,
  stride: number,
  mean: number,
  out: Float64Array,
): void {
  let sdy = 0;
  let sdyx = 0;
  for (let b = 0, base = start; b < blocks; b++, base += stride) {
    const end = base + len;
    for (let i = base; i < end; i++) {
      const g = dy[i]!;
      sdy += g;
      sdyx += g * (x[i]! - mean);
    }
  }
  out[0] = sdy;
  out[1] = sdyx;
}
