import { groupLayout } from './channel-norm.js';
import { channelOp } from './channel-op.js';

/**
 * Group normalization (PyTorch's `F.group_norm`) over `x` laid out as
 * `[N, C, inner]`: the C channels of each sample are split into G = numGroups
 * consecutive groups of C/G channels, each normalized over its m = (C/G)·inner values,
 *
 *   var_ng = Σ (x − mean_ng)² / (m − correction)   (default correction 0)
 *   y = gamma_c · (x − mean_ng) / sqrt(var_ng + eps) + beta_c
 *
 * with the affine per channel. Statistics have shape [N, G]. No running statistics.
 *
 * Example: x = [[1, 2, 3, 4]] (N = 1, C = 4), G = 2, correction 0:
 * groups [1, 2] and [3, 4], mean [1.5, 3.5], var [0.25, 0.25], y ≈ [−0.99980, 0.99980, −0.99980, 0.99980].
 */
export const groupNorm = channelOp({
  layout: (N, C, inner, p) => groupLayout(N, C, inner, p.numGroups!),
  statsShape: (N, _C, p) => [N, p.numGroups!],
});
