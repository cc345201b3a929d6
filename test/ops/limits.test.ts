import { request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { TEST_HOOK_EPS } from '../../src/workers/test-hooks.js';
import { useApp } from '../helpers.js';
import {
  expectProblem,
  float32Values,
  metric,
  parseMetrics,
  SAFETENSORS,
  safetensorsBody,
  size,
  until,
  within,
} from './support.js';

/**
 * The limits that protect the service: MAX_ELEMENTS per tensor, BODY_LIMIT per
 * body (JSON and safetensors, with and without a Content-Length),
 * REQUEST_TIMEOUT_MS against slow clients, and cancellation of the work of a
 * client that hangs up.
 */

const column = (n: number) => ({ shape: [n, 1], data: Array.from({ length: n }, (_, i) => i % 5) });

describe('MAX_ELEMENTS: a 413 naming the tensor', () => {
  const t = useApp({ maxElements: 100 });

  it('x with one element too many, as JSON', async () => {
    const r = await t.post('/forward', { x: column(101) });
    const p = expectProblem(r, 413, 'x');
    expect(p.type).toBe('urn:normserve:problem:too-many-elements');
    expect(p.detail).toMatch(/\bx\b.*101.*100/);
  });

  it('x at the limit is computed', async () => {
    const r = await t.post('/forward', { x: column(100) });
    expect(r.status, r.text).toBe(200);
  });

  it('x and dy over the limit in /backward, nested, every op', async () => {
    const x = Array.from({ length: 12 }, (_, i) => Array.from({ length: 10 }, (_, j) => i + j));
    for (const extra of [{}, { op: 'layer_norm' }, { op: 'group_norm', numGroups: 2 }, { op: 'rms_norm' }]) {
      const r = await t.post('/backward', { x, dy: x, ...extra });
      const p = expectProblem(r, 413);
      expect(['x', 'dy']).toContain(p.errors[0]!.path);
    }
  });

  it('x over the limit, as safetensors', async () => {
    const body = safetensorsBody({ x: { shape: [101, 1], data: float32Values(101, 1) } });
    const r = await t.app.inject({
      method: 'POST',
      url: '/forward',
      payload: body,
      headers: { 'content-type': SAFETENSORS },
    });
    expectProblem({ status: r.statusCode, headers: r.headers, text: r.body }, 413, 'x');
  });
});

/** POSTs `chunks` over real HTTP with chunked transfer encoding (no Content-Length). */
function postChunked(base: string, type: string, chunks: Buffer[]) {
  return new Promise<{ status: number; headers: Record<string, unknown>; text: string }>(
    (resolve, reject) => {
      const req = httpRequest(
        `${base}/forward`,
        { method: 'POST', headers: { 'content-type': type } },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (c: Buffer) => parts.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode!, headers: res.headers, text: Buffer.concat(parts).toString() }),
          );
        },
      );
      req.on('error', reject);
      req.setTimeout(10_000, () => req.destroy(new Error('timed out')));
      (async () => {
        for (const c of chunks) {
          if (req.destroyed) return;
          req.write(c);
          await new Promise((r) => setImmediate(r));
        }
        req.end();
      })();
    },
  );
}

describe('BODY_LIMIT: a 413 for JSON and safetensors bodies', () => {
  const LIMIT = 4096;
  const t = useApp({ bodyLimit: LIMIT });
  let base = '';
  beforeAll(async () => {
    base = await t.app.listen({ port: 0, host: '127.0.0.1' });
  });

  const bigJson = JSON.stringify({
    x: { shape: [400, 1], data: Array.from({ length: 400 }, (_, i) => i / 7) },
  });
  const bigBinary = safetensorsBody({ x: { shape: [1200, 1], data: float32Values(1200, 2) } });
  const smallBinary = safetensorsBody({ x: { shape: [900, 1], data: float32Values(900, 3) } });

  it('JSON over the limit, with a Content-Length', async () => {
    expect(bigJson.length).toBeGreaterThan(LIMIT);
    expectProblem(await t.post('/forward', bigJson), 413, 'body');
  });

  it('safetensors over the limit, with a Content-Length', async () => {
    expect(bigBinary.length).toBeGreaterThan(LIMIT);
    const r = await t.app.inject({
      method: 'POST',
      url: '/forward',
      payload: bigBinary,
      headers: { 'content-type': SAFETENSORS },
    });
    expectProblem({ status: r.statusCode, headers: r.headers, text: r.body }, 413, 'body');
  });

  it('JSON and safetensors over the limit, chunked (no Content-Length), over HTTP', async () => {
    const json = Buffer.from(bigJson);
    const slices = (b: Buffer) =>
      Array.from({ length: Math.ceil(b.length / 1000) }, (_, i) => b.subarray(i * 1000, (i + 1) * 1000));
    expectProblem(
      await within(15_000, 'the JSON reply', postChunked(base, 'application/json', slices(json))),
      413,
    );
    expectProblem(
      await within(15_000, 'the safetensors reply', postChunked(base, SAFETENSORS, slices(bigBinary))),
      413,
    );
  });

  it('a safetensors body just under the limit, chunked, is computed', async () => {
    expect(smallBinary.length).toBeLessThanOrEqual(LIMIT);
    const r = await within(
      15_000,
      'the reply',
      postChunked(base, SAFETENSORS, [smallBinary.subarray(0, 100), smallBinary.subarray(100)]),
    );
    expect(r.status, r.text).toBe(200);
  });
});

