import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_HOOK_EPS } from '../../src/workers/test-hooks.js';
import { type Reply, useApp } from '../helpers.js';
import {
  expectProblem,
  float32Values,
  logRecords,
  metric,
  parseMetrics,
  SAFETENSORS,
  type ServerProcess,
  safetensorsBody,
  startServer,
  until,
  within,
} from './support.js';

/**
 * The operational surface: API keys on every endpoint, the Prometheus
 * metrics, request ids, and the one log line per request.
 */
const X = [[1], [2], [3], [4]];
const BODIES: Record<string, unknown> = { '/forward': { x: X }, '/backward': { x: X, dy: X } };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

describe('API keys (API_KEYS k1,k2)', () => {
  const t = useApp({ apiKeys: ['k1', 'k2'] });

  const call = (method: 'GET' | 'POST' | 'HEAD', url: string, authorization?: string): Promise<Reply> =>
    method === 'POST'
      ? t.post(url, BODIES[url] ?? {}, authorization === undefined ? {} : { authorization })
      : t.app
          .inject({ method, url, headers: authorization === undefined ? {} : { authorization } })
          .then((r) => ({ status: r.statusCode, headers: r.headers, text: r.body, body: undefined }));

  const protectedEndpoints = [
    ['POST', '/forward'],
    ['POST', '/backward'],
    ['GET', '/metrics'],
  ] as const;

  const wrong = [
    undefined,
    '',
    'Bearer',
    'Bearer ',
    'Bearer k3',
    'Bearer K1',
    'Bearer k1k2',
    'Bearer k1,k2',
    'Bearer k',
    'Basic k1',
    'Token k1',
    'k1',
    'Bearerk1',
  ];
  const right = ['Bearer k1', 'Bearer k2', 'bearer k1', 'BEARER k2', 'BeArEr k1', 'Bearer   k2'];

  for (const [method, url] of protectedEndpoints) {
    it(`${method} ${url}: a missing or wrong key is a 401 problem with WWW-Authenticate`, async () => {
      for (const authorization of wrong) {
        const r = await call(method, url, authorization);
        expectProblem(r, 401, 'authorization');
        expect(r.headers['www-authenticate'], String(authorization)).toBe('Bearer');
      }
    });

    it(`${method} ${url}: either key, with the scheme in any case, is let in`, async () => {
      for (const authorization of right) {
        const r = await call(method, url, authorization);
        expect(r.status, `${authorization}: ${r.text.slice(0, 200)}`).toBe(200);
      }
    });
  }

  it('HEAD /metrics and /metrics?query need a key too', async () => {
    expect((await call('HEAD', '/metrics')).status).toBe(401);
    expectProblem(await call('GET', '/metrics?format=text'), 401);
    expect((await call('GET', '/metrics?format=text', 'Bearer k2')).status).toBe(200);
  });

  it('paths that only look open do not get past the key', async () => {
    for (const url of [
      '/health/../metrics',
      '/ready/../metrics',
      '/openapi.json/../metrics',
      '/health%2F..%2Fmetrics',
    ]) {
      const r = await call('GET', url);
      expect(r.status, url).toBe(401);
    }
    for (const url of ['/docs/../forward', '/docs/%2E%2E/forward']) {
      const r = await t.post(url, BODIES['/forward']);
      expect(r.status, url).not.toBe(200);
      expect(r.text).not.toContain('"mean"');
    }
  });

  for (const url of ['/health', '/ready', '/openapi.json']) {
    it(`GET ${url} stays open, with no key or a wrong one`, async () => {
      expect((await call('GET', url)).status).toBe(200);
      expect((await call('GET', url, 'Bearer nope')).status).toBe(200);
    });
  }

  it('GET /docs stays open', async () => {
    let r = await call('GET', '/docs');
    for (let hops = 0; hops < 3 && r.status >= 300 && r.status < 400; hops++) {
      r = await call('GET', String(r.headers.location));
    }
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/html/);
  });
});

