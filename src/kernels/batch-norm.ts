import { allocate, type FloatArray } from '../tensor/tensor.js';
import { gradSums, moments } from './moments.js';
import { cast, castOptional, type KernelResult, type OpKernels } from './task.js';

/**
 * Batch normalization over `x` laid out as `[N, C, inner]` (row-major; `inner` is
 * the product of the spatial sizes, 1 for `[N, C]`). For each channel c, over its
 * m = N·inner values:
 *
 *   mean_c   = (1/m) Σ x
 *   var_c    = Σ (x − mean_c)² / (m − correction)       correction 1: Bessel, 0: PyTorch
 *   invstd_c = 1 / sqrt(var_c + eps)                    eps inside the square root
 *   y        = gamma_c · (x − mean_c) · invstd_c + beta_c
 *
 * Statistics are accumulated in float64 with a two-pass method (see `moments`),
 * whatever the element type of `x` and `y`. `gamma`/`beta` of `null` mean 1 and 0.
 *
 * Example: x = [[1], [2], [3], [4]] (N = 4, C = 1), correction 1, eps = 1e-5:
 * mean = 2.5, var = 5/3, invstd ≈ 0.774594, y[0] ≈ −1.161891.
 */
export interface BatchNormStats {
  /** Per-channel outputs in float64: mean, var (divisor m − correction), invstd, and M2 = Σ (x − mean)². */
  mean: Float64Array;
  var: Float64Array;
  invstd: Float64Array;
  m2: Float64Array;
}

export function batchNormStats(
  x: FloatArray,
  N: number,
  C: number,
  inner: number,
  eps: number,
  correction: number,
  out: BatchNormStats,
): void {
  const m = N * inner;
  const mom = new Float64Array(2);
  for (let c = 0; c < C; c++) {
    moments(x, c * inner, N, inner, C * inner, mom);
    const v = mom[1]! / (m - correction);
    out.mean[c] = mom[0]!;
    out.var[c] = v;
    out.invstd[c] = 1 / Math.sqrt(v + eps);
    out.m2[c] = mom[1]!;
  }
}

export interface BatchNormForwardArgs {
  x: FloatArray;
  N: number;
  C: number;
  inner: number;
  gamma: FloatArray | null;
  beta: FloatArray | null;
  eps: number;
  correction: number;
  /** outputs */
  y: FloatArray;
  stats: BatchNormStats;
}

export function batchNormForward(a: BatchNormForwardArgs): void {
  const { x, N, C, inner, gamma, beta, y, stats } = a;
  batchNormStats(x, N, C, inner, a.eps, a.correction, stats);
  for (let c = 0; c < C; c++) {
    const scale = stats.invstd[c]! * (gamma ? gamma[c]! : 1);
    affine(x, y, c * inner, N, inner, C * inner, stats.mean[c]!, scale, beta ? beta[c]! : 0);
  }
}

/**
 * Eval mode: running statistics in place of batch statistics,
 * y = gamma · (x − runningMean) / sqrt(runningVar + eps) + beta.
 */
export interface BatchNormForwardEvalArgs {
  x: FloatArray;
  N: number;
  C: number;
  inner: number;
  gamma: FloatArray | null;
  beta: FloatArray | null;
  eps: number;
  runningMean: FloatArray;
  runningVar: FloatArray;
  y: FloatArray;
}

export function batchNormForwardEval(a: BatchNormForwardEvalArgs): void {
  const { x, N, C, inner, gamma, beta, eps, runningMean, runningVar, y } = a;
  const stride = C * inner;
  for (let c = 0; c < C; c++) {
    const invstd = 1 / Math.sqrt(runningVar[c]! + eps);
    affine(
      x,
      y,
      c * inner,
      N,
      inner,
      stride,
      runningMean[c]!,
      invstd * (gamma ? gamma[c]! : 1),
      beta ? beta[c]! : 0,
    );
  }
}

/** y = (x − mean)·scale + shift over one channel; subtracting first keeps precision far from zero. */
function affine(
  x: FloatArray,
  y: FloatArray,
  start: number,
  blocks: number,
  len: number,
  stride: number,
  mean: number,
  scale: number,
  shift: number,
): void {
  for (let b = 0, base = start; b < blocks; b++, base += stride) {
    const end = base + len;
    for (let i = base; i < end; i++) y[i] = (x[i]! - mean) * scale + shift;
  }
}

/**
 * Backward pass, training mode, in closed form (dy = dL/dy, x̂ = (x − mean)·invstd):
 *
 *   dbeta_c  = Σ dy
 *   dgamma_c = Σ dy · x̂
 *   dx       = gamma_c · invstd_c · ( dy − dbeta_c / m − x̂ · dgamma_c / (m − correction) )
 *
 * `mean` and `invstd` are the forward pass's statistics (saved or recomputed).
 * With correction 1 this is the Bessel-corrected hand derivation; with 0 it is
 * the gradient of PyTorch's `F.batch_norm` in training mode.
 *
 * Eval mode (`training: false`) treats mean and invstd as constants:
 * dx = dy · gamma · invstd, with the same dgamma and dbeta.
 */
export interface BatchNormBackwardArgs {
  x: FloatArray;
  dy: FloatArray;
  N: number;
  C: number;
  inner: number;
  gamma: FloatArray | null;
  mean: ArrayLike<number>;
  invstd: ArrayLike<number>;
  correction: number;
  training: boolean;
  dx: FloatArray;
  dgamma: FloatArray;
  dbeta: FloatArray;
}

