import type { FloatArray } from '../tensor/tensor.js';
import { accumulator, CHUNK, chunkFunctions, cleanM2, merge } from './chunk.js';
import { columnFunctions } from './columns.js';
import { perElementType } from './task.js';

/**
 * What batch, instance and group norm share: `x` laid out as `[N, C, inner]`,
 * a per-channel affine (gamma_c, beta_c), and groups made of whole runs — the
 * `inner` contiguous values of channel c of sample n, "run" r = n·C + c:
 *
 *   batch norm     group(n, c) = c                    C groups of N·inner values
 *   instance norm  group(n, c) = n·C + c              N·C groups of inner values
 *   group norm     group(n, c) = n·G + ⌊c / (C/G)⌋    N·G groups of (C/G)·inner values
 *
 * Loops walk the runs in memory order; per-group sums are kept in float64;
 * parameters and statistics are float64 arrays, only x, y, dy and dx have the
 * request's element type.
 */
export interface ChannelLayout {
  N: number;
  C: number;
  inner: number;
  groups: number;
  /** m: values per group. */
  size: number;
  /** group of run r = n·C + c, length N·C */
  readonly group: Int32Array;
  /** the group is the channel (batch norm, and every eval mode): [N, C] data has a column fast path */
  byChannel: boolean;
  /** group g is the contiguous block [g·size, (g+1)·size) (instance and group norm) */
  contiguous: boolean;
}

/** A layout whose run → group map is built on first use (the [N, C] column path never needs it). */
function layout(
  N: number,
  C: number,
  inner: number,
  groups: number,
  byChannel: boolean,
  fill: (group: Int32Array) => void,
): ChannelLayout {
  let group: Int32Array | undefined;
  return {
    N,
    C,
    inner,
    groups,
    size: (N * C * inner) / groups,
    byChannel,
    contiguous: !byChannel,
    get group() {
      if (!group) {
        group = new Int32Array(N * C);
        fill(group);
      }
      return group;
    },
  };
}

export const batchLayout = (N: number, C: number, inner: number): ChannelLayout =>
  layout(N, C, inner, C, true, (g) => {
    for (let n = 0, r = 0; n < N; n++) for (let c = 0; c < C; c++) g[r++] = c;
  });

export const instanceLayout = (N: number, C: number, inner: number): ChannelLayout =>
  layout(N, C, inner, N * C, false, (g) => {
    for (let r = 0; r < N * C; r++) g[r] = r;
  });

export const groupLayout = (N: number, C: number, inner: number, G: number): ChannelLayout =>
  layout(N, C, inner, N * G, false, (g) => {
    const perGroup = C / G;
    for (let n = 0, r = 0; n < N; n++) for (let c = 0; c < C; c++) g[r++] = n * G + Math.floor(c / perGroup);
  });

/** Runs shorter than this are summed group-wise in two passes rather than chunk by chunk. */
const MIN_RUN = 16;

export interface ChannelBackwardArgs {
  x: FloatArray;
  dy: FloatArray;
  L: ChannelLayout;
  gamma: Float64Array | null;
  /** The forward statistics; when absent (training mode) they are computed in the same sweep as the sums. */
  stats: { mean: Float64Array; invstd: Float64Array } | null;
  eps: number;
  correction: number;
  training: boolean;
  /** Maps a run to its statistics' index; defaults to the layout's groups. */
  statGroup?: Int32Array;
  /** Only the runs whose statistics' index is in [g0, g1): one part of a request split across workers. */
  g0?: number;
  g1?: number;
  dx: FloatArray;
  /** Sums over this part's runs, per channel: dgamma = Σ dy · x̂, dbeta = Σ dy (added to what is there). */
  dgamma: Float64Array;
  dbeta: Float64Array;
}