describe('/metrics (Prometheus text format)', () => {
  const t = useApp({
    apiKeys: ['k1'],
    testHooks: true,
    workers: 1,
    maxQueue: 0,
    taskTimeoutMs: 1_000,
    thresholds: { inlineMax: 0, splitMin: Number.MAX_SAFE_INTEGER },
  });
  const auth = { authorization: 'Bearer k1' };
  let text = '';
  let contentType = '';

  beforeAll(async () => {
    // A 200 forward and backward, a 400, a 401, a 404, then a 504 (a hung task) beside a 503 (no queue, worker busy).
    expect((await t.post('/forward', { x: X }, auth)).status).toBe(200);
    expect((await t.post('/backward', { x: X, dy: X }, auth)).status).toBe(200);
    expect((await t.post('/forward', { x: [[1, 2], [3]] }, auth)).status).toBe(400);
    expect((await t.post('/forward', { x: X })).status).toBe(401);
    expect((await t.get('/no-such-route-123', auth)).status).toBe(404);
    const hung = t.post('/forward', { x: X, eps: TEST_HOOK_EPS.hang }, auth);
    // Let the hung task reach the worker.
    await new Promise((r) => setTimeout(r, 150));
    const shed = await t.post('/forward', { x: X }, auth);
    expectProblem(shed, 503);
    expect((await within(10_000, 'the hung request', hung)).status).toBe(504);
    const r = await t.app.inject({ method: 'GET', url: '/metrics', headers: auth });
    expect(r.statusCode).toBe(200);
    text = r.body;
    contentType = String(r.headers['content-type']);
  });

  it('is Prometheus text exposition', () => {
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(text).toMatch(/^# HELP normserve_http_requests_total /m);
    expect(text).toMatch(/^# TYPE normserve_http_requests_total counter$/m);
    expect(text).toMatch(/^# TYPE normserve_http_request_duration_seconds histogram$/m);
    parseMetrics(text);
  });

  it('counts requests by route, method and status', () => {
    const s = parseMetrics(text);
    const count = (route: string, method: string, status: string) =>
      metric(s, 'normserve_http_requests_total', { route, method, status });
    expect(count('/forward', 'POST', '200')).toBe(1);
    expect(count('/backward', 'POST', '200')).toBe(1);
    expect(count('/forward', 'POST', '400')).toBe(1);
    expect(count('/forward', 'POST', '401')).toBe(1);
    expect(count('/forward', 'POST', '503')).toBe(1);
    expect(count('/forward', 'POST', '504')).toBe(1);
    // An unknown URL does not become a label value.
    expect(text).not.toContain('no-such-route-123');
    expect(metric(s, 'normserve_http_requests_total', { status: '404' })).toBe(1);
  });

  it('has latency histograms by route and status', () => {
    const s = parseMetrics(text);
    const labels = { route: '/forward', method: 'POST', status: '200' };
    const inf = metric(s, 'normserve_http_request_duration_seconds_bucket', { ...labels, le: '+Inf' });
    expect(inf).toBe(1);
    expect(metric(s, 'normserve_http_request_duration_seconds_count', labels)).toBe(1);
    expect(metric(s, 'normserve_http_request_duration_seconds_sum', labels)).toBeGreaterThan(0);
    const buckets = s.filter(
      (m) => m.name === 'normserve_http_request_duration_seconds_bucket' && m.labels.status === '504',
    );
    expect(buckets.length).toBeGreaterThan(5);
    // The 504 took about TASK_TIMEOUT_MS: not in the 0.5 s bucket, in the 2.5 s one.
    expect(buckets.find((b) => b.labels.le === '0.5')?.value).toBe(0);
    expect(buckets.find((b) => b.labels.le === '2.5')?.value).toBe(1);
  });

  it('reports the pool: queue size, utilization, threads', () => {
    const s = parseMetrics(text);
    expect(s.some((m) => m.name === 'normserve_pool_queue_size')).toBe(true);
    const utilization = metric(s, 'normserve_pool_utilization');
    expect(utilization).toBeGreaterThanOrEqual(0);
    expect(utilization).toBeLessThanOrEqual(1);
    expect(metric(s, 'normserve_pool_threads')).toBe(1);
  });

  it('has task durations by op, pass, route and outcome', () => {
    const s = parseMetrics(text);
    const n = (labels: Record<string, string>) => metric(s, 'normserve_task_duration_seconds_count', labels);
    expect(n({ op: 'batch_norm', pass: 'forward', route: 'pool', outcome: 'ok' })).toBe(1);
    expect(n({ op: 'batch_norm', pass: 'backward', route: 'pool', outcome: 'ok' })).toBe(1);
    // The hung task; the request shed with a 503 is counted as "failed" too.
    expect(n({ op: 'batch_norm', pass: 'forward', route: 'pool', outcome: 'failed' })).toBeGreaterThanOrEqual(
      1,
    );
  });

  it('counts rejected requests by reason', () => {
    const s = parseMetrics(text);
    const n = (reason: string) => metric(s, 'normserve_rejected_requests_total', { reason });
    expect(n('invalid-request')).toBe(1);
    expect(n('unauthorized')).toBe(1);
    expect(n('overloaded')).toBe(1);
    expect(n('task-timeout')).toBe(1);
  });

  it('has the default process and Node.js metrics under the normserve_ prefix', () => {
    // (prom-client's own names already start with process_ / nodejs_; the prefix doubles "process_".)
    expect(text).toMatch(/^normserve_(process_)?process_resident_memory_bytes \d+/m);
    expect(text).toMatch(/^normserve_(process_)?nodejs_eventloop_lag_seconds /m);
  });
});

describe('X-Request-Id', () => {
  const t = useApp({ apiKeys: ['k1'] });

  it('a sane id is kept and echoed, on success and on errors', async () => {
    for (const id of ['abc-123', 'A.b:c_d-9', 'x'.repeat(128)]) {
      const ok = await t.post('/forward', { x: X }, { authorization: 'Bearer k1', 'x-request-id': id });
      expect(ok.headers['x-request-id']).toBe(id);
      const denied = await t.post('/forward', { x: X }, { 'x-request-id': id });
      expect(denied.status).toBe(401);
      expect(denied.headers['x-request-id']).toBe(id);
      const missing = await t.get('/nope', { authorization: 'Bearer k1', 'x-request-id': id });
      expect(missing.headers['x-request-id']).toBe(id);
    }
  });

  it('a hostile or oversized id is replaced by a fresh UUID', async () => {
    const ids = [
      '<script>alert(1)</script>',
      'x'.repeat(129),
      'two words',
      '../../etc/passwd',
      '"quoted"',
      'a,b',
      '',
    ];
    for (const id of ids) {
      const r = await t.post('/forward', { x: X }, { authorization: 'Bearer k1', 'x-request-id': id });
      expect(r.status).toBe(200);
      expect(r.headers['x-request-id'], JSON.stringify(id)).toMatch(UUID);
    }
  });

  it('without one, every request gets its own UUID', async () => {
    const a = await t.get('/health');
    const b = await t.get('/health');
    expect(a.headers['x-request-id']).toMatch(UUID);
    expect(b.headers['x-request-id']).toMatch(UUID);
    expect(a.headers['x-request-id']).not.toBe(b.headers['x-request-id']);
  });
});

describe('request logs of the real process (JSON on stdout)', () => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await startServer({ WORKERS: '1', LOG_LEVEL: 'info', API_KEYS: 'k1,secret-key-2' });
  });
  afterAll(async () => {
    await server?.kill();
  });

  // Values that must never reach the logs.
  const SECRET_VALUES = ['1234.5678', '8765.4321', '9999.111', '4321.125'];
  const sent: { id: string; status: number; route: string; shapes?: Record<string, number[]> }[] = [];

  async function send(
    id: string,
    path: string,
    init: RequestInit,
    route: string,
    shapes?: Record<string, number[]>,
  ) {
    const r = await fetch(`${server.base}${path}`, {
      ...init,
      headers: { ...(init.headers as Record<string, string>), 'x-request-id': id },
      signal: AbortSignal.timeout(10_000),
    });
    await r.arrayBuffer();
    expect(r.headers.get('x-request-id')).toBe(id);
    sent.push({ id, status: r.status, route, shapes });
    return r.status;
  }

  it('writes exactly one line per request, with id, route, status, duration and shapes', async () => {
    const json = (body: unknown, key = 'k1') => ({
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body: JSON.stringify(body),
    });
    const x = [[1234.5678], [8765.4321], [5]];
    expect(await send('log-fwd-1', '/forward', json({ x }), '/forward', { x: [3, 1] })).toBe(200);
    expect(
      await send('log-bwd-1', '/backward', json({ x, dy: x }, 'secret-key-2'), '/backward', {
        x: [3, 1],
        dy: [3, 1],
      }),
    ).toBe(200);
    const binary = safetensorsBody({ x: { shape: [2, 3, 2], data: float32Values(12, 9, 0.5, 4321.125) } });
    const bin = {
      method: 'POST',
      headers: { 'content-type': SAFETENSORS, authorization: 'Bearer k1' },
      body: binary,
    };
    expect(await send('log-bin-1', '/forward', bin, '/forward', { x: [2, 3, 2] })).toBe(200);
    expect(await send('log-bad-1', '/forward', json({ x: [[9999.111, 1], [2]] }), '/forward')).toBe(400);
    expect(
      await send(
        'log-denied-1',
        '/forward',
        {
          ...json({ x }),
          headers: { 'content-type': 'application/json', authorization: 'Bearer wrong-secret-key' },
        },
        '/forward',
      ),
    ).toBe(401);
    expect(await send('log-health-1', '/health', {}, '/health')).toBe(200);

    await until(5_000, 'the last log line', () => server.lines.some((l) => l.includes('"log-health-1"')));
    const records = logRecords(server.lines).filter((r) => typeof r.reqId === 'string');
    for (const s of sent) {
      const mine = records.filter((r) => r.reqId === s.id);
      expect(mine, `${s.id}: ${JSON.stringify(mine)}`).toHaveLength(1);
      const line = mine[0]!;
      expect(line.msg).toBe('request');
      expect(line.route).toBe(s.route);
      expect(line.status).toBe(s.status);
      expect(typeof line.ms).toBe('number');
      expect(line.ms as number).toBeGreaterThanOrEqual(0);
      if (s.shapes) expect(line.tensors).toEqual(s.shapes);
      else expect(line.tensors).toBeUndefined();
    }
    expect(records.find((r) => r.reqId === 'log-bin-1')?.dtype).toBe('float32');
    expect(records.find((r) => r.reqId === 'log-fwd-1')?.op).toBe('batch_norm');
  });

  it('never logs tensor values, keys or the Authorization header', () => {
    const all = server.lines.join('\n');
    for (const v of SECRET_VALUES) expect(all).not.toContain(v);
    expect(all).not.toMatch(/authorization|bearer|wrong-secret-key|secret-key-2/i);
    expect(all).not.toMatch(/"k1"/);
  });
});
