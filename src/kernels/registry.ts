import type { FloatArray } from '../tensor/tensor.js';
import { batchNorm } from './batch-norm.js';
import { groupNorm } from './group-norm.js';
import { instanceNorm } from './instance-norm.js';
import { layerNorm } from './layer-norm.js';
import { rmsNorm } from './rms-norm.js';
import type { KernelResult, KernelTask, OpKernels, Part, Partials, SplitKernels } from './task.js';

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
} satisfies Record<string, OpKernels<never> & SplitKernels<never>>;

export type OpName = keyof typeof registry;
export type Pass = 'forward' | 'backward';

export const OP_NAMES = Object.keys(registry) as OpName[];

function kernelsOf(op: string): OpKernels<unknown> & SplitKernels<unknown> {
  const k = registry[op as OpName] as (OpKernels<unknown> & SplitKernels<unknown>) | undefined;
  if (!k) throw new Error(`unknown op ${op}`);
  return k;
}

export function runKernel(pass: Pass, task: KernelTask): KernelResult {
  return kernelsOf(task.op)[pass](task);
}

/** A part of a split request: the task (its big tensors shared), the range of units, the shared output. */
export interface PartTask {
  pass: Pass;
  task: KernelTask;
  part: Part;
  out: FloatArray;
}

export function runPart({ pass, task, part, out }: PartTask): Partials {
  const k = kernelsOf(task.op);
  return pass === 'forward' ? k.forwardPart(task, part, out) : k.backwardPart(task, part, out);
}

export function unitsOf(pass: Pass, task: KernelTask): number {
  return kernelsOf(task.op).units(task, pass);
}

export function finishParts(
  pass: Pass,
  task: KernelTask,
  done: { part: Part; partials: Partials }[],
  out: FloatArray,
) {
  const k = kernelsOf(task.op);
  return pass === 'forward' ? k.finishForward(task, done, out) : k.finishBackward(task, done, out);
}
