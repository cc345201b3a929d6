import { connect, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildApp } from '../../src/app.js';
import { testConfig } from '../../src/config.js';
import { TEST_HOOK_EPS } from '../../src/workers/test-hooks.js';
import {
  expectBatchNormForward,
  expectProblem,
  float32Values,
  readSafetensors,
  SAFETENSORS,
  type ServerProcess,
  safetensorsBody,
  size,
  startServer,
  until,
  within,
} from '../ops/support.js';

/**
 * Graceful shutdown of the real process (`node dist/server.js`, WORKERS 1):
 * several large safetensors forwards are in flight (one computing, the others
 * queued behind it) when SIGTERM arrives. Every one of them must get its own
 * right answer; new connections are refused from the moment the server
 * closes; a request pipelined on a busy keep-alive connection after SIGTERM
 * is answered 503 (readiness off); and the process exits 0 well within
 * SHUTDOWN_TIMEOUT_MS.
 */
const SHAPE = [32, 64, 56, 56];
const IN_FLIGHT = 7; // over fetch, plus one more on a raw keep-alive socket
const SHUTDOWN_TIMEOUT_MS = 10_000;

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** HTTP/1.1 responses with a Content-Length, read one after another from the bytes of one connection. */
function parseResponses(buf: Buffer): RawResponse[] {
  const out: RawResponse[] = [];
  let at = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end < 0) return out;
    const [statusLine, ...headerLines] = buf.subarray(at, end).toString('latin1').split('\r\n');
    const headers: Record<string, string> = {};
    for (const line of headerLines) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const length = Number(headers['content-length']);
    if (!Number.isFinite(length) || buf.length < end + 4 + length) return out;
    out.push({
      status: Number(statusLine!.split(' ')[1]),
      headers,
      body: buf.subarray(end + 4, end + 4 + length),
    });
    at = end + 4 + length;
  }
}

