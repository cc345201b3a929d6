import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Piscina } from 'piscina';
import { ClientClosedRequest, ComputeFailed, Overloaded, TaskTimeout } from '../errors.js';
import type { Pass } from '../kernels/registry.js';
import type { KernelResult, KernelTask } from '../kernels/task.js';
import { sizeOf } from '../tensor/tensor.js';
import { DEFAULT_THRESHOLDS, dispatch, type Route, routeOf, type Thresholds } from './dispatch.js';

/**
 * The piscina pool that runs the kernels off the event loop, with its limits:
 * a bounded queue (MAX_QUEUE, then 503), a time limit per task (TASK_TIMEOUT_MS,
 * then 504 and the worker replaced), cancellation when the client goes away,
 * and a heap limit per worker (a worker that crashes or runs out of memory fails
 * only its own request and is replaced).
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
  /**
   * Runs a pass; `signal` aborts it (the client went away); `shared` provides the shared
   * memory of a split computation (default: fresh buffers).
   */
  run(
    pass: Pass,
    task: KernelTask,
    signal?: AbortSignal,
    shared?: (bytes: number) => SharedArrayBuffer,
  ): Promise<KernelResult>;
  route(task: KernelTask): Route;
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
  taskTimeoutMs: number;
  /** where requests run by size; defaults from the dispatch benchmark */
  thresholds?: Thresholds;
  testHooks?: boolean;
}

/** A worker's JS heap; tensors live outside it (array buffers), so this bounds runaway code, not data. */
const WORKER_HEAP_MB = 256;

async function poolPlugin(app: FastifyInstance, opts: PoolOptions) {
  const pool = new Piscina({
    filename: workerFile(),
    minThreads: opts.workers,
    maxThreads: opts.workers,
    // No maxQueue here: piscina does not count tasks that carry an AbortSignal against it
    // (every task here does), and with 0 it still runs what it refused. Admission is counted below.
    // Kernels are CPU-bound: one task at a time per thread.
    concurrentTasksPerWorker: 1,
    resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB },
    workerData: { testHooks: opts.testHooks === true },
  });
  // A worker that dies is replaced by piscina; the event is worth a log line, not a crash.
  pool.on('error', (err) => app.log.error({ err }, 'worker error'));
  const thresholds = opts.thresholds ?? DEFAULT_THRESHOLDS;
  let ready = false;

  // Requests in the pool, running or waiting: at most WORKERS + MAX_QUEUE, a split request
  // counting once per worker it occupies (and always admitted into an empty pool).
  let admitted = 0;
  const capacity = opts.workers + opts.maxQueue;

  async function runAdmitted(
    pass: Pass,
    task: KernelTask,
    signal?: AbortSignal,
    shared?: (bytes: number) => SharedArrayBuffer,
  ): Promise<KernelResult> {
    const timeout = AbortSignal.timeout(opts.taskTimeoutMs);
    const both = signal ? AbortSignal.any([signal, timeout]) : timeout;
    try {
      return await dispatch(pool, opts.workers, thresholds, pass, task, both, shared);
    } catch (err) {
      if (timeout.aborted) throw new TaskTimeout(opts.taskTimeoutMs);
      if (signal?.aborted) throw new ClientClosedRequest();
      // A worker that exited or ran out of memory: the request fails, the details go to the log only.
      app.log.error({ err }, 'computation failed');
      throw new ComputeFailed();
    }
  }

  const compute: Compute = {
    async run(pass, task, signal, shared) {
      const where = routeOf(sizeOf(task.shape), opts.workers, thresholds);
      const units = where === 'inline' ? 0 : where === 'split' ? opts.workers : 1;
      if (units > 0 && admitted + units > Math.max(capacity, units)) throw new Overloaded();
      admitted += units;
      try {
        return await runAdmitted(pass, task, signal, shared);
      } finally {
        admitted -= units;
      }
    },
    route: (task) =>
      routeOf(
        task.shape.reduce((a, b) => a * b, 1),
        opts.workers,
        thresholds,
      ),
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
