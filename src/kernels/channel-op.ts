import { allocate, type FloatArray, type Tensor } from '../tensor/tensor.js';
import { batchLayout, type ChannelLayout, channelKernels } from './channel-norm.js';
import { cast, f64, f64Optional, type KernelResult, type KernelTask, type OpKernels } from './task.js';

/**
 * The request-to-kernel runner shared by batch, instance and group norm: reads
 * `[N, C, *spatial]` as `[N, C, inner]`, builds the op's grouping, and produces the
 * response tensors (statistics shaped as the op's groups).
 */
export interface ChannelOpParams {
  eps: number;
  correction: number;
  /** absent for ops without running statistics (group norm): always batch statistics */
  training?: boolean;
  momentum?: number | null;
  numBatchesTracked?: number;
  numGroups?: number;
}

export interface ChannelOpSpec {
  layout(N: number, C: number, inner: number, p: ChannelOpParams): ChannelLayout;
  statsShape(N: number, C: number, p: ChannelOpParams): number[];
}

export function channelSizes(shape: readonly number[]) {
  const N = shape[0]!;
  const C = shape[1]!;
  let inner = 1;
  for (let d = 2; d < shape.length; d++) inner *= shape[d]!;
  return { N, C, inner };
}

export interface GroupStats {
  mean: Float64Array;
  var: Float64Array;
  invstd: Float64Array;
  /** Σ (x − mean)² per group, for the running variance */
  m2: Float64Array;
}

/** mean, var = M2 / (m − correction), invstd = 1 / sqrt(var + eps), per group, in float64. */
export function groupStats(x: FloatArray, L: ChannelLayout, eps: number, correction: number): GroupStats {
  const G = L.groups;
  const s: GroupStats = {
    mean: new Float64Array(G),
    var: new Float64Array(G),
    invstd: new Float64Array(G),
    m2: new Float64Array(G),
  };
  channelKernels(x).moments(x, L, s.mean, s.m2);
  for (let g = 0; g < G; g++) {
    const v = s.m2[g]! / (L.size - correction);
    s.var[g] = v;
    s.invstd[g] = 1 / Math.sqrt(v + eps);
  }
  return s;
}

/**
 * Running statistics, PyTorch's convention: each group's batch mean and unbiased
 * variance M2 / (m − 1), averaged over the groups of a channel (one for batch norm,
 * N for instance norm), then
 *   running' = (1 − f) · running + f · batch,   f = momentum ?? 1 / (numBatchesTracked + 1).
 */
export function updateRunning(
  stats: GroupStats,
  L: ChannelLayout,
  runningMean: Float64Array,
  runningVar: Float64Array,
  factor: number,
  outMean: FloatArray,
  outVar: FloatArray,
): void {
  const C = L.C;
  const perChannel = L.groups / C;
  const bm = new Float64Array(C);
  const bv = new Float64Array(C);
  for (let g = 0; g < L.groups; g++) {
    const c = g % C;
    bm[c]! += stats.mean[g]!;
    bv[c]! += stats.m2[g]! / (L.size - 1);
  }
  for (let c = 0; c < C; c++) {
    outMean[c] = (1 - factor) * runningMean[c]! + (factor * bm[c]!) / perChannel;
    outVar[c] = (1 - factor) * runningVar[c]! + (factor * bv[c]!) / perChannel;
  }
}

/** Eval mode: the running statistics, per channel, as float64 mean and invstd. */
function runningStats(t: KernelTask['tensors'], dtype: KernelTask['dtype'], eps: number) {
  const mean = f64(cast(t.runningMean!, dtype));
  const invstd = Float64Array.from(cast(t.runningVar!, dtype), (v) => 1 / Math.sqrt(v + eps));
  return { mean, invstd };
}

export function channelOp(spec: ChannelOpSpec): OpKernels<ChannelOpParams> {
  return {
    forward({ dtype, shape, tensors: t, params: p }) {
      const { N, C, inner } = channelSizes(shape);
      const x = cast(t.x!, dtype);
      const k = channelKernels(x);
      const gamma = f64Optional(t.gamma, dtype);
      const beta = f64Optional(t.beta, dtype);
      const y = allocate(dtype, x.length);
      if (p.training === false) {
        const { mean, invstd } = runningStats(t, dtype, p.eps);
        k.affine(x, y, batchLayout(N, C, inner), mean, invstd, gamma, beta);
        return { tensors: { y: { shape, data: y } }, scalars: {} };
      }
      const L = spec.layout(N, C, inner, p);
      const stats = groupStats(x, L, p.eps, p.correction);
      k.affine(x, y, L, stats.mean, stats.invstd, gamma, beta);
      const sShape = spec.statsShape(N, C, p);
      const out = (data: Float64Array): Tensor => ({ shape: sShape, data: cast(data, dtype) });
      const result: KernelResult = {
        tensors: {
          y: { shape, data: y },
          mean: out(stats.mean),
          var: out(stats.var),
          invstd: out(stats.invstd),
        },
        scalars: {},
      };
      if (t.runningMean && t.runningVar) {
        const done = p.numBatchesTracked ?? 0;
        const factor = p.momentum ?? 1 / (done + 1);
        const runningMean = allocate(dtype, C);
        const runningVar = allocate(dtype, C);
        const rm = f64(cast(t.runningMean, dtype));
        const rv = f64(cast(t.runningVar, dtype));
        updateRunning(stats, L, rm, rv, factor, runningMean, runningVar);
        result.tensors.runningMean = { shape: [C], data: runningMean };
        result.tensors.runningVar = { shape: [C], data: runningVar };
        result.scalars.numBatchesTracked = done + 1;
      }
      return result;
    },

    backward({ dtype, shape, tensors: t, params: p }) {
      const { N, C, inner } = channelSizes(shape);
      const x = cast(t.x!, dtype);
      const dy = cast(t.dy!, dtype);
      const training = p.training !== false;
      const L = training ? spec.layout(N, C, inner, p) : batchLayout(N, C, inner);
      const stats = !training
        ? runningStats(t, dtype, p.eps)
        : t.mean && t.invstd
          ? { mean: f64(cast(t.mean, dtype)), invstd: f64(cast(t.invstd, dtype)) }
          : null;
      const dx = allocate(dtype, x.length);
      const dgamma = allocate(dtype, C);
      const dbeta = allocate(dtype, C);
      channelKernels(x).backward({
        x,
        dy,
        L,
        gamma: f64Optional(t.gamma, dtype),
        stats,
        eps: p.eps,
        correction: p.correction,
        training,
        dx,
        dgamma,
        dbeta,
      });
      return {
        tensors: {
          dx: { shape, data: dx },
          dgamma: { shape: [C], data: dgamma },
          dbeta: { shape: [C], data: dbeta },
        },
        scalars: {},
      };
    },
  };
}
