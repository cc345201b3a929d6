import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { assemble, readHeader } from '../safetensors-bytes.js';

/**
 * Shared by the operational tests (overload, faults, shutdown, limits, fuzz,
 * auth/metrics/logs): large safetensors bodies written byte by byte, their
 * replies read back by hand, an independent batch-norm check, problem-details
 * assertions, bounded waits, and the real server process.
 */
export const SAFETENSORS = 'application/x-safetensors';

export const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** Rejects after `ms` so that no wait is unbounded. */
export function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

/** Polls `check` every `every` ms until it is true; fails after `ms`. */
export async function until(ms: number, what: string, check: () => boolean | Promise<boolean>, every = 10) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** The RFC 9457 shape, and nothing of the server's insides in it. */
export function expectProblem(
  r: { status: number; headers: Record<string, unknown>; text: string },
  status: number,
  path?: string,
) {
  expect(r.status, r.text.slice(0, 500)).toBe(status);
  expect(String(r.headers['content-type'])).toMatch(/^application\/problem\+json/);
  const p = JSON.parse(r.text) as {
    type: unknown;
    title: unknown;
    status: unknown;
    detail: unknown;
    errors: { path: string; message: string }[];
  };
  expect(Object.keys(p).sort()).toEqual(['detail', 'errors', 'status', 'title', 'type']);
  expect(typeof p.type).toBe('string');
  expect(typeof p.title).toBe('string');
  expect(p.status).toBe(status);
  expect(typeof p.detail).toBe('string');
  expect(Array.isArray(p.errors)).toBe(true);
  if (path !== undefined) {
    const paths = p.errors.map((e) => e.path);
    expect(paths, `errors[].path names ${path}`).toContain(path);
  }
  return p;
}

/** A deterministic float32 x: `offset + scale · u`, u pseudo-random in [-1, 1) (xorshift32). */
export function float32Values(n: number, seed: number, scale = 1, offset = 0): Float32Array {
  const out = new Float32Array(n);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = offset + scale * (s / 2 ** 31 - 1);
  }
  return out;
}

/**
 * A safetensors body holding `tensors` as little-endian F32, written with DataView
 * (explicit byte order), and `metadata` as `__metadata__`.
 */
export function safetensorsBody(
  tensors: Record<string, { shape: number[]; data: Float32Array }>,
  metadata?: Record<string, string>,
): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    expect(t.data.length).toBe(size(t.shape));
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.length * 4] };
    offset += t.data.length * 4;
  }
  let text = JSON.stringify(header);
  text += ' '.repeat((8 - ((8 + Buffer.byteLength(text)) % 8)) % 8);
  const data = new Uint8Array(offset);
  const dv = new DataView(data.buffer);
  let at = 0;
  for (const t of Object.values(tensors)) {
    for (let i = 0; i < t.data.length; i++, at += 4) dv.setFloat32(at, t.data[i]!, true);
  }
  return assemble(text, data);
}

export interface ReadTensor {
  dtype: string;
  shape: number[];
  data: Float64Array;
}

/** A safetensors reply read by hand (DataView, little-endian): its tensors as float64 numbers and its metadata. */
export function readSafetensors(body: Uint8Array): {
  tensors: Record<string, ReadTensor>;
  metadata: Record<string, string>;
} {
  const { json, dataStart } = readHeader(body);
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const tensors: Record<string, ReadTensor> = {};
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(json)) {
    if (name === '__metadata__') {
      metadata = entry as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets } = entry as {
      dtype: string;
      shape: number[];
      data_offsets: [number, number];
    };
    const width = dtype === 'F32' ? 4 : 8;
    const n = (data_offsets[1] - data_offsets[0]) / width;
    expect(n, `${name}'s length matches its shape`).toBe(size(shape));
    const data = new Float64Array(n);
    const base = dataStart + data_offsets[0];
    for (let i = 0; i < n; i++) {
      data[i] = width === 4 ? dv.getFloat32(base + i * 4, true) : dv.getFloat64(base + i * 8, true);
    }
    tensors[name] = { dtype, shape, data };
  }
  return { tensors, metadata };
}

/**
 * Checks a batch-norm forward (training, correction 1, eps 1e-5, no affine) of
 * float32 `x: [N, C, *spatial]` against statistics computed here, in float64,
 * two-pass, by plain indexing: mean, var = Σ(x − mean)²/(m − 1), and every
 * y = (x − mean)/sqrt(var + eps); and the invariants of y per channel
 * (mean 0, Σy²/(m − 1) = var/(var + eps)).
 */
