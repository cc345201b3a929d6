import type { FloatArray } from '../tensor/tensor.js';

/**
 * Moments of contiguous chunks, the building block of every statistic here.
 *
 * A chunk (at most {@link CHUNK} values, so it stays in L1 cache) is summed twice:
 * a first mean, then the deviations d from it with the compensated correction
 *
 *   M2 = Σ d² − (Σ d)² / n,   mean = mean₀ + (Σ d) / n
 *
 * Chunks are then merged with Chan et al.'s pairwise update
 *
 *   δ = mean_b − mean_a,   mean = mean_a + δ·n_b/n,   M2 = M2_a + M2_b + δ²·n_a·n_b/n
 *
 * which is as stable as a two-pass over the whole group but reads memory once.
 * This stays accurate far from zero (1e9 + small noise), never uses E[x²] − E[x]²,
 * and gives M2 = 0 exactly for constant data.
 *
 * The functions are created once per element type (`chunkFunctions()` is called
 * for float32 and for float64), so each copy sees one kind of typed array and
 * V8 keeps its element accesses monomorphic.
 */
export const CHUNK = 2048;

/** Below this, M2 is rounding residue of constant data, not spread: no two distinct doubles are that close. */
export function cleanM2(m2: number, mean: number): number {
  if (Number.isNaN(m2)) return m2;
  const floor = Math.abs(mean) * 2 ** -54;
  return m2 > floor * floor ? m2 : 0;
}

export interface Accumulator {
  n: Float64Array;
  mean: Float64Array;
  m2: Float64Array;
}

export function accumulator(groups: number): Accumulator {
  return { n: new Float64Array(groups), mean: new Float64Array(groups), m2: new Float64Array(groups) };
}

/** Merges (n, mean, m2) into group g of `acc`. */
export function merge(acc: Accumulator, g: number, n: number, mean: number, m2: number): void {
  const na = acc.n[g]!;
  if (na === 0) {
    acc.n[g] = n;
    acc.mean[g] = mean;
    acc.m2[g] = m2;
    return;
  }
  const total = na + n;
  const ma = acc.mean[g]!;
  const d = mean - ma;
  acc.n[g] = total;
  // An infinite mean stays infinite: δ·n/total would turn ∞ − ∞ into NaN where no NaN was.
  acc.mean[g] = Number.isFinite(d) ? ma + (d * n) / total : ma + mean;
  acc.m2[g] = acc.m2[g]! + m2 + ((d * d * na) / total) * n;
}

export function chunkFunctions() {
  /** The first pass: the plain mean of x[start, start + n), two accumulators to shorten the add chain. */
  function firstMean(x: FloatArray, start: number, n: number): number {
    const end = start + n;
    let s0 = 0;
    let s1 = 0;
    let i = start;
    for (; i + 1 < end; i += 2) {
      s0 += x[i]!;
      s1 += x[i + 1]!;
    }
    if (i < end) s0 += x[i]!;
    const mean = (s0 + s1) / n;
    if (Number.isFinite(mean)) return mean;
    // The sum overflowed (values near 1e308) or x holds ±Infinity/NaN: sum x/n instead,
    // which is finite whenever every x is.
    let s = 0;
    for (let j = start; j < end; j++) s += x[j]! / n;
    return s;
  }

  /** out[0] = mean, out[1] = M2 of x[start, start + n). */
  function chunkMoments(x: FloatArray, start: number, n: number, out: Float64Array): void {
    const end = start + n;
    const mean0 = firstMean(x, start, n);
    let sd = 0;
    let q0 = 0;
    let q1 = 0;
    let i = start;
    for (; i + 1 < end; i += 2) {
      const d0 = x[i]! - mean0;
      const d1 = x[i + 1]! - mean0;
      sd += d0 + d1;
      q0 += d0 * d0;
      q1 += d1 * d1;
    }
    if (i < end) {
      const d = x[i]! - mean0;
      sd += d;
      q0 += d * d;
    }
    // An infinite mean stays infinite: its deviations are NaN and must not correct it.
    const mean = Number.isFinite(mean0) ? mean0 + sd / n : mean0;
    out[0] = mean;
    out[1] = cleanM2(q0 + q1 - (sd * sd) / n, mean);
  }

  /**
   * The backward pass's fused sweep over one chunk: its moments (as chunkMoments)
   * and, in the same loop over the deviations, the gradient sums about the first
   * mean m0. out = [mean, M2, m0, Σ dy, Σ dy · (x − m0)].
   */
  function chunkMomentsDy(x: FloatArray, dy: FloatArray, start: number, n: number, out: Float64Array): void {
    const end = start + n;
    const mean0 = firstMean(x, start, n);
    let sd = 0;
    let q = 0;
    let sg = 0;
    let sgd = 0;
    for (let i = start; i < end; i++) {
      const d = x[i]! - mean0;
      const g = dy[i]!;
      sd += d;
      q += d * d;
      sg += g;
      sgd += g * d;
    }
    const mean = Number.isFinite(mean0) ? mean0 + sd / n : mean0;
    out[0] = mean;
    out[1] = cleanM2(q - (sd * sd) / n, mean);
    out[2] = mean0;
    out[3] = sg;
    out[4] = sgd;
  }

  /** Moments of `blocks` runs of `len` values, `stride` apart from `start`, merged into group g. */
  function stridedMoments(
    x: FloatArray,
    start: number,
    blocks: number,
    len: number,
    stride: number,
    acc: Accumulator,
    g: number,
  ): void {
    const out = new Float64Array(2);
    for (let b = 0, base = start; b < blocks; b++, base += stride) {
      for (let at = 0; at < len; at += CHUNK) {
        const n = Math.min(CHUNK, len - at);
        chunkMoments(x, base + at, n, out);
        merge(acc, g, n, out[0]!, out[1]!);
      }
    }
  }

  return { chunkMoments, chunkMomentsDy, stridedMoments };
}