function create() {
  const { chunkMoments, chunkMomentsDy, stridedMoments } = chunkFunctions();
  const columns = columnFunctions();

  /**
   * Per-group mean and M2 = Σ (x − mean)²: chunk by chunk (see chunk.ts) when
   * runs are long, else in two passes over each group.
   */
  function moments(
    x: FloatArray,
    L: ChannelLayout,
    mean: Float64Array,
    m2: Float64Array,
    g0 = 0,
    g1 = L.groups,
  ): void {
    if (L.byChannel && L.inner === 1) {
      columns.moments(x, L.N, L.C, mean, m2, g0, g1);
      return;
    }
    if (L.contiguous) {
      // Each group is one block of memory: chunk it as layer norm does a row, whatever `inner` is.
      const acc = accumulator(L.groups);
      for (let g = g0; g < g1; g++) {
        stridedMoments(x, g * L.size, 1, L.size, L.size, acc, g);
        mean[g] = acc.mean[g]!;
        m2[g] = cleanM2(acc.m2[g]!, acc.mean[g]!);
      }
      return;
    }
    const { inner, group, groups, size } = L;
    const runs = group.length;
    if (inner >= MIN_RUN) {
      const acc = accumulator(groups);
      const out = new Float64Array(2);
      for (let r = 0, base = 0; r < runs; r++, base += inner) {
        const g = group[r]!;
        if (g < g0 || g >= g1) continue;
        for (let at = 0; at < inner; at += CHUNK) {
          const n = Math.min(CHUNK, inner - at);
          chunkMoments(x, base + at, n, out);
          merge(acc, g, n, out[0]!, out[1]!);
        }
      }
      for (let g = g0; g < g1; g++) {
        mean[g] = acc.mean[g]!;
        m2[g] = cleanM2(acc.m2[g]!, acc.mean[g]!);
      }
      return;
    }
    const sd = new Float64Array(groups);
    mean.fill(0, g0, g1);
    m2.fill(0, g0, g1);
    for (let r = 0, base = 0; r < runs; r++, base += inner) {
      if (group[r]! < g0 || group[r]! >= g1) continue;
      let s = 0;
      for (let i = base; i < base + inner; i++) s += x[i]!;
      mean[group[r]!]! += s;
    }
    for (let g = g0; g < g1; g++) mean[g] = mean[g]! / size;
    for (let r = 0, base = 0; r < runs; r++, base += inner) {
      const g = group[r]!;
      if (g < g0 || g >= g1) continue;
      const mu = mean[g]!;
      let s = 0;
      let q = 0;
      for (let i = base; i < base + inner; i++) {
        const d = x[i]! - mu;
        s += d;
        q += d * d;
      }
      sd[g]! += s;
      m2[g]! += q;
    }
    for (let g = g0; g < g1; g++) {
      const s = sd[g]!;
      // An infinite mean stays infinite: its deviations are NaN and must not correct it.
      if (Number.isFinite(mean[g]!)) mean[g] = mean[g]! + s / size;
      m2[g] = cleanM2(m2[g]! - (s * s) / size, mean[g]!);
    }
  }

  /**
   * y = gamma_c · (x − mean_g) · invstd_g + beta_c, subtracting the mean first so
   * that values far from zero keep their precision. `statGroup` maps a run to the
   * index of its statistics (the layout's group, or the channel for running statistics).
   */
  function affine(
    x: FloatArray,
    y: FloatArray,
    L: ChannelLayout,
    mean: Float64Array,
    invstd: Float64Array,
    gamma: Float64Array | null,
    beta: Float64Array | null,
    statGroupArg?: Int32Array,
    g0 = 0,
    g1 = mean.length,
  ): void {
    if (L.byChannel && L.inner === 1 && statGroupArg === undefined) {
      columns.affine(x, y, L.N, L.C, mean, invstd, gamma, beta, g0, g1);
      return;
    }
    if (L.contiguous && statGroupArg === undefined) {
      // Group g of sample n = ⌊g / G⌋ is channels [(g mod G)·C/G, …) of that sample, one block of memory:
      // walk it channel by channel without a per-run lookup.
      const { C, inner, N } = L;
      const perSample = L.groups / N;
      const channels = C / perSample;
      for (let g = g0; g < g1; g++) {
        const mu = mean[g]!;
        const s = invstd[g]!;
        const c0 = (g % perSample) * channels;
        for (let k = 0, base = g * L.size; k < channels; k++, base += inner) {
          const c = c0 + k;
          const scale = s * (gamma ? gamma[c]! : 1);
          const shift = beta ? beta[c]! : 0;
          for (let i = base; i < base + inner; i++) y[i] = (x[i]! - mu) * scale + shift;
        }
      }
      return;
    }
    const statGroup = statGroupArg ?? L.group;
    const { C, inner } = L;
    const runs = statGroup.length;
    for (let r = 0, c = 0, base = 0; r < runs; r++, base += inner, c = c + 1 === C ? 0 : c + 1) {
      const g = statGroup[r]!;
      if (g < g0 || g >= g1) continue;
      const mu = mean[g]!;
      const scale = invstd[g]! * (gamma ? gamma[c]! : 1);
      const shift = beta ? beta[c]! : 0;
      const end = base + inner;
      for (let i = base; i < end; i++) y[i] = (x[i]! - mu) * scale + shift;
    }
  }

  /**
   * Per run r: Σ dy and Σ dy · (x − mean of its group), with the statistics computed in
   * the same sweep when they are not given. Returns the statistics used.
   */
  function sweep(
    a: ChannelBackwardArgs,
    statGroup: Int32Array,
    g0: number,
    g1: number,
    runSdy: Float64Array,
    runSdyx: Float64Array,
  ): { mean: Float64Array; invstd: Float64Array } {
    const { x, dy, L } = a;
    const { inner } = L;
    const runs = statGroup.length;
    let stats = a.stats;
    if (!stats && inner >= MIN_RUN) {
      // Fused: each chunk's moments and gradient sums while the chunk is in cache,
      // the sums taken about the chunk's first mean and shifted to the group mean afterwards.
      const acc = accumulator(L.groups);
      const shift = new Float64Array(runs);
      const out = new Float64Array(5);
      for (let r = 0, base = 0; r < runs; r++, base += inner) {
        const g = statGroup[r]!;
        if (g < g0 || g >= g1) continue;
        let sdy = 0;
        let sdyx = 0;
        for (let at = 0; at < inner; at += CHUNK) {
          const n = Math.min(CHUNK, inner - at);
          const start = base + at;
          // out: mean, M2, the first mean m0, Σ dy, Σ dy · (x − m0)
          chunkMomentsDy(x, dy, start, n, out);
          merge(acc, g, n, out[0]!, out[1]!);
          const m0 = out[2]!;
          if (at === 0) shift[r] = m0;
          sdy += out[3]!;
          sdyx += out[4]! + (m0 - shift[r]!) * out[3]!;
        }
        runSdy[r] = sdy;
        runSdyx[r] = sdyx;
      }
      const mean = acc.mean;
      const invstd = new Float64Array(L.groups);
      for (let g = g0; g < g1; g++) {
        invstd[g] = 1 / Math.sqrt(cleanM2(acc.m2[g]!, mean[g]!) / (L.size - a.correction) + a.eps);
      }
      for (let r = 0; r < runs; r++) {
        const g = statGroup[r]!;
        if (g < g0 || g >= g1 || runSdy[r] === 0) continue;
        runSdyx[r] = runSdyx[r]! + (shift[r]! - mean[g]!) * runSdy[r]!;
      }
      return { mean, invstd };
    }
    if (!stats) {
      const mean = new Float64Array(L.groups);
      const m2 = new Float64Array(L.groups);
      moments(x, L, mean, m2, g0, g1);
      const invstd = Float64Array.from(m2, (q) => 1 / Math.sqrt(q / (L.size - a.correction) + a.eps));
      stats = { mean, invstd };
    }
    const mean = stats.mean;
    for (let r = 0, base = 0; r < runs; r++, base += inner) {
      const g = statGroup[r]!;
      if (g < g0 || g >= g1) continue;
      const mu = mean[g]!;
      let s = 0;
      let sx = 0;
      for (let i = base; i < base + inner; i++) {
        const d = dy[i]!;
        s += d;
        sx += d * (x[i]! - mu);
      }
      runSdy[r] = s;
      runSdyx[r] = sx;
    }
    return stats;
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
  function backward(a: ChannelBackwardArgs): void {
    if (a.L.byChannel && a.L.inner === 1 && !a.statGroup) {
      columns.backward(a);
      return;
    }
    if (a.L.contiguous && a.training && !a.statGroup && a.L.inner < MIN_RUN) {
      contiguousBackward(a);
      return;
    }
    const { x, dy, dx, L, gamma, correction, training } = a;
    const { C, inner, size } = L;
    const statGroup = a.statGroup ?? L.group;
    const g0 = a.g0 ?? 0;
    const g1 = a.g1 ?? (a.stats ? a.stats.mean.length : L.groups);
    const runs = statGroup.length;
    const runSdy = new Float64Array(runs);
    const runSdyx = new Float64Array(runs);
    const { mean, invstd } = sweep(a, statGroup, g0, g1, runSdy, runSdyx);
    const nStats = mean.length;
    const su = new Float64Array(nStats);
    const suxh = new Float64Array(nStats);
    const { dgamma, dbeta } = a;
    for (let r = 0, c = 0; r < runs; r++, c = c + 1 === C ? 0 : c + 1) {
      const g = statGroup[r]!;
      if (g < g0 || g >= g1) continue;
      const sdyxh = runSdyx[r]! * invstd[g]!;
      const w = gamma ? gamma[c]! : 1;
      dbeta[c]! += runSdy[r]!;
      dgamma[c]! += sdyxh;
      su[g]! += w * runSdy[r]!;
      suxh[g]! += w * sdyxh;
    }
    for (let r = 0, c = 0, base = 0; r < runs; r++, base += inner, c = c + 1 === C ? 0 : c + 1) {
      const g = statGroup[r]!;
      if (g < g0 || g >= g1) continue;
      const s = invstd[g]!;
      const w = gamma ? gamma[c]! : 1;
      const end = base + inner;
      if (training) {
        const mu = mean[g]!;
        // s · (u − mean(u) − …) rather than s·u − s·mean(u): with one value per group
        // u and its mean cancel exactly, whatever the size of gamma.
        const meanU = su[g]! / size;
        const proj = (s * suxh[g]!) / (size - correction);
        for (let i = base; i < end; i++) dx[i] = s * (w * dy[i]! - meanU - (x[i]! - mu) * proj);
      } else {
        const k = s * w;
        for (let i = base; i < end; i++) dx[i] = dy[i]! * k;
      }
    }
  }

  /**
   * Training backward for groups that are blocks of memory (instance, group norm) made of
   * short runs (small spatial size): the same formula, walked group by group and channel by
   * channel instead of run by run with a lookup each.
   */
  function contiguousBackward(a: ChannelBackwardArgs): void {
    const { x, dy, dx, L, gamma, correction } = a;
    const { C, inner, N, size } = L;
    const g0 = a.g0 ?? 0;
    const g1 = a.g1 ?? L.groups;
    let stats = a.stats;
    if (!stats) {
      const mean = new Float64Array(L.groups);
      const m2 = new Float64Array(L.groups);
      moments(x, L, mean, m2, g0, g1);
      const invstd = Float64Array.from(m2, (q) => 1 / Math.sqrt(q / (size - correction) + a.eps));
      stats = { mean, invstd };
    }
    const perSample = L.groups / N;
    const channels = C / perSample;
    for (let g = g0; g < g1; g++) {
      const mu = stats.mean[g]!;
      const s = stats.invstd[g]!;
      const c0 = (g % perSample) * channels;
      const start = g * size;
      let su = 0;
      let suxh = 0;
      for (let k = 0, base = start; k < channels; k++, base += inner) {
        let sdy = 0;
        let sdyx = 0;
        for (let i = base; i < base + inner; i++) {
          const d = dy[i]!;
          sdy += d;
          sdyx += d * (x[i]! - mu);
        }
        const c = c0 + k;
        const w = gamma ? gamma[c]! : 1;
        a.dbeta[c]! += sdy;
        a.dgamma[c]! += sdyx * s;
        su += w * sdy;
        suxh += w * sdyx * s;
      }
      const meanU = su / size;
      const proj = (s * suxh) / (size - correction);
      for (let k = 0, base = start; k < channels; k++, base += inner) {
        const w = gamma ? gamma[c0 + k]! : 1;
        for (let i = base; i < base + inner; i++) dx[i] = s * (w * dy[i]! - meanU - (x[i]! - mu) * proj);
      }
    }
  }

  return { moments, affine, backward };
}

export type ChannelKernels = ReturnType<typeof create>;

/** The kernels specialized for x's element type. */
export const channelKernels: (x: FloatArray) => ChannelKernels = perElementType(create);