export function expectBatchNormForward(
  shape: readonly number[],
  x: Float32Array,
  reply: Record<string, ReadTensor>,
  eps = 1e-5,
) {
  const [N, C] = [shape[0]!, shape[1]!];
  const inner = x.length / (N * C);
  const m = N * inner;
  const y = reply.y!;
  expect(y.shape).toEqual([...shape]);
  expect(reply.mean!.shape).toEqual([C]);
  for (let c = 0; c < C; c++) {
    let s = 0;
    for (let n = 0; n < N; n++) {
      const base = (n * C + c) * inner;
      for (let i = 0; i < inner; i++) s += x[base + i]!;
    }
    const mu = s / m;
    let q = 0;
    for (let n = 0; n < N; n++) {
      const base = (n * C + c) * inner;
      for (let i = 0; i < inner; i++) q += (x[base + i]! - mu) ** 2;
    }
    const v = q / (m - 1);
    const invstd = 1 / Math.sqrt(v + eps);
    const close = (got: number, want: number, what: string, rel = 1e-6, abs = 1e-6) => {
      if (!(Math.abs(got - want) <= abs + rel * Math.abs(want))) {
        expect.fail(`channel ${c}: ${what} is ${got}, expected ${want}`);
      }
    };
    close(reply.mean!.data[c]!, mu, 'mean');
    close(reply.var!.data[c]!, v, 'var');
    close(reply.invstd!.data[c]!, invstd, 'invstd');
    let ys = 0;
    let yq = 0;
    for (let n = 0; n < N; n++) {
      const base = (n * C + c) * inner;
      for (let i = 0; i < inner; i++) {
        const got = y.data[base + i]!;
        const want = (x[base + i]! - mu) * invstd;
        if (!(Math.abs(got - want) <= 1e-5 + 1e-5 * Math.abs(want))) {
          expect.fail(`y at ${base + i} (channel ${c}) is ${got}, expected ${want}`);
        }
        ys += got;
        yq += got * got;
      }
    }
    close(ys / m, 0, 'mean of y', 0, 1e-5);
    close(yq / (m - 1), v / (v + eps), 'variance of y', 1e-4, 1e-6);
  }
}

// ---------------------------------------------------------------------------
// The real server process (`node dist/server.js`, built by `npm run build`).

const root = fileURLToPath(new URL('../../', import.meta.url));
const entry = `${root}dist/server.js`;

export interface ServerProcess {
  base: string;
  port: number;
  child: ChildProcess;
  /** stdout lines (JSON logs) and stderr chunks, in arrival order */
  lines: string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL when still running; for afterAll */
  kill(): Promise<void>;
}

/** Starts the server with `env` over a clean environment (PORT 0, HOST 127.0.0.1) and waits for its listen line. */
export async function startServer(env: Record<string, string>): Promise<ServerProcess> {
  if (!existsSync(entry)) throw new Error(`${entry} is missing: run \`npm run build\` first`);
  const fullEnv: NodeJS.ProcessEnv = { PATH: process.env.PATH, PORT: '0', HOST: '127.0.0.1', ...env };
  const child = spawn(process.execPath, [entry], {
    cwd: root,
    env: fullEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  child.stderr?.on('data', (chunk: Buffer) => lines.push(chunk.toString()));
  const listening = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      lines.push(line);
      try {
        const log = JSON.parse(line) as { msg?: string };
        const match = /^Server listening at (http:\/\/\S+)/.exec(log.msg ?? '');
        if (match) resolve(match[1]!);
      } catch {
        // not a JSON log line
      }
    });
    child.once('exit', (code) =>
      reject(new Error(`server exited with ${code} before listening:\n${lines.join('\n')}`)),
    );
  });
  const base = await within(20_000, 'the "Server listening at" log line', listening);
  return {
    base,
    port: Number(new URL(base).port),
    child,
    lines,
    exited,
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await within(5_000, 'the killed server to exit', exited).catch(() => undefined);
      }
    },
  };
}

/** The stdout lines that are JSON log records. */
export function logRecords(lines: readonly string[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of lines) {
    try {
      const v = JSON.parse(line) as unknown;
      if (v !== null && typeof v === 'object') out.push(v as Record<string, unknown>);
    } catch {
      // stderr chunk or other text
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Prometheus text format, read by hand.

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function parseMetrics(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    expect(m, `a Prometheus sample line: ${line}`).not.toBeNull();
    const labels: Record<string, string> = {};
    for (const l of m![2]?.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g) ?? []) labels[l[1]!] = l[2]!;
    out.push({ name: m![1]!, labels, value: Number(m![3]) });
  }
  return out;
}

/** The sum of the samples named `name` whose labels include `labels`. */
export function metric(
  samples: readonly Sample[],
  name: string,
  labels: Record<string, string> = {},
): number {
  return samples
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}
