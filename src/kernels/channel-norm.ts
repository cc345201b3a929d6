import type { FloatArray } from '../tensor/tensor.js';

/**
 * What batch, instance and group norm share: `x` laid out as `[N, C, inner]`,
 * a per-channel affine (gamma_c, beta_c), and groups made of whole runs — the
 * `inner` contiguous values of channel c of sample n, "run" r = n·C + c:
 *
 *   batch norm     group(n, c) = c                    C groups of N·inner values
 *   instance norm  group(n, c) = n·C + c              N·C groups of inner values
 *   group norm     group(n, c) = n·G + ⌊c / (C/G)⌋    N·G groups of (C/G)·inner values
 *
 * Loops walk the runs in memory order; per-group sums are kept in float64.
 */
export interface ChannelLayout {
  N: number;
  C: number;
  inner: number;
  groups: number;
  /** m: values per group. */
  size: number;
  /** group of run r = n·C + c, length N·C */
  group: Int32Array;
}

function layout(
  N: number,
  C: number,
  inner: number,
  groups: number,
  groupOf: (n: number, c: number) => number,
) {
  const group = new Int32Array(N * C);
  for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) group[n * C + c] = groupOf(n, c);
  return { N, C, inner, groups, size: (N * C * inner) / groups, group };
}

export const batchLayout = (N: number, C: number, inner: number): ChannelLayout =>
  layout(N, C, inner, C, (_n, c) => c);

export const instanceLayout = (N: number, C: number, inner: number): ChannelLayout =>
  layout(N, C, inner, N * C, (n, c) => n * C + c);

export const groupLayout = (N: number, C: number, inner: number, G: number): ChannelLayout =>
  layout(N, C, inner, N * G, (n, c) => n * G + Math.floor(c / (C / G)));

/**
 * Per-group mean and M2 = Σ (x − mean)², two passes in float64: a first mean,
 * then the deviations d from it with the compensated correction
 * M2 = Σ d² − (Σ d)² / m and mean += Σ d / m. Accurate far from zero
 * (1e9 + small noise), never E[x²] − E[x]², and M2 = 0 exactly for a constant group.
 */
export function channelMoments(x: FloatArray, L: ChannelLayout, mean: Float64Array, m2: Float64Array): void {
  const { inner, group, groups, size } = L;
  const runs = group.length;
  const sd = new Float64Array(groups);
  mean.fill(0, 0, groups);
  m2.fill(0, 0, groups);
  for (let r = 0, base = 0; r < runs; r++, base += inner) {
    let s0 = 0;
    let s1 = 0;
    const end = base + inner;
    let i = base;
    for (; i + 1 < end; i += 2) {
      s0 += x[i]!;
      s1 += x[i + 1]!;
    }
    if (i < end) s0 += x[i]!;
    mean[group[r]!]! += s0 + s1;
  }
  for (let g = 0; g < groups; g++) mean[g] = mean[g]! / size;
  for (let r = 0, base = 0; r < runs; r++, base += inner) {
    const g = group[r]!;
    const mu = mean[g]!;
    let s = 0;
    let q0 = 0;
    let q1 = 0;
    const end = base + inner;
    let i = base;
    for (; i + 1 < end; i += 2) {
      const d0 = x[i]! - mu;
      const d1 = x[i + 1]! - mu;
      s += d0 + d1;
      q0 += d0 * d0;
      q1 += d1 * d1;
    }
    if (i < end) {
      const d = x[i]! - mu;
      s += d;
      q0 += d * d;
    }
    sd[g]! += s;
    m2[g]! += q0 + q1;
  }
  for (let g = 0; g < groups; g++) {
    const s = sd[g]!;
    const q = m2[g]! - (s * s) / size;
    // Rounding can leave a tiny negative M2 for a constant group; a variance is never negative.
    m2[g] = q > 0 || Number.isNaN(q) ? q : 0;
    // An infinite mean stays infinite: its deviations are NaN and must not correct it.
    if (Number.isFinite(mean[g]!)) mean[g] = mean[g]! + s / size;
  }
}

