import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useApp } from '../helpers.js';
import {
  expectBatchNormForward,
  expectProblem,
  float32Values,
  metric,
  parseMetrics,
  type ReadTensor,
  readSafetensors,
  SAFETENSORS,
  safetensorsBody,
  size,
  within,
} from './support.js';

/**
 * Load shedding by the worker queue (MAX_QUEUE): more concurrent requests than
 * WORKERS + MAX_QUEUE, over real HTTP (the app listening on loopback), each a
 * [32, 64, 56, 56] float32 batch-norm forward sent as safetensors (cheap to
 * parse, about a hundred milliseconds to compute). The excess is turned away at
 * once with a 503 problem and Retry-After; every admitted request gets its own
 * right answer (checked against statistics computed here, in float64); the
 * service answers normally right after.
 *
 * The event-loop and memory pressure checks are off so that only the queue sheds.
 */
const SHAPE = [32, 64, 56, 56];
const WORKERS = 1;
const MAX_QUEUE = 2;
const CONCURRENT = 12;
const OFF = { maxEventLoopDelayMs: 0, maxHeapUsedBytes: 0, maxRssBytes: 0 };

interface Answer {
  status: number;
  headers: Record<string, string>;
  bytes: Uint8Array;
  text: string;
}

async function post(base: string, body: Buffer): Promise<Answer> {
  const res = await fetch(`${base}/forward`, {
    method: 'POST',
    headers: { 'content-type': SAFETENSORS, accept: SAFETENSORS },
    body,
    signal: AbortSignal.timeout(60_000),
  });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const text = res.headers.get('content-type')?.startsWith(SAFETENSORS) ? '' : Buffer.from(bytes).toString();
  return { status: res.status, headers: Object.fromEntries(res.headers), bytes, text };
}

describe(`overload: WORKERS ${WORKERS}, MAX_QUEUE ${MAX_QUEUE}, ${CONCURRENT} concurrent ${JSON.stringify(SHAPE)} forwards`, () => {
  const t = useApp({ workers: WORKERS, maxQueue: MAX_QUEUE, pressure: OFF });
  let base = '';
  const xs = Array.from({ length: CONCURRENT }, (_, k) => float32Values(size(SHAPE), k + 1, 1 + k, 10 * k));
  const bodies = xs.map((x) => safetensorsBody({ x: { shape: SHAPE, data: x } }));

  beforeAll(async () => {
    base = await t.app.listen({ port: 0, host: '127.0.0.1' });
  });
  afterAll(() => {
    bodies.length = 0;
  });

  let burst: Answer[] = [];
  let maxQueueSeen = 0;

  it('sheds the excess with 503 + Retry-After, answers every admitted request right, and no other 5xx', async () => {
    const sampler = setInterval(() => {
      maxQueueSeen = Math.max(maxQueueSeen, t.app.compute.queueSize);
    }, 2);
    try {
      burst = await within(60_000, 'the burst', Promise.all(bodies.map((b) => post(base, b))));
    } finally {
      clearInterval(sampler);
    }
    const statuses = burst.map((r) => r.status);
    const shed = statuses.filter((s) => s === 503).length;
    const admitted = statuses.filter((s) => s === 200).length;
    console.log(
      `overload: ${CONCURRENT} concurrent requests, WORKERS ${WORKERS}, MAX_QUEUE ${MAX_QUEUE}: ` +
        `${admitted} answered, ${shed} shed (503); largest queue seen ${maxQueueSeen}; statuses ${statuses.join(',')}`,
    );
    for (const [k, r] of burst.entries()) {
      expect([200, 503], `request ${k}: ${r.status} ${r.text.slice(0, 300)}`).toContain(r.status);
      if (r.status === 503) {
        const p = expectProblem(r, 503);
        expect(p.type).toBe('urn:normserve:problem:overloaded');
        expect(Number(r.headers['retry-after'])).toBeGreaterThan(0);
      } else {
        expect(r.headers['content-type']).toMatch(/^application\/x-safetensors/);
        expectBatchNormForward(SHAPE, xs[k]!, readSafetensors(r.bytes).tensors);
      }
    }
    // The first WORKERS + MAX_QUEUE requests to arrive find room; with more in flight than that, some must be shed.
    expect(admitted).toBeGreaterThanOrEqual(WORKERS + MAX_QUEUE);
    expect(
      shed,
      `MAX_QUEUE ${MAX_QUEUE} must bound the queue: got statuses ${statuses.join(',')}`,
    ).toBeGreaterThan(0);
    expect(maxQueueSeen, 'tasks waiting for the worker never exceed MAX_QUEUE').toBeLessThanOrEqual(
      MAX_QUEUE,
    );
  });

  it('counts the shed requests in /metrics (rejected by reason "overloaded", 503 by route)', async () => {
    const samples = parseMetrics((await t.app.inject({ method: 'GET', url: '/metrics' })).body);
    const shed = burst.filter((r) => r.status === 503).length;
    expect(metric(samples, 'normserve_rejected_requests_total', { reason: 'overloaded' })).toBe(shed);
    expect(
      metric(samples, 'normserve_http_requests_total', { route: '/forward', method: 'POST', status: '503' }),
    ).toBe(shed);
  });

  it('right after the burst, the same request alone gets the same answer, and a small JSON one succeeds', async () => {
    const alone = await post(base, safetensorsBody({ x: { shape: SHAPE, data: xs[0]! } }));
    expect(alone.status, alone.text).toBe(200);
    const tensors: Record<string, ReadTensor> = readSafetensors(alone.bytes).tensors;
    expectBatchNormForward(SHAPE, xs[0]!, tensors);
    if (burst[0]?.status === 200)
      expect(Buffer.from(alone.bytes).equals(Buffer.from(burst[0].bytes))).toBe(true);
    const small = await fetch(`${base}/forward`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ x: [[1], [2], [3], [4]] }),
      signal: AbortSignal.timeout(10_000),
    });
    expect(small.status).toBe(200);
    const body = (await small.json()) as { mean: number[] };
    expect(body.mean).toEqual([2.5]);
    expect(t.app.compute.queueSize).toBe(0);
  });
});

describe('overload with MAX_QUEUE 0: a request turned away is never computed', () => {
  const t = useApp({ workers: 1, maxQueue: 0, pressure: OFF });
  let base = '';
  const xs = Array.from({ length: 8 }, (_, k) => float32Values(size(SHAPE), 50 + k, 2, -k));
  const bodies = xs.map((x) => safetensorsBody({ x: { shape: SHAPE, data: x } }));

  beforeAll(async () => {
    base = await t.app.listen({ port: 0, host: '127.0.0.1' });
  });

  it('once the admitted requests are answered, the worker is free: the next request is computed at once', async () => {
    const burst = await within(60_000, 'the burst', Promise.all(bodies.map((b) => post(base, b))));
    const statuses = burst.map((r) => r.status);
    expect(statuses.filter((s) => s === 503).length, statuses.join(',')).toBeGreaterThan(0);
    for (const [k, r] of burst.entries()) {
      if (r.status === 200) expectBatchNormForward(SHAPE, xs[k]!, readSafetensors(r.bytes).tensors);
      else expectProblem(r, 503);
    }
    // The shed requests' tasks must not run later in the background, holding the worker.
    const next = await post(base, bodies[0]!);
    expect(next.status, `after ${statuses.join(',')}: ${next.text.slice(0, 200)}`).toBe(200);
    expectBatchNormForward(SHAPE, xs[0]!, readSafetensors(next.bytes).tensors);
  });
});
