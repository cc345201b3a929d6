import { allocate, type FloatArray, type Tensor } from '../tensor/tensor.js';
import { batchLayout, type ChannelLayout, channelKernels } from './channel-norm.js';
import {
  cast,
  f64,
  f64Optional,
  gather,
  type KernelResult,
  type KernelTask,
  type Partials,
  type SplitKernels,
  sum,
  whole,
} from './task.js';

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

function finishStats(
  mean: Float64Array,
  m2: Float64Array,
  L: ChannelLayout,
  eps: number,
  correction: number,
) {
  const v = Float64Array.from(m2, (q) => q / (L.size - correction));
  return { mean, m2, var: v, invstd: Float64Array.from(v, (q) => 1 / Math.sqrt(q + eps)) };
}

/**
 * The op over [N, C, inner], splittable: the units are the groups in training
 * mode, the channels in eval mode (whose statistics are the running ones).
 */
export function channelOp(spec: ChannelOpSpec) {
  type Task = KernelTask<ChannelOpParams>;
  // The layout (a group index per run) is built once per task, not once per step.
  const plans = new WeakMap<Task, { C: number; training: boolean; L: ChannelLayout }>();
  const plan = (task: Task) => {
    let found = plans.get(task);
    if (!found) {
      const { N, C, inner } = channelSizes(task.shape);
      const training = task.params.training !== false;
      const L = training ? spec.layout(N, C, inner, task.params) : batchLayout(N, C, inner);
      found = { C, training, L };
      plans.set(task, found);
    }
    return found;
  };

  const split: SplitKernels<ChannelOpParams> = {
    units(task) {
      const { C, training, L } = plan(task);
      return training ? L.groups : C;
    },

    forwardPart(task, part, y) {
      const { dtype, tensors: t, params: p } = task;
      const { training, L } = plan(task);
      const x = cast(t.x!, dtype);
      const k = channelKernels(x);
      const gamma = f64Optional(t.gamma, dtype);
      const beta = f64Optional(t.beta, dtype);
      if (!training) {
        const { mean, invstd } = runningStats(t, dtype, p.eps);
        k.affine(x, y, L, mean, invstd, gamma, beta, undefined, part.begin, part.end);
        return {} as Partials;
      }
      const mean = new Float64Array(L.groups);
      const m2 = new Float64Array(L.groups);
      k.moments(x, L, mean, m2, part.begin, part.end);
      const { invstd } = finishStats(mean, m2, L, p.eps, p.correction);
      k.affine(x, y, L, mean, invstd, gamma, beta, undefined, part.begin, part.end);
      return { mean, m2 };
    },

    finishForward(task, done, y) {
      const { dtype, shape, tensors: t, params: p } = task;
      const { C, training, L } = plan(task);
      const result: KernelResult = { tensors: { y: { shape, data: y } }, scalars: {} };
      if (!training) return result;
      const stats = finishStats(
        gather(done, 'mean', L.groups),
        gather(done, 'm2', L.groups),
        L,
        p.eps,
        p.correction,
      );
      const sShape = spec.statsShape(shape[0]!, C, p);
      const out = (data: Float64Array): Tensor => ({ shape: sShape, data: cast(data, dtype) });
      Object.assign(result.tensors, {
        mean: out(stats.mean),
        var: out(stats.var),
        invstd: out(stats.invstd),
      });
      if (t.runningMean && t.runningVar) {
        const seen = p.numBatchesTracked ?? 0;
        const factor = p.momentum ?? 1 / (seen + 1);
        const runningMean = allocate(dtype, C);
        const runningVar = allocate(dtype, C);
        const rm = f64(cast(t.runningMean, dtype));
        const rv = f64(cast(t.runningVar, dtype));
        updateRunning(stats, L, rm, rv, factor, runningMean, runningVar);
        result.tensors.runningMean = { shape: [C], data: runningMean };
        result.tensors.runningVar = { shape: [C], data: runningVar };
        result.scalars.numBatchesTracked = seen + 1;
      }
      return result;
    },

    backwardPart(task, part, dx) {
      const { dtype, tensors: t, params: p } = task;
      const { C, training, L } = plan(task);
      const x = cast(t.x!, dtype);
      const stats = !training
        ? runningStats(t, dtype, p.eps)
        : t.mean && t.invstd
          ? { mean: f64(cast(t.mean, dtype)), invstd: f64(cast(t.invstd, dtype)) }
          : null;
      const dgamma = new Float64Array(C);
      const dbeta = new Float64Array(C);
      channelKernels(x).backward({
        x,
        dy: cast(t.dy!, dtype),
        L,
        gamma: f64Optional(t.gamma, dtype),
        stats,
        eps: p.eps,
        correction: p.correction,
        training,
        g0: part.begin,
        g1: part.end,
        dx,
        dgamma,
        dbeta,
      });
      return { dgamma, dbeta };
    },

    finishBackward(task, done, dx) {
      const C = task.shape[1]!;
      const param = (name: string): Tensor => ({ shape: [C], data: cast(sum(done, name), task.dtype) });
      return {
        tensors: { dx: { shape: task.shape, data: dx }, dgamma: param('dgamma'), dbeta: param('dbeta') },
        scalars: {},
      };
    },
  };
  return whole(split);
}
