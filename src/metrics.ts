import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * Prometheus metrics (prom-client), one registry per app: request counts and
 * latencies by route and status, the pool's queue and utilization, task
 * durations by op and where they ran, and rejected requests by reason.
 */
export interface Metrics {
  registry: Registry;
  rejected: Counter<'reason'>;
  taskSeconds: Histogram<'op' | 'pass' | 'route' | 'outcome'>;
}

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics;
  }
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

async function metricsPlugin(app: FastifyInstance) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'normserve_' });
  const requests = new Counter({
    name: 'normserve_http_requests_total',
    help: 'HTTP requests answered, by route, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    registers: [registry],
  });
  const seconds = new Histogram({
    name: 'normserve_http_request_duration_seconds',
    help: 'HTTP request latency, by route, method and status',
    labelNames: ['route', 'method', 'status'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  const rejected = new Counter({
    name: 'normserve_rejected_requests_total',
    help: 'Requests refused before or instead of computing, by reason',
    labelNames: ['reason'] as const,
    registers: [registry],
  });
  const taskSeconds = new Histogram({
    name: 'normserve_task_duration_seconds',
    help: 'Kernel task durations, by op, pass, route (inline, pool, split) and outcome',
    labelNames: ['op', 'pass', 'route', 'outcome'] as const,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  });
  new Gauge({
    name: 'normserve_pool_queue_size',
    help: 'Tasks waiting for a worker',
    registers: [registry],
    collect() {
      this.set(app.compute.queueSize);
    },
  });
  new Gauge({
    name: 'normserve_pool_utilization',
    help: "The worker pool's utilization (0 to 1), as piscina measures it",
    registers: [registry],
    collect() {
      this.set(app.compute.utilization);
    },
  });
  new Gauge({
    name: 'normserve_pool_threads',
    help: 'Worker threads alive',
    registers: [registry],
    collect() {
      this.set(app.compute.threads);
    },
  });

  app.decorate('metrics', { registry, rejected, taskSeconds });

  app.addHook('onResponse', async (request, reply) => {
    // The route's pattern, not the URL: unknown URLs must not create label values.
    const route = request.routeOptions.url ?? 'unmatched';
    const labels = { route, method: request.method, status: String(reply.statusCode) };
    requests.inc(labels);
    seconds.observe(labels, reply.elapsedTime / 1000);
  });

  app.get(
    '/metrics',
    {
      schema: {
        summary: 'Prometheus metrics',
        description:
          'Request counts and latencies, pool queue and utilization, task durations, rejections by reason.',
        tags: ['operations'],
        security: [{ apiKey: [] }],
      },
    },
    async (_request, reply) => reply.type(registry.contentType).send(await registry.metrics()),
  );
}

export const metrics = fp(metricsPlugin, { name: 'metrics', dependencies: ['compute-pool'] });
