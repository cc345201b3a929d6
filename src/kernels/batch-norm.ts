import type { FloatArray } from '../tensor/tensor.js';
import { batchLayout, channelKernels } from './channel-norm.js';
import { channelOp } from './channel-op.js';
import { f64 } from './task.js';

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
 * Statistics are accumulated in float64 with a two-pass method (`channelMoments`),
 * whatever the element type of `x` and `y`. `gamma`/`beta` of `null` mean 1 and 0.
 *
 * Example: x = [[1], [2], [3], [4]] (N = 4, C = 1), correction 1, eps = 1e-5:
 * mean = 2.5, var = 5/3, invstd ≈ 0.774594, y[0] ≈ −1.161892.
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
  const L = batchLayout(N, C, inner);
  channelKernels(x).moments(x, L, out.mean, out.m2);
  for (let c = 0; c < C; c++) {
    const v = out.m2[c]! / (L.size - correction);
    out.var[c] = v;
    out.invstd[c] = 1 / Math.sqrt(v + eps);
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
  const k = channelKernels(x);
  k.affine(x, y, batchLayout(N, C, inner), stats.mean, stats.invstd, gamma && f64(gamma), beta && f64(beta));
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
  const invstd = Float64Array.from(a.runningVar, (v) => 1 / Math.sqrt(v + a.eps));
  const { gamma, beta } = a;
  channelKernels(a.x).affine(
    a.x,
    a.y,
    batchLayout(a.N, a.C, a.inner),
    f64(a.runningMean),
    invstd,
    gamma && f64(gamma),
    beta && f64(beta),
  );
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
  const dgamma = new Float64Array(a.C);
  const dbeta = new Float64Array(a.C);
  channelKernels(a.x).backward({
    ...a,
    L: batchLayout(a.N, a.C, a.inner),
    gamma: a.gamma && f64(a.gamma),
    stats: { mean: Float64Array.from(a.mean), invstd: Float64Array.from(a.invstd) },
    eps: 0,
    dgamma,
    dbeta,
  });
  a.dgamma.set(dgamma);
  a.dbeta.set(dbeta);
}

export interface BatchNormParams {
  eps: number;
  correction: number;
  training: boolean;
  momentum: number | null;
  numBatchesTracked: number;
}

/** The batch_norm op: statistics per channel, shape [C]. */
export const batchNorm = channelOp({
  layout: (N, C, inner) => batchLayout(N, C, inner),
  statsShape: (_N, C) => [C],
});
