import { describe, expect, it } from 'vitest';
import { TEST_HOOK_EPS } from '../../src/workers/test-hooks.js';
import { expectClose, type Reply, type TestApp, useApp, values } from '../helpers.js';
import { expectProblem, until, within } from './support.js';

/**
 * Worker faults, injected with the test hooks (`testConfig({ testHooks: true })`;
 * an `eps` of TEST_HOOK_EPS.crash/oom/hang makes the worker exit, run out of
 * memory or never finish). Every request goes to a worker (inlineMax 0). A
 * fault fails only its own request, with a problem that says nothing of the
 * insides; the pool is back to WORKERS threads and every op answers right after.
 */
const POOL = { inlineMax: 0, splitMin: Number.MAX_SAFE_INTEGER };
const SPLIT = { inlineMax: 0, splitMin: 1 };

/** One small request per op and pass, with its answer worked out by hand. */
interface Case {
  name: string;
  url: '/forward' | '/backward';
  body: Record<string, unknown>;
  check(body: Record<string, unknown>): void;
}

const r5 = 1 / Math.sqrt(1.25 + 1e-5); // invstd of [1, 2, 3, 4] with correction 0
const standardized = [-1.5, -0.5, 0.5, 1.5].map((d) => d * r5);
const rr = 1 / Math.sqrt(12.5 + 2 ** -52); // rrms of [3, 4] in float64 (eps: machine epsilon)

const cases: Case[] = [
  {
    name: 'batch_norm forward',
    url: '/forward',
    body: { x: [[1], [2], [3], [4]] },
    check: (b) =>
      expectClose(
        values(b.y),
        [-1.5, -0.5, 0.5, 1.5].map((d) => d / Math.sqrt(5 / 3 + 1e-5)),
      ),
  },
  {
    name: 'layer_norm forward',
    url: '/forward',
    body: { op: 'layer_norm', x: [[1, 2, 3, 4]] },
    check: (b) => expectClose(values(b.y), standardized),
  },
  {
    name: 'group_norm forward',
    url: '/forward',
    body: {
      op: 'group_norm',
      numGroups: 1,
      x: [
        [
          [1, 2],
          [3, 4],
        ],
      ],
    },
    check: (b) => expectClose(values(b.y), standardized),
  },
  {
    name: 'instance_norm forward',
    url: '/forward',
    body: { op: 'instance_norm', x: [[[1, 2, 3, 4]]] },
    check: (b) => expectClose(values(b.y), standardized),
  },
  {
    name: 'rms_norm forward',
    url: '/forward',
    body: { op: 'rms_norm', x: [[3, 4]] },
    check: (b) => expectClose(values(b.y), [3 * rr, 4 * rr]),
  },
  // A constant dy has no gradient through a normalization that removes the mean: dx = 0, dbeta = m.
  {
    name: 'batch_norm backward',
    url: '/backward',
    body: { x: [[1], [2], [3], [4]], dy: [[1], [1], [1], [1]] },
    check: (b) => {
      expectClose(values(b.dx), [0, 0, 0, 0], 1e-12, 1e-12);
      expectClose(values(b.dbeta), [4]);
    },
  },
  {
    name: 'layer_norm backward',
    url: '/backward',
    body: { op: 'layer_norm', x: [[1, 2, 3, 4]], dy: [[1, 1, 1, 1]] },
    check: (b) => expectClose(values(b.dx), [0, 0, 0, 0], 1e-12, 1e-12),
  },
  {
    name: 'group_norm backward',
    url: '/backward',
    body: {
      op: 'group_norm',
      numGroups: 1,
      x: [
        [
          [1, 2],
          [3, 4],
        ],
      ],
      dy: [
        [
          [1, 1],
          [1, 1],
        ],
      ],
    },
    check: (b) => {
      expectClose(values(b.dx), [0, 0, 0, 0], 1e-12, 1e-12);
      expectClose(values(b.dbeta), [2, 2]);
    },
  },
  {
    name: 'instance_norm backward',
    url: '/backward',
    body: { op: 'instance_norm', x: [[[1, 2, 3, 4]]], dy: [[[1, 1, 1, 1]]] },
    check: (b) => expectClose(values(b.dx), [0, 0, 0, 0], 1e-12, 1e-12),
  },
  // rms_norm: dx_i = r·(dy_i − r²·x_i·mean(dy·x)), dgamma = dy·x·r.
  {
    name: 'rms_norm backward',
    url: '/backward',
    body: { op: 'rms_norm', x: [[3, 4]], dy: [[1, 1]] },
    check: (b) => {
      expectClose(
        values(b.dx),
        [3, 4].map((x) => rr * (1 - rr * rr * x * 3.5)),
        1e-12,
        1e-15,
      );
      expectClose(values(b.dgamma), [3 * rr, 4 * rr]);
    },
  },
];

async function expectAllOpsAnswer(t: TestApp) {
  for (const c of cases) {
    const r = await t.post(c.url, c.body);
    expect(r.status, `${c.name}: ${r.text}`).toBe(200);
    c.check(r.body);
  }
}

/** The same body as a case, with the fault's eps. */
const faulty = (c: Case, eps: number) => ({ ...c.body, eps });

/** A 5xx problem with nothing of the insides: no stack, no file, no worker, no exit code, no piscina. */
function expectOpaque(r: Reply, status: 500 | 504) {
  const p = expectProblem(r, status);
  expect(p.errors).toEqual([]);
  expect(r.text).not.toMatch(/worker|exit|piscina|stack|heap|memory|\.js\b|\.ts\b|node:|\n\s+at /i);
  if (status === 500) {
    expect(p.type).toBe('urn:normserve:problem:internal');
    expect(p.detail).toBe('The request could not be completed.');
  }
  return p;
}