export function batchNormBackward(a: BatchNormBackwardArgs): void {
  const { x, dy, dx, N, C, inner, gamma, correction, training } = a;
  const m = N * inner;
  const stride = C * inner;
  const sums = new Float64Array(2);
  for (let c = 0; c < C; c++) {
    const mean = a.mean[c]!;
    const invstd = a.invstd[c]!;
    gradSums(x, dy, c * inner, N, inner, stride, mean, sums);
    const dbeta = sums[0]!;
    const dgamma = sums[1]! * invstd;
    a.dbeta[c] = dbeta;
    a.dgamma[c] = dgamma;
    const k = (gamma ? gamma[c]! : 1) * invstd;
    if (!training) {
      for (let b = 0, base = c * inner; b < N; b++, base += stride) {
        const end = base + inner;
        for (let i = base; i < end; i++) dx[i] = dy[i]! * k;
      }
      continue;
    }
    const meanDy = dbeta / m;
    // x̂ · dgamma / (m − correction) = (x − mean) · invstd · dgamma / (m − correction)
    const proj = (invstd * dgamma) / (m - correction);
    for (let b = 0, base = c * inner; b < N; b++, base += stride) {
      const end = base + inner;
      for (let i = base; i < end; i++) dx[i] = k * (dy[i]! - meanDy - (x[i]! - mean) * proj);
    }
  }
}

/**
 * Running statistics update (PyTorch's convention: the running variance is
 * always the unbiased one, M2 / (m − 1), whatever `correction` is):
 *
 *   runningMean' = (1 − f) · runningMean + f · mean
 *   runningVar'  = (1 − f) · runningVar  + f · M2 / (m − 1)
 */
export function updateRunningStats(
  runningMean: FloatArray,
  runningVar: FloatArray,
  mean: ArrayLike<number>,
  m2: ArrayLike<number>,
  m: number,
  factor: number,
  outMean: FloatArray,
  outVar: FloatArray,
): void {
  for (let c = 0; c < runningMean.length; c++) {
    outMean[c] = (1 - factor) * runningMean[c]! + factor * mean[c]!;
    outVar[c] = (1 - factor) * runningVar[c]! + (factor * m2[c]!) / (m - 1);
  }
}

export interface BatchNormParams {
  eps: number;
  correction: number;
  training: boolean;
  momentum: number | null;
  numBatchesTracked: number;
}

function newStats(C: number): BatchNormStats {
  return {
    mean: new Float64Array(C),
    var: new Float64Array(C),
    invstd: new Float64Array(C),
    m2: new Float64Array(C),
  };
}

/** Reads `[N, C, *spatial]` as the kernels' `[N, C, inner]`. */
function sizes(shape: number[]) {
  const N = shape[0]!;
  const C = shape[1]!;
  let inner = 1;
  for (let d = 2; d < shape.length; d++) inner *= shape[d]!;
  return { N, C, inner };
}

/** The batch_norm op: request tensors in, response tensors out (see `KernelTask`). */
export const batchNorm: OpKernels<BatchNormParams> = {
  forward({ dtype, shape, tensors: t, params: p }) {
    const { N, C, inner } = sizes(shape);
    const x = cast(t.x!, dtype);
    const gamma = castOptional(t.gamma, dtype);
    const beta = castOptional(t.beta, dtype);
    const y = allocate(dtype, x.length);
    const ch = [C];
    if (!p.training) {
      const runningMean = cast(t.runningMean!, dtype);
      const runningVar = cast(t.runningVar!, dtype);
      batchNormForwardEval({ x, N, C, inner, gamma, beta, eps: p.eps, runningMean, runningVar, y });
      return { tensors: { y: { shape, data: y } }, scalars: {} };
    }
    const stats = newStats(C);
    batchNormForward({ x, N, C, inner, gamma, beta, eps: p.eps, correction: p.correction, y, stats });
    const result: KernelResult = {
      tensors: {
        y: { shape, data: y },
        mean: { shape: ch, data: cast(stats.mean, dtype) },
        var: { shape: ch, data: cast(stats.var, dtype) },
        invstd: { shape: ch, data: cast(stats.invstd, dtype) },
      },
      scalars: {},
    };
    if (t.runningMean && t.runningVar) {
      const factor = p.momentum ?? 1 / (p.numBatchesTracked + 1);
      const runningMean = allocate(dtype, C);
      const runningVar = allocate(dtype, C);
      const rm = cast(t.runningMean, dtype);
      const rv = cast(t.runningVar, dtype);
      updateRunningStats(rm, rv, stats.mean, stats.m2, N * inner, factor, runningMean, runningVar);
      result.tensors.runningMean = { shape: ch, data: runningMean };
      result.tensors.runningVar = { shape: ch, data: runningVar };
      result.scalars.numBatchesTracked = p.numBatchesTracked + 1;
    }
    return result;
  },

  backward({ dtype, shape, tensors: t, params: p }) {
    const { N, C, inner } = sizes(shape);
    const x = cast(t.x!, dtype);
    const dy = cast(t.dy!, dtype);
    const gamma = castOptional(t.gamma, dtype);
    let mean: ArrayLike<number>;
    let invstd: ArrayLike<number>;
    if (!p.training) {
      mean = cast(t.runningMean!, dtype);
      const rv = cast(t.runningVar!, dtype);
      invstd = Float64Array.from(rv, (v) => 1 / Math.sqrt(v + p.eps));
    } else if (t.mean && t.invstd) {
      mean = cast(t.mean, dtype);
      invstd = cast(t.invstd, dtype);
    } else {
      const stats = newStats(C);
      batchNormStats(x, N, C, inner, p.eps, p.correction, stats);
      mean = stats.mean;
      invstd = stats.invstd;
    }
    const dx = allocate(dtype, x.length);
    const dgamma = allocate(dtype, C);
    const dbeta = allocate(dtype, C);
    batchNormBackward({
      x,
      dy,
      N,
      C,
      inner,
      gamma,
      mean,
      invstd,
      correction: p.correction,
      training: p.training,
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
