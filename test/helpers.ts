import type { OutgoingHttpHeaders } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, expect } from 'vitest';
import { buildApp } from '../src/app.js';
import { type Config, testConfig } from '../src/config.js';

/** What a test sees of a reply: status, headers, the raw text and the parsed JSON (undefined if not JSON). */
export interface Reply {
  status: number;
  headers: OutgoingHttpHeaders;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: tests read response fields freely.
  body: any;
}

export interface TestApp {
  /** The app, built in beforeAll; only use it inside tests and hooks. */
  readonly app: FastifyInstance;
  /** POSTs `body` as JSON (a string is sent as is, for malformed bodies). */
  post(url: string, body: unknown, headers?: Record<string, string>): Promise<Reply>;
  get(url: string, headers?: Record<string, string>): Promise<Reply>;
}

/**
 * Builds the app once for the calling test file (or describe block) with
 * `testConfig(overrides)`, waits for it to be ready (the worker pool is up) and
 * closes it after the last test.
 */
export function useApp(overrides: Partial<Config> = {}): TestApp {
  let instance: FastifyInstance | undefined;
  beforeAll(async () => {
    instance = await buildApp(testConfig(overrides));
    await instance.ready();
  });
  afterAll(async () => {
    await instance?.close();
  });
  const app = () => {
    if (!instance) throw new Error('the app is built in beforeAll: use it inside a test');
    return instance;
  };
  const toReply = (res: { statusCode: number; headers: OutgoingHttpHeaders; body: string }): Reply => {
    let body: unknown;
    try {
      body = JSON.parse(res.body);
    } catch {
      body = undefined;
    }
    return { status: res.statusCode, headers: res.headers, text: res.body, body };
  };
  return {
    get app() {
      return app();
    },
    async post(url, body, headers = {}) {
      const res = await app().inject({
        method: 'POST',
        url,
        payload: typeof body === 'string' ? body : JSON.stringify(body),
        headers: { 'content-type': 'application/json', ...headers },
      });
      return toReply(res);
    },
    async get(url, headers = {}) {
      return toReply(await app().inject({ method: 'GET', url, headers }));
    },
  };
}

/** A JSON leaf as a number: the strings "NaN", "Infinity", "-Infinity" become the values; anything else fails. */
export function leaf(v: unknown): number {
  if (typeof v === 'number') return v;
  if (v === 'NaN') return Number.NaN;
  if (v === 'Infinity') return Number.POSITIVE_INFINITY;
  if (v === '-Infinity') return Number.NEGATIVE_INFINITY;
  throw new Error(`not a tensor leaf: ${JSON.stringify(v)}`);
}

export interface Dense {
  shape: number[];
  data: number[];
  form: 'nested' | 'flat';
}

/** Reads a response tensor in either form, checking that it is rectangular and its leaves are numbers or non-finite strings. */
export function dense(t: unknown): Dense {
  if (Array.isArray(t)) {
    const shape: number[] = [];
    for (let p: unknown = t; Array.isArray(p); p = p[0]) shape.push(p.length);
    const data: number[] = [];
    const walk = (node: unknown, depth: number) => {
      if (depth === shape.length) {
        data.push(leaf(node));
        return;
      }
      if (!Array.isArray(node) || node.length !== shape[depth]) throw new Error('ragged response tensor');
      for (const child of node) walk(child, depth + 1);
    };
    walk(t, 0);
    return { shape, data, form: 'nested' };
  }
  const flat = t as { shape: number[]; data: unknown[] };
  if (!flat || !Array.isArray(flat.shape) || !Array.isArray(flat.data)) {
    throw new Error(`not a tensor: ${JSON.stringify(t)}`);
  }
  expect(flat.data.length).toBe(flat.shape.reduce((a, b) => a * b, 1));
  return { shape: flat.shape, data: flat.data.map(leaf), form: 'flat' };
}

/** The numbers of a response tensor, row-major. */
export const values = (t: unknown): number[] => dense(t).data;

/** Builds a nested array of `shape` from row-major `data`. */
export function nest(shape: readonly number[], data: readonly (number | string)[]): unknown {
  const rec = (depth: number, offset: number, size: number): unknown => {
    if (depth === shape.length) return data[offset];
    const n = shape[depth]!;
    const sub = size / n;
    return Array.from({ length: n }, (_, i) => rec(depth + 1, offset + i * sub, sub));
  };
  return rec(0, 0, data.length);
}

/** Asserts |a − e| ≤ abs + rel·|e| elementwise (NaN matches NaN, infinities must be equal). */
export function expectClose(
  actual: readonly number[],
  expected: readonly number[],
  rel = 1e-12,
  abs = 1e-12,
) {
  expect(actual.length, 'length').toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (Number.isNaN(e) || !Number.isFinite(e)) {
      expect(a, `element ${i}`).toBe(e);
      continue;
    }
    const tol = abs + rel * Math.abs(e);
    if (!(Math.abs(a - e) <= tol)) {
      expect.fail(`element ${i}: got ${a}, expected ${e} (±${tol})`);
    }
  }
}

/** A deterministic pseudo-random sequence in [-1, 1) (mulberry32), so tests never depend on Math.random. */
export function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 31 - 1;
  };
}

/**
 * Per-channel view of a row-major `[N, C, *spatial]` tensor: channel c's values,
 * computed here by plain indexing, independently of the service's kernels.
 */
export function channels(shape: readonly number[], data: readonly number[]): number[][] {
  const [N, C] = [shape[0]!, shape[1]!];
  const inner = data.length / (N * C);
  const out: number[][] = Array.from({ length: C }, () => []);
  for (let n = 0; n < N; n++)
    for (let c = 0; c < C; c++) for (let i = 0; i < inner; i++) out[c]!.push(data[(n * C + c) * inner + i]!);
  return out;
}

export const sum = (a: readonly number[]) => a.reduce((s, v) => s + v, 0);
export const mean = (a: readonly number[]) => sum(a) / a.length;
/** Σ (a − mean)², two-pass. */
export const m2 = (a: readonly number[]) => {
  const mu = mean(a);
  return a.reduce((s, v) => s + (v - mu) ** 2, 0);
};
