import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectClose } from '../helpers.js';

/**
 * The real server process, as the README runs it (`npm start` = build, then
 * `node dist/server.js`; the build ran in pretest), with its real worker pool,
 * over real HTTP.
 */
const root = fileURLToPath(new URL('../../', import.meta.url));
const entry = `${root}dist/server.js`;

let child: ChildProcess | undefined;
let base = '';
let exited: Promise<number | null> | undefined;
const logs: string[] = [];

/** Rejects after `ms` so that no wait in this file is unbounded. */
function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

const post = (path: string, body: unknown) =>
  fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(10_000),
  });

beforeAll(async () => {
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run \`npm run build\` first`);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PORT: '0',
    HOST: '127.0.0.1',
    WORKERS: '2',
    LOG_LEVEL: 'info',
    API_KEYS: '',
  };
  for (const key of ['BODY_LIMIT', 'MAX_QUEUE']) delete env[key];
  const proc = spawn(process.execPath, [entry], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  child = proc;
  exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
  proc.stderr?.on('data', (chunk: Buffer) => logs.push(chunk.toString()));

  const listening = new Promise<string>((resolve, reject) => {
    const lines = createInterface({ input: proc.stdout! });
    lines.on('line', (line) => {
      logs.push(line);
      try {
        const log = JSON.parse(line) as { msg?: string };
        const match = /^Server listening at (http:\/\/\S+)/.exec(log.msg ?? '');
        if (match) resolve(match[1]!);
      } catch {
        // not a JSON log line
      }
    });
    proc.once('exit', (code) =>
      reject(new Error(`server exited with ${code} before listening:\n${logs.join('\n')}`)),
    );
  });
  base = await within(20_000, 'the "Server listening at" log line', listening);
});

afterAll(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill('SIGKILL');
    await within(5_000, 'the killed server to exit', exited!).catch(() => undefined);
  }
});

describe('the server process over HTTP', () => {
  it('listens on the port the OS picked, on 127.0.0.1', () => {
    expect(base).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(base).not.toMatch(/:0$/);
  });

  it('GET /health and GET /ready', async () => {
    const health = await fetch(`${base}/health`, { signal: AbortSignal.timeout(5_000) });
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: 'ok' });
    const ready = await fetch(`${base}/ready`, { signal: AbortSignal.timeout(5_000) });
    expect(ready.status).toBe(200);
  });

  it('POST /forward: x = [[1], [2], [3], [4]] gives mean 2.5, var 5/3', async () => {
    const r = await post('/forward', { x: [[1], [2], [3], [4]] });
    expect(r.status).toBe(200);
    const body = (await r.json()) as { y: number[][]; mean: number[]; var: number[] };
    expectClose(body.mean, [2.5]);
    expectClose(body.var, [5 / 3]);
    const invstd = 1 / Math.sqrt(5 / 3 + 1e-5);
    expectClose(
      body.y.flat(),
      [-1.5, -0.5, 0.5, 1.5].map((d) => d * invstd),
    );
  });

  it('POST /backward: eval mode, dx = dy·gamma/sqrt(runningVar + eps)', async () => {
    const r = await post('/backward', {
      x: { shape: [2, 1], data: [1, 3] },
      dy: { shape: [2, 1], data: [1, 2] },
      training: false,
      runningMean: [1],
      runningVar: [3],
      gamma: [2],
      eps: 1,
    });
    expect(r.status).toBe(200);
    // invstd = 0.5, dx = dy·2·0.5 = dy, dgamma = Σ dy·(x − 1)·0.5 = 2, dbeta = 3
    expect(await r.json()).toEqual({
      dx: { shape: [2, 1], data: [1, 2] },
      dgamma: { shape: [1], data: [2] },
      dbeta: { shape: [1], data: [3] },
    });
  });

  it('many concurrent requests across the 2 workers each get their own answer', async () => {
    const ks = Array.from({ length: 16 }, (_, i) => i + 1);
    const replies = await Promise.all(ks.map((k) => post('/forward', { x: [[k], [2 * k], [3 * k]] })));
    for (const [i, r] of replies.entries()) {
      expect(r.status).toBe(200);
      const body = (await r.json()) as { mean: number[]; var: number[] };
      expectClose(body.mean, [2 * ks[i]!]);
      expectClose(body.var, [ks[i]! ** 2]);
    }
  });

  it('a bad request is a 400 problem', async () => {
    const r = await post('/forward', { x: [[1, 2], [3]] });
    expect(r.status).toBe(400);
    expect(r.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    const p = (await r.json()) as { status: number; errors: { path: string }[] };
    expect(p.status).toBe(400);
    expect(p.errors[0]?.path).toBe('x[1]');
  });

  it('SIGTERM shuts down gracefully with exit code 0', async () => {
    expect(child?.kill('SIGTERM')).toBe(true);
    const code = await within(15_000, 'the server to exit after SIGTERM', exited!);
    expect(code, logs.join('\n')).toBe(0);
  });
});
