import { instanceLayout } from './channel-norm.js';
import { channelOp } from './channel-op.js';

/**
 * Instance normalization (PyTorch's `F.instance_norm`) over `x` laid out as
 * `[N, C, inner]`, rank ≥ 3: each sample's channel is its own group of
 * m = inner values,
 *
 *   mean_nc = (1/m) Σ x_nc·,   var_nc = Σ (x − mean_nc)² / (m − correction)   (default correction 0)
 *   y = gamma_c · (x − mean_nc) / sqrt(var_nc + eps) + beta_c
 *
 * Statistics have shape [N, C]. Running statistics, when sent, are updated with
 * the per-instance mean and unbiased variance averaged over N, as PyTorch does;
 * eval mode normalizes with them like batch norm.
 *
 * Example: x = [[[1, 2, 3, 4]]] (N = C = 1), correction 0: mean 2.5, var 1.25,
 * y ≈ [−1.341635, −0.447212, 0.447212, 1.341635].
 */
export const instanceNorm = channelOp({
  layout: (N, C, inner) => instanceLayout(N, C, inner),
  statsShape: (N, C) => [N, C],
});
