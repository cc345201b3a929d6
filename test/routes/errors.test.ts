import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { expectClose, nest, type Reply, type TestApp, useApp, values } from '../helpers.js';
import { assemble } from '../safetensors-bytes.js';

/**
 * One test per row of the SPEC's error table: every error is
 * application/problem+json (RFC 9457) with type, title, status, detail and
 * errors[] whose path names the offending field.
 */
function expectProblem(r: Reply, status: number, path?: string) {
  expect(r.status, r.text).toBe(status);
  expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
  const p = r.body;
  expect(typeof p.type).toBe('string');
  expect(p.type.length).toBeGreaterThan(0);
  expect(typeof p.title).toBe('string');
  expect(p.status).toBe(status);
  expect(typeof p.detail).toBe('string');
  expect(p.detail.length).toBeGreaterThan(0);
  if (path === undefined) return;
  expect(Array.isArray(p.errors), 'errors[] is present').toBe(true);
  const paths: string[] = p.errors.map((e: { path: string }) => e.path);
  expect(
    paths.some((q) => q.startsWith(path)),
    `errors[].path ${JSON.stringify(paths)} names ${path}`,
  ).toBe(true);
  for (const e of p.errors) expect(typeof e.message).toBe('string');
}

const X = [[1], [2], [3], [4]];