/**
 * y = gamma_c · (x − mean_g) · invstd_g + beta_c, subtracting the mean first so
 * that values far from zero keep their precision. `statGroup` maps a run to the
 * index of its statistics (the layout's group, or the channel for running statistics).
 */
export function channelAffine(
  x: FloatArray,
  y: FloatArray,
  L: ChannelLayout,
  mean: ArrayLike<number>,
  invstd: ArrayLike<number>,
  gamma: FloatArray | null,
  beta: FloatArray | null,
  statGroup: Int32Array = L.group,
): void {
  const { C, inner } = L;
  const runs = statGroup.length;
  for (let r = 0, c = 0, base = 0; r < runs; r++, base += inner) {
    const g = statGroup[r]!;
    const mu = mean[g]!;
    const scale = invstd[g]! * (gamma ? gamma[c]! : 1);
    const shift = beta ? beta[c]! : 0;
    const end = base + inner;
    for (let i = base; i < end; i++) y[i] = (x[i]! - mu) * scale + shift;
    if (++c === C) c = 0;
  }
}

/**
 * Backward through y = gamma_c · x̂ + beta_c with x̂ = (x − mean_g) · invstd_g,
 * in closed form. With u = gamma_c · dy (the gradient reaching x̂), per group:
 *
 *   training:  dx = invstd_g · ( u − Σ_g u / m − x̂ · Σ_g (u · x̂) / (m − correction) )
 *   eval:      dx = invstd_g · u          (the statistics are constants)
 *
 * and per channel dgamma_c = Σ dy · x̂, dbeta_c = Σ dy. For batch norm (gamma
 * constant over a group) this is gamma · invstd · (dy − dbeta/m − x̂ · dgamma/(m − correction)).
 */
export interface ChannelBackwardArgs {
  x: FloatArray;
  dy: FloatArray;
  L: ChannelLayout;
  gamma: FloatArray | null;
  mean: ArrayLike<number>;
  invstd: ArrayLike<number>;
  correction: number;
  training: boolean;
  /** Maps a run to its statistics' index; defaults to the layout's groups. */
  statGroup?: Int32Array;
  dx: FloatArray;
  dgamma: FloatArray;
  dbeta: FloatArray;
}

export function channelBackward(a: ChannelBackwardArgs): void {
  const { x, dy, dx, L, gamma, mean, invstd, correction, training } = a;
  const { C, inner, size } = L;
  const statGroup = a.statGroup ?? L.group;
  const runs = statGroup.length;
  const nStats = training ? L.groups : mean.length;
  const su = new Float64Array(nStats);
  const suxh = new Float64Array(nStats);
  const dgamma = new Float64Array(C);
  const dbeta = new Float64Array(C);
  for (let r = 0, c = 0, base = 0; r < runs; r++, base += inner) {
    const g = statGroup[r]!;
    const mu = mean[g]!;
    let sdy = 0;
    let sdyx = 0;
    const end = base + inner;
    for (let i = base; i < end; i++) {
      const d = dy[i]!;
      sdy += d;
      sdyx += d * (x[i]! - mu);
    }
    const sdyxh = sdyx * invstd[g]!;
    const w = gamma ? gamma[c]! : 1;
    dbeta[c]! += sdy;
    dgamma[c]! += sdyxh;
    su[g]! += w * sdy;
    suxh[g]! += w * sdyxh;
    if (++c === C) c = 0;
  }
  for (let c = 0; c < C; c++) {
    a.dgamma[c] = dgamma[c]!;
    a.dbeta[c] = dbeta[c]!;
  }
  for (let r = 0, c = 0, base = 0; r < runs; r++, base += inner) {
    const g = statGroup[r]!;
    const s = invstd[g]!;
    const w = gamma ? gamma[c]! : 1;
    const end = base + inner;
    if (training) {
      const mu = mean[g]!;
      const meanU = su[g]! / size;
      const proj = (suxh[g]! * s) / (size - correction);
      for (let i = base; i < end; i++) dx[i] = s * (w * dy[i]! - meanU - (x[i]! - mu) * proj);
    } else {
      const k = s * w;
      for (let i = base; i < end; i++) dx[i] = dy[i]! * k;
    }
    if (++c === C) c = 0;
  }
}