describe('REQUEST_TIMEOUT_MS 500: slow clients are cut off, the others served', () => {
  const t = useApp({ requestTimeoutMs: 500 });
  let port = 0;
  let base = '';
  beforeAll(async () => {
    base = await t.app.listen({ port: 0, host: '127.0.0.1' });
    port = Number(new URL(base).port);
  });

  /** Opens a socket, sends `head`, and reports what the server sent and when it closed the connection. */
  async function slowClient(head: string, waitMs: number) {
    const socket: Socket = connect(port, '127.0.0.1');
    const started = performance.now();
    let received = '';
    socket.on('data', (c: Buffer) => {
      received += c.toString();
    });
    socket.on('error', () => undefined);
    const closed = new Promise<number>((resolve) =>
      socket.once('close', () => resolve(performance.now() - started)),
    );
    await within(5_000, 'the connection', new Promise((resolve) => socket.once('connect', resolve)));
    socket.write(head);
    // Meanwhile, a well-behaved client is served.
    const other = await fetch(`${base}/forward`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ x: [[1], [2], [3], [4]] }),
      signal: AbortSignal.timeout(5_000),
    });
    expect(other.status).toBe(200);
    try {
      const ms = await within(
        waitMs,
        `the server to close the slow connection (REQUEST_TIMEOUT_MS 500)`,
        closed,
      );
      return { ms, received };
    } finally {
      socket.destroy();
    }
  }

  it('a client that sends its headers and half its body is answered 408 or disconnected within seconds', async () => {
    const body = JSON.stringify({ x: [[1], [2], [3], [4]] });
    const { ms, received } = await slowClient(
      `POST /forward HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, body.length / 2)}`,
      5_000,
    );
    expect(ms).toBeGreaterThanOrEqual(450);
    if (received) expect(received).toMatch(/^HTTP\/1\.1 408 /);
    const after = await fetch(`${base}/health`, { signal: AbortSignal.timeout(5_000) });
    expect(after.status).toBe(200);
  });

  it('a client that never finishes its headers is answered 408 or disconnected within seconds', async () => {
    const { ms, received } = await slowClient('POST /forward HTTP/1.1\r\nHost: 127.0.0.1\r\n', 5_000);
    expect(ms).toBeGreaterThanOrEqual(450);
    if (received) expect(received).toMatch(/^HTTP\/1\.1 408 /);
  });
});

describe('a client that hangs up cancels its computation (real HTTP, WORKERS 1)', () => {
  const t = useApp({
    testHooks: true,
    workers: 1,
    taskTimeoutMs: 20_000,
    thresholds: { inlineMax: 0, splitMin: Number.MAX_SAFE_INTEGER },
  });
  let base = '';
  beforeAll(async () => {
    base = await t.app.listen({ port: 0, host: '127.0.0.1' });
  });

  const metrics = async () => parseMetrics((await t.app.inject({ method: 'GET', url: '/metrics' })).body);
  const cancelled = (s: ReturnType<typeof parseMetrics>) =>
    metric(s, 'normserve_task_duration_seconds_count', { outcome: 'cancelled' });

  it('a queued request whose client goes away leaves the queue at once; the running one frees its worker', async () => {
    // A: a computation that never ends, holding the only worker.
    const a = new AbortController();
    const hung = fetch(`${base}/forward`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ x: [[1], [2], [3], [4]], eps: TEST_HOOK_EPS.hang }),
      signal: a.signal,
    }).catch((err: Error) => err);
    await new Promise((r) => setTimeout(r, 200));
    // B: a large request queued behind it.
    const shape = [8, 64, 56, 56];
    const b = new AbortController();
    const queued = fetch(`${base}/forward`, {
      method: 'POST',
      headers: { 'content-type': SAFETENSORS, accept: SAFETENSORS },
      body: safetensorsBody({ x: { shape, data: float32Values(size(shape), 5) } }),
      signal: b.signal,
    }).catch((err: Error) => err);
    await until(10_000, 'B to wait in the queue', () => t.app.compute.queueSize === 1);
    expect((await metrics()).find((s) => s.name === 'normserve_pool_queue_size')?.value).toBe(1);

    b.abort();
    expect(await queued).toBeInstanceOf(Error);
    await until(2_000, 'the queue to empty', () => t.app.compute.queueSize === 0);
    await until(2_000, 'B counted as cancelled', async () => cancelled(await metrics()) === 1);

    a.abort();
    expect(await hung).toBeInstanceOf(Error);
    await until(2_000, 'A counted as cancelled', async () => cancelled(await metrics()) === 2);

    // The worker that ran A was replaced: the next request is answered long before TASK_TIMEOUT_MS.
    const started = performance.now();
    const next = await fetch(`${base}/forward`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ x: [[1], [2], [3], [4]] }),
      signal: AbortSignal.timeout(10_000),
    });
    expect(next.status).toBe(200);
    expect(((await next.json()) as { mean: number[] }).mean).toEqual([2.5]);
    expect(performance.now() - started).toBeLessThan(3_000);
    expect(t.app.compute.threads).toBe(1);
  });

  it('a cancelled request is not counted as a server error (no 5xx, no "internal" rejection)', async () => {
    const s = await metrics();
    const fiveHundreds = s.filter(
      (m) => m.name === 'normserve_http_requests_total' && m.labels.status?.startsWith('5') && m.value > 0,
    );
    expect(fiveHundreds.map((m) => m.labels)).toEqual([]);
    expect(metric(s, 'normserve_rejected_requests_total', { reason: 'internal' })).toBe(0);
  });
});