/** Resolves true when a new TCP connection to `port` is refused, false when it is accepted. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

describe('SIGTERM with requests in flight (the real server, WORKERS 1)', () => {
  let server: ServerProcess;
  const xs = Array.from({ length: IN_FLIGHT + 1 }, (_, k) =>
    float32Values(size(SHAPE), 100 + k, 1 + k / 4, k),
  );
  const bodies = xs.map((x) => safetensorsBody({ x: { shape: SHAPE, data: x } }));

  beforeAll(async () => {
    server = await startServer({
      WORKERS: '1',
      LOG_LEVEL: 'info',
      SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    });
  });
  afterAll(async () => {
    await server?.kill();
  });

  interface Outcome {
    status: number;
    contentType: string;
    bytes: Uint8Array;
    answeredAt: number;
  }
  const outcomes: Outcome[] = [];
  let raw: RawResponse[] = [];
  let sigtermAt = 0;
  let exitedAt = 0;
  let exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let refusedWhileDraining = false;
  let answeredBeforeSigterm = 0;

  it('runs the scenario: requests in flight, SIGTERM, drain, exit', async () => {
    const requests = bodies.slice(0, IN_FLIGHT).map(async (body, k) => {
      const res = await fetch(`${server.base}/forward`, {
        method: 'POST',
        headers: { 'content-type': SAFETENSORS, accept: SAFETENSORS },
        body,
        signal: AbortSignal.timeout(30_000),
      });
      const bytes = new Uint8Array(await res.arrayBuffer());
      outcomes[k] = {
        status: res.status,
        contentType: res.headers.get('content-type') ?? '',
        bytes,
        answeredAt: performance.now(),
      };
    });

    /** Tasks finished plus tasks waiting, from /metrics: how many requests have reached the pool. */
    const reachedPool = async () => {
      const text = await (
        await fetch(`${server.base}/metrics`, { signal: AbortSignal.timeout(5_000) })
      ).text();
      const done = [...text.matchAll(/^normserve_task_duration_seconds_count\{[^}]*\} (\d+)/gm)];
      const queued = /^normserve_pool_queue_size (\d+)/m.exec(text);
      return done.reduce((a, m) => a + Number(m[1]), 0) + Number(queued?.[1] ?? 0);
    };
    await until(20_000, 'requests to queue up in the pool', async () => (await reachedPool()) >= 3, 20);

    // One more large request, last in line, on a raw keep-alive connection: after SIGTERM, a GET /ready
    // is pipelined behind it.
    const socket: Socket = connect(server.port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const socketClosed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => undefined);
    await within(5_000, 'the raw connection', new Promise((resolve) => socket.once('connect', resolve)));
    const last = bodies[IN_FLIGHT]!;
    socket.write(
      `POST /forward HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\nContent-Type: ${SAFETENSORS}\r\n` +
        `Accept: ${SAFETENSORS}\r\nContent-Length: ${last.length}\r\n\r\n`,
    );
    socket.write(last);

    // SIGTERM once every request has reached the pool (one computing, the others waiting).
    await until(
      20_000,
      'every request to reach the pool',
      async () => (await reachedPool()) >= IN_FLIGHT,
      20,
    );
    answeredBeforeSigterm = outcomes.filter(Boolean).length;
    sigtermAt = performance.now();
    expect(server.child.kill('SIGTERM')).toBe(true);

    // The listening socket closes at once; the connections in flight stay.
    await until(5_000, 'new connections to be refused', () => refused(server.port), 5);
    refusedWhileDraining = outcomes.filter(Boolean).length < IN_FLIGHT;
    // Readiness on the busy keep-alive connection, pipelined behind its large request.
    socket.write('GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');

    await within(30_000, 'every in-flight request to be answered', Promise.all(requests));
    await within(30_000, 'the raw connection to close', socketClosed);
    raw = parseResponses(Buffer.concat(chunks));
    exit = await within(SHUTDOWN_TIMEOUT_MS + 5_000, 'the process to exit', server.exited);
    exitedAt = performance.now();
    const kept =
      outcomes.filter((o, k) => o.status === 200 && k >= 0).length + (raw[0]?.status === 200 ? 1 : 0);
    console.log(
      `shutdown: ${IN_FLIGHT + 1} large requests sent, ${answeredBeforeSigterm} answered before SIGTERM, ` +
        `${kept - answeredBeforeSigterm} in flight at SIGTERM and answered 200 after it; ` +
        `exit ${exit.code} ${Math.round(exitedAt - sigtermAt)} ms after SIGTERM; ` +
        `pipelined /ready: ${raw[1] ? `${raw[1].status} ${raw[1].headers['content-type']}` : 'not reached'}`,
    );
  });

  it('every request in flight at SIGTERM got its own right answer', () => {
    expect(outcomes.filter(Boolean)).toHaveLength(IN_FLIGHT);
    expect(answeredBeforeSigterm, 'most requests were still in flight at SIGTERM').toBeLessThan(
      IN_FLIGHT - 1,
    );
    for (const [k, o] of outcomes.entries()) {
      expect(o.status, `request ${k}`).toBe(200);
      expect(o.contentType).toMatch(/^application\/x-safetensors/);
      expectBatchNormForward(SHAPE, xs[k]!, readSafetensors(o.bytes).tensors);
    }
    expect(raw[0]?.status, 'the large request on the raw connection').toBe(200);
    expectBatchNormForward(SHAPE, xs[IN_FLIGHT]!, readSafetensors(raw[0]!.body).tensors);
  });

  it('new connections were refused while requests were still draining', () => {
    expect(refusedWhileDraining).toBe(true);
  });

  it('a request pipelined on a busy keep-alive connection after SIGTERM is a 503 (when it reaches the server)', () => {
    if (raw.length < 2) return;
    expect(raw[1]!.status).toBe(503);
    expect(raw[1]!.headers.connection).toBe('close');
  });

  it('the process exited 0 within SHUTDOWN_TIMEOUT_MS, with a "shutting down" log line', () => {
    expect(exit, server.lines.join('\n')).toEqual({ code: 0, signal: null });
    expect(exitedAt - sigtermAt).toBeLessThan(SHUTDOWN_TIMEOUT_MS);
    expect(server.lines.some((l) => l.includes('"shutting down"') && l.includes('SIGTERM'))).toBe(true);
  });
});

describe('a request that arrives on a busy keep-alive connection while the app closes (in-process, real HTTP)', () => {
  it('is answered with a 503 problem and Retry-After, or its connection is closed', async () => {
    const app = await buildApp(
      testConfig({
        testHooks: true,
        workers: 1,
        taskTimeoutMs: 1_500,
        thresholds: { inlineMax: 0, splitMin: Number.MAX_SAFE_INTEGER },
      }),
    );
    const base = await app.listen({ port: 0, host: '127.0.0.1' });
    const port = Number(new URL(base).port);
    const socket = connect(port, '127.0.0.1');
    try {
      const chunks: Buffer[] = [];
      socket.on('data', (c: Buffer) => chunks.push(c));
      socket.on('error', () => undefined);
      const socketClosed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
      await within(5_000, 'the connection', new Promise((resolve) => socket.once('connect', resolve)));
      // In flight: a computation that takes TASK_TIMEOUT_MS (then a 504).
      const body = JSON.stringify({ x: [[1], [2], [3], [4]], eps: TEST_HOOK_EPS.hang });
      socket.write(
        `POST /forward HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      );
      await new Promise((r) => setTimeout(r, 200));
      const closing = app.close();
      await until(5_000, 'the listener to close', () => refused(port), 5);
      socket.write('GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
      await within(10_000, 'the connection to close', socketClosed);
      await within(10_000, 'app.close()', closing);
      const replies = parseResponses(Buffer.concat(chunks));
      expect(replies[0]?.status).toBe(504);
      const ready = replies[1];
      if (ready) {
        const text = ready.body.toString();
        expectProblem({ status: ready.status, headers: ready.headers, text }, 503);
        expect(ready.headers['retry-after']).toBeDefined();
        expect(ready.headers.connection).toBe('close');
      }
    } finally {
      socket.destroy();
      await app.close();
    }
  });
});
