import { describe, expect, it } from 'vitest';
import { leaf, useApp } from '../helpers.js';

/**
 * Where a request runs (on the event loop, in one worker, or split across workers
 * over shared memory) must not change its answer. The three apps below force each
 * route for every size; the inline answers are the ones the goldens check.
 */
const inline = useApp({
  thresholds: { inlineMax: Number.MAX_SAFE_INTEGER, splitMin: Number.MAX_SAFE_INTEGER },
});
const pooled = useApp({ workers: 2, thresholds: { inlineMax: 0, splitMin: Number.MAX_SAFE_INTEGER } });
const split = useApp({ workers: 2, thresholds: { inlineMax: 0, splitMin: 1 } });

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

function flat(shape: number[], seed: number, offset = 0) {
  const r = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return { shape, data: Array.from({ length: n }, () => offset + 4 * r()) };
}

const shape = [3, 4, 5];
const cases: [string, Record<string, unknown>][] = [
  ['batch_norm', { op: 'batch_norm', gamma: flat([4], 3, 1), beta: flat([4], 4) }],
  [
    'batch_norm running statistics',
    {
      op: 'batch_norm',
      runningMean: flat([4], 5),
      runningVar: flat([4], 6, 3),
      momentum: null,
      numBatchesTracked: 2,
    },
  ],
  [
    'batch_norm eval',
    { op: 'batch_norm', training: false, runningMean: flat([4], 5), runningVar: flat([4], 6, 3) },
  ],
  ['batch_norm correction 0', { op: 'batch_norm', correction: 0 }],
  [
    'layer_norm',
    { op: 'layer_norm', normalizedShape: [4, 5], gamma: flat([4, 5], 3, 1), beta: flat([4, 5], 4) },
  ],
  ['group_norm', { op: 'group_norm', numGroups: 2, gamma: flat([4], 3, 1), beta: flat([4], 4) }],
  ['instance_norm', { op: 'instance_norm', runningMean: flat([4], 5), runningVar: flat([4], 6, 3) }],
  [
    'instance_norm eval',
    { op: 'instance_norm', training: false, runningMean: flat([4], 5), runningVar: flat([4], 6, 3) },
  ],
  ['rms_norm', { op: 'rms_norm', gamma: flat([5], 3, 1) }],
];

function values(v: unknown): number[] {
  if (typeof v === 'number' || typeof v === 'string') return [leaf(v)];
  if (Array.isArray(v)) return v.flatMap(values);
  const t = v as { data: unknown[] };
  return t.data.map(leaf);
}

/** Partial sums merged in another order may differ in the last bits; nothing more. */
function expectClose(actual: Record<string, unknown>, expected: Record<string, unknown>, tol: number) {
  expect(Object.keys(actual).sort()).toEqual(Object.keys(expected).sort());
  for (const key of Object.keys(expected)) {
    const a = values(actual[key]);
    const e = values(expected[key]);
    expect(a.length, key).toBe(e.length);
    for (let i = 0; i < e.length; i++) {
      expect(Math.abs(a[i]! - e[i]!), `${key}[${i}]`).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(e[i]!)));
    }
  }
}

describe.each(['float64', 'float32'])('%s: inline, one worker and split give the same answer', (dtype) => {
  const tol = dtype === 'float32' ? 1e-6 : 1e-12;
  for (const [name, fields] of cases) {
    it(name, async () => {
      const forward = { ...fields, dtype, x: flat(shape, 1, 10) };
      const backward = { ...forward, dy: flat(shape, 2) };
      for (const [url, body] of [
        ['/forward', forward],
        ['/backward', backward],
      ] as const) {
        const want = await inline.post(url, body);
        expect(want.status, JSON.stringify(want.body)).toBe(200);
        for (const other of [pooled, split]) {
          const got = await other.post(url, body);
          expect(got.status, JSON.stringify(got.body)).toBe(200);
          expectClose(got.body, want.body, tol);
        }
      }
    });
  }
});