describe('400: invalid requests name the field', () => {
  const t = useApp();

  it('malformed JSON', async () => {
    expectProblem(await t.post('/forward', '{"x": [[1], [2]'), 400, 'body');
  });

  it('empty body with content-type application/json', async () => {
    expectProblem(await t.post('/forward', ''), 400, 'body');
  });

  it('a body that is not an object', async () => {
    expectProblem(await t.post('/forward', [1, 2]), 400, 'body');
  });

  it('wrong type: x a string', async () => {
    expectProblem(await t.post('/forward', { x: 'abc' }), 400, 'x');
  });

  it('wrong type: eps a string', async () => {
    expectProblem(await t.post('/forward', { x: X, eps: 'small' }), 400, 'eps');
  });

  it('wrong type: training "yes"', async () => {
    expectProblem(await t.post('/forward', { x: X, training: 'yes' }), 400, 'training');
  });

  it('wrong type: a tensor leaf that is null or an unknown string', async () => {
    expectProblem(await t.post('/forward', { x: [[1], [null]] }), 400, 'x[1][0]');
    expectProblem(await t.post('/forward', { x: { shape: [2, 1], data: [1, 'nan'] } }), 400, 'x.data[1]');
  });

  it('missing x', async () => {
    expectProblem(await t.post('/forward', {}), 400, 'x');
  });

  it('missing dy in /backward', async () => {
    expectProblem(await t.post('/backward', { x: X }), 400, 'dy');
  });

  it('ragged nested arrays', async () => {
    expectProblem(
      await t.post('/forward', {
        x: [
          [1, 2],
          [3, 4],
          [5, 6],
        ].map((row, i) => (i === 1 ? [3] : row)),
      }),
      400,
      'x[1]',
    );
    expectProblem(
      await t.post('/forward', {
        x: [
          [1, [2]],
          [3, 4],
        ],
      }),
      400,
      'x[0][1]',
    );
    expectProblem(await t.post('/forward', { x: X, gamma: [[1], [2, 3]] }), 400, 'gamma');
  });

  it('shape/data length mismatch', async () => {
    expectProblem(await t.post('/forward', { x: { shape: [2, 2], data: [1, 2, 3] } }), 400, 'x.data');
  });

  it('wrong gamma shape', async () => {
    expectProblem(await t.post('/forward', { x: X, gamma: [1, 2] }), 400, 'gamma');
  });

  it('wrong beta, runningMean and saved-statistics shapes', async () => {
    expectProblem(await t.post('/forward', { x: X, beta: [[0]] }), 400, 'beta');
    expectProblem(
      await t.post('/forward', { x: X, runningMean: [0, 0], runningVar: [1] }),
      400,
      'runningMean',
    );
    expectProblem(await t.post('/backward', { x: X, dy: X, mean: [1, 2], invstd: [1] }), 400, 'mean');
  });

  it('wrong dy shape', async () => {
    expectProblem(await t.post('/backward', { x: X, dy: [[1], [2], [3]] }), 400, 'dy');
    expectProblem(await t.post('/backward', { x: X, dy: [1, 2, 3, 4] }), 400, 'dy');
  });

  it('rank < 2', async () => {
    expectProblem(await t.post('/forward', { x: [1, 2, 3] }), 400, 'x');
    expectProblem(await t.post('/backward', { x: { shape: [3], data: [1, 2, 3] }, dy: [1, 2, 3] }), 400, 'x');
  });

  it('m − correction ≤ 0', async () => {
    expectProblem(await t.post('/forward', { x: [[1, 2]] }), 400, 'correction');
    expectProblem(await t.post('/forward', { x: X, correction: 4 }), 400, 'correction');
    expectProblem(await t.post('/backward', { x: [[1]], dy: [[1]] }), 400, 'correction');
  });

  it('eps ≤ 0', async () => {
    expectProblem(await t.post('/forward', { x: X, eps: 0 }), 400, 'eps');
    expectProblem(await t.post('/backward', { x: X, dy: X, eps: -1e-5 }), 400, 'eps');
  });

  it('unknown op', async () => {
    expectProblem(await t.post('/forward', { x: X, op: 'frobnicate_norm' }), 400, 'op');
  });

  it('unknown field', async () => {
    expectProblem(await t.post('/forward', { x: X, foo: 1 }), 400, 'foo');
    // dy belongs to /backward only.
    expectProblem(await t.post('/forward', { x: X, dy: X }), 400, 'dy');
    expectProblem(
      await t.post('/forward', { x: { shape: [4, 1], data: [1, 2, 3, 4], dtype: 'f' } }),
      400,
      'x',
    );
  });

  it('other out-of-range parameters', async () => {
    expectProblem(await t.post('/forward', { x: X, correction: 0.5 }), 400, 'correction');
    expectProblem(await t.post('/forward', { x: X, momentum: 1.5 }), 400, 'momentum');
    expectProblem(await t.post('/forward', { x: X, dtype: 'float16' }), 400, 'dtype');
    expectProblem(await t.post('/forward', { x: X, numBatchesTracked: -1 }), 400, 'numBatchesTracked');
  });

  it('eval mode without running statistics, and half a pair', async () => {
    expectProblem(await t.post('/forward', { x: X, training: false }), 400, 'runningMean');
    expectProblem(await t.post('/forward', { x: X, runningMean: [0] }), 400, 'runningVar');
    expectProblem(await t.post('/backward', { x: X, dy: X, mean: [2.5] }), 400, 'invstd');
  });
});

describe('413: body over the configured limit', () => {
  const t = useApp({ bodyLimit: 1000 });

  it('a body over BODY_LIMIT is a 413 problem', async () => {
    const big = { x: Array.from({ length: 300 }, (_, i) => [i]) };
    expect(JSON.stringify(big).length).toBeGreaterThan(1000);
    expectProblem(await t.post('/forward', big), 413);
  });

  it('a body under the limit still works', async () => {
    const r = await t.post('/forward', { x: X });
    expect(r.status).toBe(200);
  });

  // SPEC: "Every error is application/problem+json: { type, title, status, detail, errors: [{ path, message }] }".
  it('the 413 problem carries errors[] naming the body', async () => {
    const big = { x: Array.from({ length: 300 }, (_, i) => [i]) };
    expectProblem(await t.post('/forward', big), 413, 'body');
  });
});

describe('415: unsupported content type', () => {
  const t = useApp();

  for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) {
    it(type, async () => {
      expectProblem(await t.post('/forward', 'x=1', { 'content-type': type }), 415, 'content-type');
    });
  }
});

