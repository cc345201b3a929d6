import { move, transferableSymbol, valueSymbol } from 'piscina';
import { type Pass, runKernel } from '../kernels/registry.js';
import type { KernelResult, KernelTask } from '../kernels/task.js';

/**
 * The worker entry: named functions `forward` and `backward` (piscina's `name`
 * option picks one). Results go back by transfer: their buffers are moved to
 * the event loop's thread, not cloned.
 */
function transfer(result: KernelResult) {
  const buffers = new Set<ArrayBufferLike>();
  for (const t of Object.values(result.tensors)) buffers.add(t.data.buffer);
  return move({
    get [transferableSymbol]() {
      return [...buffers];
    },
    get [valueSymbol]() {
      return result;
    },
  });
}

function run(pass: Pass, task: KernelTask) {
  return transfer(runKernel(pass, task));
}

export function forward(task: KernelTask) {
  return run('forward', task);
}

export function backward(task: KernelTask) {
  return run('backward', task);
}