async function expectThreads(t: TestApp, n: number) {
  await until(10_000, `${n} worker threads`, () => t.app.compute.threads === n);
}

describe('a worker that exits mid-task (crash hook), WORKERS 2', () => {
  const t = useApp({ testHooks: true, workers: 2, thresholds: POOL });

  it('fails only that request: a 500 problem with no internals', async () => {
    for (const c of [cases[0]!, cases[5]!]) {
      const r = await within(20_000, 'the crashed request', t.post(c.url, faulty(c, TEST_HOOK_EPS.crash)));
      expectOpaque(r, 500);
    }
  });

  it('the pool is back to WORKERS threads and every op, forward and backward, answers right', async () => {
    await expectThreads(t, 2);
    await expectAllOpsAnswer(t);
    await expectAllOpsAnswer(t);
  });

  it('requests in flight beside the crash get their own right answers', async () => {
    const good = cases.slice(0, 5);
    const replies = await within(
      20_000,
      'the mixed batch',
      Promise.all([
        t.post('/forward', faulty(cases[1]!, TEST_HOOK_EPS.crash)),
        ...good.map((c) => t.post(c.url, c.body)),
      ]),
    );
    expectOpaque(replies[0]!, 500);
    for (const [i, c] of good.entries()) {
      const r = replies[i + 1]!;
      expect(r.status, `${c.name}: ${r.text}`).toBe(200);
      c.check(r.body);
    }
    await expectThreads(t, 2);
    await expectAllOpsAnswer(t);
  });

  it('the readiness probe still says ready', async () => {
    expect((await t.get('/ready')).status).toBe(200);
  });
});

describe('a worker that runs out of memory (oom hook), WORKERS 2', () => {
  const t = useApp({ testHooks: true, workers: 2, thresholds: POOL });

  it('fails only that request: a 500 problem with no internals', async () => {
    const r = await within(
      25_000,
      'the out-of-memory request',
      t.post('/forward', faulty(cases[2]!, TEST_HOOK_EPS.oom)),
    );
    expectOpaque(r, 500);
  });

  it('the pool is back to WORKERS threads and every op answers right', async () => {
    await expectThreads(t, 2);
    await expectAllOpsAnswer(t);
  });
});

describe('a task that never finishes (hang hook), TASK_TIMEOUT_MS 500, WORKERS 1', () => {
  const t = useApp({ testHooks: true, workers: 1, taskTimeoutMs: 500, thresholds: POOL });

  it('is abandoned after TASK_TIMEOUT_MS: a 504 problem with Retry-After', async () => {
    const started = performance.now();
    const r = await within(
      10_000,
      'the hung request',
      t.post('/forward', faulty(cases[0]!, TEST_HOOK_EPS.hang)),
    );
    const ms = performance.now() - started;
    const p = expectOpaque(r, 504);
    expect(p.type).toBe('urn:normserve:problem:task-timeout');
    expect(r.headers['retry-after']).toBeDefined();
    expect(ms).toBeGreaterThanOrEqual(450);
    expect(ms).toBeLessThan(5_000);
  });

  it('its worker is replaced: the next requests (every op) succeed on the single worker', async () => {
    await expectThreads(t, 1);
    await expectAllOpsAnswer(t);
  });

  it('a backward that hangs is a 504 too, and the service answers after it', async () => {
    expectOpaque(await t.post('/backward', faulty(cases[6]!, TEST_HOOK_EPS.hang)), 504);
    await expectAllOpsAnswer(t);
  });
});

describe('faults in a request split across the workers (splitMin 1, WORKERS 2)', () => {
  const t = useApp({ testHooks: true, workers: 2, taskTimeoutMs: 1_000, thresholds: SPLIT });

  it('the requests really are split', () => {
    expect(
      t.app.compute.route({ op: 'batch_norm', dtype: 'float64', shape: [4, 1], tensors: {}, params: {} }),
    ).toBe('split');
  });

  it('a crash in the parts is a 500 problem with no internals; every op answers right after', async () => {
    expectOpaque(
      await within(20_000, 'the crash', t.post('/forward', faulty(cases[0]!, TEST_HOOK_EPS.crash))),
      500,
    );
    await expectThreads(t, 2);
    await expectAllOpsAnswer(t);
    expectOpaque(
      await within(20_000, 'the crash', t.post('/backward', faulty(cases[8]!, TEST_HOOK_EPS.crash))),
      500,
    );
    await expectThreads(t, 2);
    await expectAllOpsAnswer(t);
  });

  it('a hang in the parts is a 504 problem; every op answers right after', async () => {
    expectOpaque(
      await within(10_000, 'the hang', t.post('/forward', faulty(cases[3]!, TEST_HOOK_EPS.hang))),
      504,
    );
    await expectThreads(t, 2);
    await expectAllOpsAnswer(t);
  });
});

describe('without testHooks, the hook values are ordinary eps values', () => {
  const t = useApp({ workers: 1, thresholds: POOL });

  it('crash, oom and hang eps compute normally', async () => {
    for (const eps of Object.values(TEST_HOOK_EPS)) {
      const r = await within(
        10_000,
        'an ordinary request',
        t.post('/forward', { x: [[1], [2], [3], [4]], eps }),
      );
      expect(r.status, r.text).toBe(200);
      expectClose(
        values(r.body.y),
        [-1.5, -0.5, 0.5, 1.5].map((d) => d / Math.sqrt(5 / 3)),
      );
    }
  });
});