describe('401: API keys', () => {
  const t = useApp({ apiKeys: ['k1'] });
  const bodies = { '/forward': { x: X }, '/backward': { x: X, dy: X } };

  for (const [url, body] of Object.entries(bodies)) {
    it(`${url} without a key is a 401`, async () => {
      expectProblem(await t.post(url, body), 401);
    });

    it(`${url} with a wrong key is a 401`, async () => {
      expectProblem(await t.post(url, body, { authorization: 'Bearer k2' }), 401);
      expectProblem(await t.post(url, body, { authorization: 'k1' }), 401);
      expectProblem(await t.post(url, body, { authorization: 'Basic k1' }), 401);
    });

    it(`${url} with the right key is a 200`, async () => {
      const r = await t.post(url, body, { authorization: 'Bearer k1' });
      expect(r.status, r.text).toBe(200);
    });
  }

  // SPEC: "Every error is …{ …, errors: [{ path, message }] }"; the field at fault is the header.
  it('the 401 problem carries errors[] naming the authorization header', async () => {
    expectProblem(await t.post('/forward', { x: X }), 401, 'authorization');
  });

  it('the key is checked before the body: an invalid body without a key is a 401, not a 400', async () => {
    expectProblem(await t.post('/forward', { x: 'nope' }), 401);
  });

  for (const url of ['/health', '/ready', '/openapi.json']) {
    it(`${url} is open without a key`, async () => {
      const r = await t.get(url);
      expect(r.status, r.text).toBe(200);
    });
  }

  it('/docs is open without a key', async () => {
    let r = await t.get('/docs');
    for (let hops = 0; hops < 3 && r.status >= 300 && r.status < 400; hops++) {
      r = await t.get(String(r.headers.location));
    }
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^text\/html/);
  });
});

describe('503: overloaded', () => {
  /**
   * Fires concurrent requests that each keep the single worker busy for tens of
   * milliseconds: safetensors bodies (cheap to parse, so they reach the queue
   * faster than the worker empties it; JSON bodies would not, their parse on the
   * event loop is slower than the kernel). Some must be turned away.
   */
  const shape = [32, 64, 32, 32];
  const n = shape.reduce((a, b) => a * b, 1);
  const bytes = new Uint8Array(n * 4);
  const dv = new DataView(bytes.buffer);
  for (let i = 0; i < n; i++) dv.setFloat32(i * 4, (i % 7) - 3, true);
  const header = JSON.stringify({ x: { dtype: 'F32', shape, data_offsets: [0, bytes.length] } });
  const body = assemble(header + ' '.repeat((8 - ((8 + header.length) % 8)) % 8), bytes);

  async function burst(t: TestApp): Promise<Reply[]> {
    const post = async (): Promise<Reply> => {
      const res = await t.app.inject({
        method: 'POST',
        url: '/forward',
        payload: body,
        headers: { 'content-type': 'application/x-safetensors', accept: 'application/x-safetensors' },
      });
      const problem = String(res.headers['content-type']).startsWith('application/problem+json');
      return {
        status: res.statusCode,
        headers: res.headers,
        text: problem ? res.body : '',
        body: problem ? res.json() : undefined,
      };
    };
    const out: Reply[] = [];
    for (let round = 0; round < 3 && !out.some((r) => r.status === 503); round++) {
      out.push(...(await Promise.all(Array.from({ length: 8 }, post))));
    }
    return out;
  }

  const check = (replies: Reply[]) => {
    for (const r of replies) {
      expect([200, 503], r.text.slice(0, 300)).toContain(r.status);
      if (r.status === 503) {
        expectProblem(r, 503);
        expect(r.body.type).toBe('urn:normserve:problem:overloaded');
        expect(r.headers['retry-after']).toBeDefined();
      }
    }
    expect(
      replies.some((r) => r.status === 503),
      `statuses ${replies.map((r) => r.status).join(',')}`,
    ).toBe(true);
    expect(replies.some((r) => r.status === 200)).toBe(true);
  };

  const OFF = { maxEventLoopDelayMs: 0, maxHeapUsedBytes: 0, maxRssBytes: 0 };

  describe('MAX_QUEUE 1', () => {
    const t = useApp({ workers: 1, maxQueue: 1, pressure: OFF });
    it('a full queue is a 503 with Retry-After', async () => {
      check(await burst(t));
    });
  });

  describe('MAX_QUEUE 0 (allowed by the config schema: no waiting at all)', () => {
    const t = useApp({ workers: 1, maxQueue: 0, pressure: OFF });
    it('all workers busy is a 503 with Retry-After, never a 500', async () => {
      check(await burst(t));
    });
  });
});

