import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Piscina } from 'piscina';
import { Overloaded } from '../errors.js';
import type { Pass } from '../kernels/registry.js';
import type { KernelResult, KernelTask } from '../kernels/task.js';
import { DEFAULT_THRESHOLDS, dispatch, type Thresholds } from './dispatch.js';

/**
 * The piscina pool that runs every kernel off the event loop.
 *
 * The worker is always compiled JavaScript: in production `dist/workers/worker.js`
 * next to this file; when this file runs from TypeScript sources (tests, tsx),
 * the build's copy (`npm test` builds first).
 */
function workerFile(): string {
  const here = new URL('./worker.js', import.meta.url);
  if (existsSync(fileURLToPath(here))) return fileURLToPath(here);
  const built = new URL('../../dist/workers/worker.js', import.meta.url);
  if (existsSync(fileURLToPath(built))) return fileURLToPath(built);
  throw new Error('compiled worker not found: run `npm run build` first');
}

export interface Compute {
  run(pass: Pass, task: KernelTask, signal?: AbortSignal): Promise<KernelResult>;
  readonly ready: boolean;
  readonly queueSize: number;
  readonly utilization: number;
  readonly threads: number;
}

declare module 'fastify' {
  interface FastifyInstance {
    compute: Compute;
  }
}

export interface PoolOptions {
  workers: number;
  maxQueue: number;
  /** where requests run by size; defaults from the dispatch benchmark */
  thresholds?: Thresholds;
}

async function poolPlugin(app: FastifyInstance, opts: PoolOptions) {
  const pool = new Piscina({
    filename: workerFile(),
    minThreads: opts.workers,
    maxThreads: opts.workers,
    maxQueue: opts.maxQueue,
    // Kernels are CPU-bound: one task at a time per thread.
    concurrentTasksPerWorker: 1,
  });
  let ready = false;

  const compute: Compute = {
    async run(pass, task, signal) {
      try {
        return await dispatch(pool, opts.workers, opts.thresholds ?? DEFAULT_THRESHOLDS, pass, task, signal);
      } catch (err) {
        // piscina's two ways of saying "full": the queue is at maxQueue, or there is no queue (maxQueue 0).
        if (err instanceof Error && /queue is at limit|no task queue available/i.test(err.message)) {
          throw new Overloaded();
        }
        throw err;
      }
    },
    get ready() {
      return ready;
    },
    get queueSize() {
      return pool.queueSize;
    },
    get utilization() {
      return pool.utilization;
    },
    get threads() {
      return pool.threads.length;
    },
  };
  app.decorate('compute', compute);

  app.addHook('onReady', async () => {
    // One tiny task proves the workers load and the kernels run.
    const x = new Float64Array([1, 2]);
    await pool.run(
      {
        op: 'batch_norm',
        dtype: 'float64',
        shape: [2, 1],
        tensors: { x },
        params: { eps: 1e-5, correction: 1, training: true, momentum: 0.1, numBatchesTracked: 0 },
      },
      { name: 'forward', transferList: [x.buffer] },
    );
    ready = true;
  });
  app.addHook('preClose', async () => {
    ready = false;
  });
  app.addHook('onClose', async () => {
    await pool.close();
  });
}

export const computePool = fp(poolPlugin, { name: 'compute-pool' });
