import { setPriority } from 'node:os';
import { workerData } from 'node:worker_threads';
import { move, transferableSymbol, valueSymbol } from 'piscina';
import { type PartTask, type Pass, runKernel, runPart } from '../kernels/registry.js';
import type { KernelResult, KernelTask } from '../kernels/task.js';
import { injectFault } from './test-hooks.js';

/**
 * The worker entry: named functions (piscina's `name` option picks one).
 * `forward`/`backward` run a whole request and move their results' buffers back
 * to the event loop's thread; `part` runs one part of a request split across
 * workers, whose big tensors live in shared memory.
 */
const testHooks = (workerData as { testHooks?: boolean } | undefined)?.testHooks === true;

const WORKER_NICE = 10;

// Kernels yield the CPU to the event loop: on Linux a nice value belongs to a thread, and pid 0
// names the calling one, so this lowers this worker's priority only. When the workers fill every
// core, the event loop still gets one at once to accept, parse and answer (/health stays fast).
try {
  setPriority(0, WORKER_NICE);
} catch {
  // Not permitted or not supported here: the workers run at the process's priority.
}

function transfer(result: KernelResult) {
  const buffers = new Set<ArrayBufferLike>();
  for (const t of Object.values(result.tensors)) {
    if (!(t.data.buffer instanceof SharedArrayBuffer)) buffers.add(t.data.buffer);
  }
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
  if (testHooks) injectFault((task.params as { eps?: unknown }).eps);
  return transfer(runKernel(pass, task));
}

export function forward(task: KernelTask) {
  return run('forward', task);
}

export function backward(task: KernelTask) {
  return run('backward', task);
}

export function part(job: PartTask) {
  if (testHooks) injectFault((job.task.params as { eps?: unknown }).eps);
  return runPart(job);
}
