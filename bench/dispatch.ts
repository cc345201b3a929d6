/**
 * What each route costs, to set the dispatch thresholds (src/workers/dispatch.ts):
 * the same batch-norm forward + backward run inline (event loop), in one worker
 * (inputs shared, outputs moved back), and split across 2 workers, at growing sizes,
 * all in this process. Needs the build (`npm run build`): workers run dist/.
 *
 *   node --expose-gc --import tsx bench/dispatch.ts
 */
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { Pass } from '../src/kernels/registry.js';
import type { KernelTask } from '../src/kernels/task.js';
import { dispatch, type Thresholds } from '../src/workers/dispatch.js';
import { SharedBuffers } from '../src/workers/shared-buffers.js';
import { randomData } from './cases.js';

const filename = fileURLToPath(new URL('../dist/workers/worker.js', import.meta.url));
const pool = new Piscina({ filename, minThreads: 2, maxThreads: 2 });
const buffers = new SharedBuffers(256 << 20);

const ROUTES: Record<string, Thresholds> = {
  inline: { inlineMax: Number.MAX_SAFE_INTEGER, splitMin: Number.MAX_SAFE_INTEGER },
  pool: { inlineMax: 0, splitMin: Number.MAX_SAFE_INTEGER },
  split: { inlineMax: 0, splitMin: 1 },
};

const SIZES: number[][] = [
  [8, 8],
  [32, 64],
  [64, 256],
  [256, 1024],
  [32, 64, 32, 32],
  [32, 64, 56, 56],
];

const inputs = new Map<number, { x: Float32Array; dy: Float32Array }>();

/** A fresh task (the pool route moves, and so detaches, its buffers); copying is not timed. */
function task(shape: number[], pass: Pass): KernelTask {
  const n = shape.reduce((a, b) => a * b, 1);
  if (!inputs.has(n))
    inputs.set(n, { x: Float32Array.from(randomData(n, 1)), dy: Float32Array.from(randomData(n, 2)) });
  const { x, dy } = inputs.get(n)!;
  const tensors: KernelTask['tensors'] = { x: x.slice() };
  if (pass === 'backward') tensors.dy = dy.slice();
  return {
    op: 'batch_norm',
    dtype: 'float32',
    shape,
    tensors,
    params: { eps: 1e-5, correction: 1, training: true, momentum: 0.1, numBatchesTracked: 0 },
  };
}

async function time(shape: number[], route: string): Promise<number> {
  const n = shape.reduce((a, b) => a * b, 1);
  const reps = Math.max(5, Math.min(2000, Math.floor(3e7 / n)));
  // A collection before each timed pass (run with node --expose-gc), so one route's
  // garbage (25 MB outputs) is not collected on another route's clock.
  const gc = (globalThis as { gc?: () => void }).gc;
  const once = async () => {
    let ms = 0;
    for (const pass of ['forward', 'backward'] as const) {
      const t = task(shape, pass);
      gc?.();
      // Shared memory recycled as the service recycles it (src/routes/compute.ts).
      const taken: SharedArrayBuffer[] = [];
      const allocate = (bytes: number) => {
        const b = buffers.take(bytes);
        taken.push(b);
        return b;
      };
      const t0 = performance.now();
      await dispatch(pool, 2, ROUTES[route]!, pass, t, undefined, allocate);
      ms += performance.now() - t0;
      for (const b of taken) buffers.give(b);
    }
    return ms;
  };
  for (let i = 0; i < Math.min(20, reps); i++) await once();
  let total = 0;
  for (let i = 0; i < reps; i++) total += await once();
  return total / reps;
}

const rows = [];
for (const shape of SIZES) {
  const ms: Record<string, number> = {};
  for (const route of Object.keys(ROUTES)) ms[route] = await time(shape, route);
  rows.push({
    shape: `[${shape.join(',')}]`,
    elements: shape.reduce((a, b) => a * b, 1),
    'inline ms': ms.inline!.toFixed(3),
    'pool ms': ms.pool!.toFixed(3),
    'split ms': ms.split!.toFixed(3),
    'pool / inline': (ms.pool! / ms.inline!).toFixed(2),
    'split speedup vs pool': (ms.pool! / ms.split!).toFixed(2),
  });
}
console.log(
  'batch_norm float32, forward + backward, 2 workers, inputs in shared memory as a safetensors body is read',
);
console.table(rows);
await pool.close();