describe('bad input never changes the answer to another request', () => {
  const t = useApp({ workers: 2 });

  const bad: unknown[] = [
    '{"x": [[1], [2]',
    { x: 'abc' },
    { x: [[1, 2], [3]] },
    { x: { shape: [2, 2], data: [1] } },
    { x: X, gamma: [1, 2] },
    { x: [1, 2] },
    { x: [[1]] },
    { x: X, eps: 0 },
    { x: X, op: 'nope' },
    { x: X, foo: 1 },
    { x: X, training: false },
    { x: [[1], ['oops']] },
  ];

  it('after (and among) a batch of bad requests, good requests still get the right answer', async () => {
    const good = () => t.post('/forward', { x: X, gamma: [2], beta: [1] });
    const replies = await Promise.all([
      ...bad.map((b) => t.post('/forward', b)),
      good(),
      ...bad.map((b) => t.post('/backward', b)),
      good(),
    ]);
    for (const r of replies) {
      if (r.status !== 200) expectProblem(r, 400);
    }
    const expected = [1, 2, 3, 4].map((v) => (2 * (v - 2.5)) / Math.sqrt(5 / 3 + 1e-5) + 1);
    for (const r of [replies[bad.length]!, replies.at(-1)!, await good()]) {
      expect(r.status).toBe(200);
      expectClose(values(r.body.y), expected);
    }
    const health = await t.get('/ready');
    expect(health.status).toBe(200);
  });

  it('hostile bodies (property test) are 200 or a 400 problem, never a 5xx', async () => {
    const tensorish = fc.oneof(
      fc.jsonValue(),
      fc.array(fc.array(fc.oneof(fc.double(), fc.constantFrom('NaN', 'Infinity', 'x')), { maxLength: 3 }), {
        maxLength: 4,
      }),
      fc.record({ shape: fc.array(fc.integer({ min: -1, max: 4 }), { maxLength: 3 }), data: fc.jsonValue() }),
    );
    const field = fc.constantFrom(
      'op',
      'x',
      'dy',
      'gamma',
      'beta',
      'eps',
      'correction',
      'training',
      'runningMean',
      'runningVar',
      'momentum',
      'numBatchesTracked',
      'numGroups',
      'normalizedShape',
      'dtype',
      'mean',
      'invstd',
      '__proto__',
      'constructor',
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('/forward', '/backward'),
        fc.dictionary(field, fc.oneof(tensorish, fc.jsonValue()), { maxKeys: 6 }),
        async (url, body) => {
          const r = await t.post(url, body);
          expect(r.status, `${url} ${JSON.stringify(body)} → ${r.text}`).toBeLessThan(500);
          if (r.status !== 200) expectProblem(r, 400);
        },
      ),
      { numRuns: 300, seed: 42 },
    );
  });

  it('near-valid bodies (property test): a rectangular x with plausible fields is a 200 without null or a 400', async () => {
    const leafArb = fc.oneof(
      { weight: 8, arbitrary: fc.double({ min: -1e6, max: 1e6, noNaN: true }) },
      { weight: 1, arbitrary: fc.constantFrom('NaN', 'Infinity', '-Infinity', 1e300, -1e-300) },
    );
    const tensorArb = (shape: number[]) =>
      fc
        .tuple(
          fc.array(leafArb, {
            minLength: shape.reduce((a, b) => a * b, 1),
            maxLength: shape.reduce((a, b) => a * b, 1),
          }),
          fc.boolean(),
        )
        .map(([data, flat]) => (flat ? { shape, data } : nest(shape, data)));
    const positive = fc.double({ min: 1e-3, max: 1e3, noNaN: true });
    const fields = (url: string, shape: number[]) => {
      const C = [shape[1] ?? 1];
      const common = {
        x: tensorArb(shape),
        gamma: tensorArb(C),
        beta: tensorArb(C),
        eps: fc.double({ min: 1e-8, max: 10, noNaN: true }),
        correction: fc.integer({ min: 0, max: 2 }),
        training: fc.boolean(),
        runningMean: tensorArb(C),
        runningVar: fc.array(positive, { minLength: C[0], maxLength: C[0] }),
        momentum: fc.oneof(fc.double({ min: 0, max: 1, noNaN: true }), fc.constant(null)),
        numBatchesTracked: fc.integer({ min: 0, max: 5 }),
        dtype: fc.constantFrom('float32', 'float64'),
      };
      if (url === '/forward') return fc.record(common, { requiredKeys: ['x'] });
      const backward = {
        ...common,
        dy: tensorArb(shape),
        mean: tensorArb(C),
        invstd: positive.map((v) => Array(C[0]).fill(v)),
      };
      return fc.record(backward, { requiredKeys: ['x', 'dy'] });
    };
    const keys = [
      'op',
      'x',
      'dy',
      'gamma',
      'beta',
      'eps',
      'correction',
      'training',
      'runningMean',
      'runningVar',
      'momentum',
      'numBatchesTracked',
      'dtype',
      'mean',
      'invstd',
    ];
    // One field in four is replaced by an arbitrary JSON value.
    const mutation = fc.oneof(
      { weight: 3, arbitrary: fc.constant(null) },
      { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...keys), fc.jsonValue()) },
    );
    const requestArb = fc.constantFrom('/forward', '/backward').chain((url) =>
      fc
        .array(fc.integer({ min: 1, max: 3 }), { minLength: 1, maxLength: 5 })
        .chain((shape) => fields(url, shape))
        .chain((body) =>
          mutation.map((m) => ({
            url,
            body: m ? { ...body, [m[0]]: m[1] } : (body as Record<string, unknown>),
          })),
        ),
    );
    let ok = 0;
    await fc.assert(
      fc.asyncProperty(requestArb, async ({ url, body }) => {
        const r = await t.post(url, body);
        expect([200, 400], `${url} ${JSON.stringify(body)} → ${r.text}`).toContain(r.status);
        if (r.status === 400) expectProblem(r, 400);
        else {
          ok++;
          expect(r.text).not.toContain('null');
        }
      }),
      { numRuns: 400, seed: 7 },
    );
    // The generator must reach the kernels, not only the validator.
    expect(ok).toBeGreaterThan(10);
  });
});

describe('errors stay small whatever the body', () => {
  const t = useApp();
  it('a body with thousands of unknown fields lists 20 of them and counts the rest', async () => {
    const body: Record<string, unknown> = { x: [[1], [2]] };
    for (let i = 0; i < 5000; i++) body[`field${i}`] = i;
    const r = await t.post('/forward', body);
    expectProblem(r, 400);
    expect(r.body.errors).toHaveLength(20);
    expect(r.body.detail).toMatch(/and 4980 more/);
    expect(r.text.length).toBeLessThan(5000);
  });
  it('a very long unknown key is clipped in the answer', async () => {
    const r = await t.post('/forward', { x: [[1], [2]], ['k'.repeat(100_000)]: 1 });
    expectProblem(r, 400);
    expect(r.text.length).toBeLessThan(2000);
  });
});
