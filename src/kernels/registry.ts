import { batchNorm } from './batch-norm.js';
import { groupNorm } from './group-norm.js';
import { instanceNorm } from './instance-norm.js';
import { layerNorm } from './layer-norm.js';
import { rmsNorm } from './rms-norm.js';
import type { KernelResult, KernelTask, OpKernels } from './task.js';

/**
 * The one map from op names to kernels. The request schemas are keyed by these
 * names (a missing schema fails to compile) and the worker dispatches through it.
 */
export const registry = {
  batch_norm: batchNorm,
  layer_norm: layerNorm,
  group_norm: groupNorm,
  instance_norm: instanceNorm,
  rms_norm: rmsNorm,
} satisfies Record<string, OpKernels<never>>;

export type OpName = keyof typeof registry;
export type Pass = 'forward' | 'backward';

export const OP_NAMES = Object.keys(registry) as OpName[];

export function runKernel(pass: Pass, task: KernelTask): KernelResult {
  const kernels = registry[task.op as OpName] as OpKernels<unknown> | undefined;
  if (!kernels) throw new Error(`unknown op ${task.op}`);
  return kernels[pass](task);
}
