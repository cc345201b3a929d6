import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { expectClose, useApp, values } from '../helpers.js';
import { pack, type RawDType, type RawTensor } from '../safetensors-bytes.js';
import { SAFETENSORS } from './support.js';

/**
 * Hostile input, generated: wrong types in every field, ragged and deep
 * arrays, absurd shapes, prototype-pollution keys, non-finite values where
 * numbers are not allowed, every op with the fields of the others, mangled
 * safetensors bodies, wrong content types and empty bodies. Through app.inject,
 * with requests both on the event loop and in the workers (inlineMax 16).
 *
 * Whatever comes in: never a 5xx, a 4xx is always problem+json with its own
 * status, a 200 never carries a null, nothing is polluted, and a correct
 * request afterwards still gets the right answer.
 */
const t = useApp({ workers: 2, thresholds: { inlineMax: 16, splitMin: Number.MAX_SAFE_INTEGER } });

let sent = 0;
const byStatus = new Map<number, number>();
const protoKeys = Object.getOwnPropertyNames(Object.prototype).sort();

interface Req {
  url: string;
  payload: string | Buffer;
  headers: Record<string, string>;
  method?: 'POST' | 'GET' | 'PUT';
}

const show = (r: Req) =>
  `${r.method ?? 'POST'} ${r.url} ${JSON.stringify(r.headers)} ${
    typeof r.payload === 'string' ? r.payload.slice(0, 300) : `<${r.payload.length} bytes>`
  }`;

async function expectSafe(req: Req) {
  const res = await t.app.inject({
    method: req.method ?? 'POST',
    url: req.url,
    payload: req.payload,
    headers: req.headers,
  });
  sent++;
  byStatus.set(res.statusCode, (byStatus.get(res.statusCode) ?? 0) + 1);
  const what = `${show(req)} → ${res.statusCode} ${res.body.slice(0, 300)}`;
  expect(res.statusCode, what).toBeLessThan(500);
  if (res.statusCode >= 400) {
    expect(String(res.headers['content-type']), what).toMatch(/^application\/problem\+json/);
    const p = JSON.parse(res.body) as { status: number; type: string; detail: string; errors: unknown[] };
    expect(p.status, what).toBe(res.statusCode);
    expect(typeof p.type, what).toBe('string');
    expect(typeof p.detail, what).toBe('string');
    expect(Array.isArray(p.errors), what).toBe(true);
  } else if (String(res.headers['content-type']).startsWith('application/json')) {
    expect(res.body, what).not.toContain('null');
  }
  return res.statusCode;
}

const json = (body: unknown, url = '/forward'): Req => ({
  url,
  payload: JSON.stringify(body),
  headers: { 'content-type': 'application/json' },
});

// ---------------------------------------------------------------------------
// Valid bodies, one per op and pass, to start from.

const OPS = ['batch_norm', 'layer_norm', 'group_norm', 'instance_norm', 'rms_norm'] as const;
type Op = (typeof OPS)[number];

const base: Record<Op, { x: unknown; extra: Record<string, unknown> }> = {
  batch_norm: {
    x: [
      [1, 2],
      [3, 4],
      [5, 7],
    ],
    extra: {},
  },
  layer_norm: {
    x: [
      [1, 2, 3],
      [4, 5, 7],
    ],
    extra: { op: 'layer_norm' },
  },
  group_norm: {
    x: { shape: [2, 4, 2], data: [1, 2, 3, 4, 5, 6, 7, 9, 2, 3, 5, 7, 11, 13, 17, 19] },
    extra: { op: 'group_norm', numGroups: 2 },
  },
  instance_norm: {
    x: [
      [
        [1, 2, 4],
        [3, 5, 9],
      ],
    ],
    extra: { op: 'instance_norm' },
  },
  rms_norm: { x: [[1, 2, 3]], extra: { op: 'rms_norm' } },
};

function validBody(op: Op, url: string): Record<string, unknown> {
  const b = base[op];
  return url === '/backward' ? { ...b.extra, x: b.x, dy: b.x } : { ...b.extra, x: b.x };
}

const FIELDS = [
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
  'var',
  'invstd',
  'rrms',
];

const urlArb = fc.constantFrom('/forward', '/backward');
const opArb = fc.constantFrom(...OPS);

/** Values of every JSON type, and the strings that look like numbers. */
const wrongValue = fc.oneof(
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom('NaN', 'Infinity', '-Infinity', '', '1e-5', '0', '[1]', 'true', 'null', 'batch_norm'),
  fc.constantFrom(0, -0, -1, 1.5, 2 ** 31, 2 ** 53, Number.MAX_VALUE, Number.MIN_VALUE, -1e-300),
  fc.array(fc.oneof(fc.integer({ min: -3, max: 9 }), fc.string({ maxLength: 3 }), fc.constant(null)), {
    maxLength: 5,
  }),
  fc.dictionary(fc.constantFrom('shape', 'data', 'a', 'dtype'), fc.jsonValue({ maxDepth: 2 }), {
    maxKeys: 3,
  }),
  fc.jsonValue({ maxDepth: 3 }),
);

// ---------------------------------------------------------------------------

describe('fuzz: generated malformed and adversarial requests', { timeout: 120_000 }, () => {
  afterAll(() => {
    const statuses = [...byStatus.entries()].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s}×${n}`);
    console.log(`fuzz: ${sent} requests sent (${statuses.join(', ')})`);
  });

  it('wrong types in every field of every op', async () => {
    await fc.assert(
      fc.asyncProperty(
        opArb,
        urlArb,
        fc.constantFrom(...FIELDS),
        wrongValue,
        async (op, url, field, value) => {
          await expectSafe(json({ ...validBody(op, url), [field]: value }, url));
        },
      ),
      { numRuns: 1500, seed: 101 },
    );
  });

  it('ragged, mixed and malformed nested tensors in every tensor field', async () => {
    const { tree } = fc.letrec<{ tree: unknown; node: unknown }>((tie) => ({
      tree: fc.array(tie('node'), { maxLength: 4 }),
      node: fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        fc.double(),
        fc.integer({ min: -5, max: 5 }),
        fc.constantFrom('NaN', 'Infinity', '-Infinity', 'nan', '', null, true, {}),
        tie('tree'),
      ),
    }));
    const tensorFields = fc.constantFrom(
      'x',
      'dy',
      'gamma',
      'beta',
      'runningMean',
      'runningVar',
      'mean',
      'invstd',
      'rrms',
    );
    await fc.assert(
      fc.asyncProperty(opArb, urlArb, tensorFields, tree, async (op, url, field, value) => {
        await expectSafe(json({ ...validBody(op, url), [field]: value }, url));
      }),
      { numRuns: 1000, seed: 102 },
    );
  });

  it('absurd shapes: huge, negative, fractional, zero, non-numeric, too many dims, lying about data', async () => {
    const dim = fc.oneof(
      fc.integer({ min: -3, max: 6 }),
      fc.constantFrom(0, -0, 1.5, 2 ** 31, 2 ** 32 + 1, 2 ** 53, 2 ** 53 + 2, 1e308, Number.MAX_SAFE_INTEGER),
      fc.constantFrom('2', 'NaN', 'Infinity', null, true, [2], {}),
    );
    const shape = fc.oneof(fc.array(dim, { maxLength: 12 }), wrongValue);
    const data = fc.oneof(
      fc.array(fc.double({ min: -10, max: 10, noNaN: true }), { maxLength: 40 }),
      fc.array(fc.oneof(fc.constantFrom('NaN', 'Infinity', '-Infinity', 'x', null), fc.integer()), {
        maxLength: 8,
      }),
      wrongValue,
    );
    const where = fc.constantFrom('x', 'dy', 'gamma', 'runningVar', 'mean');
    await fc.assert(
      fc.asyncProperty(opArb, urlArb, where, shape, data, async (op, url, field, s, d) => {
        await expectSafe(json({ ...validBody(op, url), [field]: { shape: s, data: d } }, url));
      }),
      { numRuns: 1500, seed: 103 },
    );
  });

  it('deep nesting: 1,000 to 20,000 levels of arrays and objects, anywhere', async () => {
    const place = fc.constantFrom(
      'x',
      'dy',
      'gamma',
      'eps',
      'shape',
      'data',
      'body',
      'normalizedShape',
      'op',
    );
    await fc.assert(
      fc.asyncProperty(
        urlArb,
        place,
        fc.integer({ min: 1_000, max: 20_000 }),
        fc.boolean(),
        async (url, where, depth, objects) => {
          const deep = objects
            ? `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`
            : `${'['.repeat(depth)}1${']'.repeat(depth)}`;
          const x = '[[1],[2],[3]]';
          const dy = url === '/backward' ? `,"dy":${x}` : '';
          let text: string;
          if (where === 'body') text = deep;
          else if (where === 'shape') text = `{"x":{"shape":${deep},"data":[1,2,3]}${dy}}`;
          else if (where === 'data') text = `{"x":{"shape":[3,1],"data":${deep}}${dy}}`;
          else if (where === 'x') text = `{"x":${deep}${dy}}`;
          else text = `{"x":${x}${dy},"${where}":${deep}}`;
          await expectSafe({ url, payload: text, headers: { 'content-type': 'application/json' } });
        },
      ),
      { numRuns: 200, seed: 104 },
    );
  });

  it('prototype-pollution keys in the body, in tensor objects and in safetensors', async () => {
    const key = fc.constantFrom(
      '__proto__',
      'constructor',
      'prototype',
      'hasOwnProperty',
      'toString',
      'valueOf',
    );
    const payload = fc.constantFrom(
      '{"polluted":1}',
      '{"prototype":{"polluted":1}}',
      '{"shape":[3,1],"data":[1,2,3]}',
      '[1,2,3]',
      '1',
      '"x"',
      'null',
    );
    const where = fc.constantFrom('top', 'x', 'gamma', 'first', 'nested');
    const asJson = fc.tuple(urlArb, key, payload, where).map(([url, k, p, w]): Req => {
      const dy = url === '/backward' ? ',"dy":[[1],[2],[3]]' : '';
      let text: string;
      if (w === 'top') text = `{"x":[[1],[2],[3]]${dy},"${k}":${p}}`;
      else if (w === 'first') text = `{"${k}":${p},"x":[[1],[2],[3]]${dy}}`;
      else if (w === 'x') text = `{"x":{"shape":[3,1],"data":[1,2,3],"${k}":${p}}${dy}}`;
      else if (w === 'gamma') text = `{"x":[[1],[2],[3]]${dy},"gamma":{"shape":[1],"data":[2],"${k}":${p}}}`;
      else text = `{"x":[[1],[2],[3]]${dy},"runningMean":[0],"runningVar":[1],"${k}":{"${k}":${p}}}`;
      return { url, payload: text, headers: { 'content-type': 'application/json' } };
    });
    const asSafetensors = fc.tuple(urlArb, key, fc.boolean()).map(([url, k, inMetadata]): Req => {
      const x: RawTensor = { dtype: 'F64', shape: [3, 1], values: [1, 2, 3] };
      const tensors: Record<string, RawTensor> = url === '/backward' ? { x, dy: x } : { x };
      const body = inMetadata
        ? pack(tensors, { [k]: '{"polluted":1}' }).body
        : pack({ ...tensors, [k]: { dtype: 'F64', shape: [1], values: [7] } }).body;
      return { url, payload: body, headers: { 'content-type': SAFETENSORS } };
    });
    await fc.assert(
      fc.asyncProperty(fc.oneof(asJson, asSafetensors), async (req) => {
        await expectSafe(req);
        expect(({} as Record<string, unknown>).polluted).toBeUndefined();
      }),
      { numRuns: 800, seed: 105 },
    );
    expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(protoKeys);
    expect(Object.hasOwn(Object.prototype, 'polluted')).toBe(false);
  });

  it('non-finite values and odd number spellings where they do not belong', async () => {
    const token = fc.constantFrom(
      '"NaN"',
      '"Infinity"',
      '"-Infinity"',
      'NaN',
      'Infinity',
      '1e309',
      '-1e309',
      '1e-400',
      '-0',
      '0x10',
      '01',
      '.5',
      '+1',
      '1e',
      '"1e-5"',
      '9007199254740993',
      '1.0000000000000002',
    );
    const field = fc.constantFrom(
      'eps',
      'correction',
      'momentum',
      'numBatchesTracked',
      'numGroups',
      'training',
      'dtype',
      'op',
      'normalizedShape[0]',
      'shape[0]',
      'data[0]',
      'gamma[0]',
    );
    await fc.assert(
      fc.asyncProperty(opArb, urlArb, field, token, async (op, url, f, tok) => {
        const body = validBody(op, url);
        const hole = '"@@HOLE@@"';
        if (f === 'normalizedShape[0]') body.normalizedShape = ['@@HOLE@@'];
        else if (f === 'shape[0]') body.x = { shape: ['@@HOLE@@', 1], data: [1, 2, 3] };
        else if (f === 'data[0]') body.x = { shape: [3, 1], data: ['@@HOLE@@', 2, 3] };
        else if (f === 'gamma[0]') body.gamma = ['@@HOLE@@'];
        else body[f] = '@@HOLE@@';
        const text = JSON.stringify(body).replace(hole, tok);
        await expectSafe({ url, payload: text, headers: { 'content-type': 'application/json' } });
      }),
      { numRuns: 800, seed: 106 },
    );
  });

  it('every op with the fields of the other ops', async () => {
    const foreign: Record<string, unknown> = {
      numGroups: 1,
      normalizedShape: [2],
      runningMean: [0, 0],
      runningVar: [1, 1],
      momentum: 0.1,
      numBatchesTracked: 1,
      training: true,
      beta: [0, 0],
      gamma: [1, 1],
      correction: 0,
      mean: [0],
      invstd: [1],
      var: [1],
      rrms: [1],
      dy: [
        [1, 1],
        [1, 1],
        [1, 1],
      ],
      dtype: 'float32',
    };
    await fc.assert(
      fc.asyncProperty(
        opArb,
        urlArb,
        fc.subarray(Object.keys(foreign), { minLength: 1, maxLength: 4 }),
        async (op, url, keys) => {
          const body = validBody(op, url);
          for (const k of keys) body[k] = foreign[k];
          await expectSafe(json(body, url));
        },
      ),
      { numRuns: 1000, seed: 107 },
    );
  });

  it('safetensors bodies with flipped bytes, truncated, or with lying headers', async () => {
    const valid = fc
      .tuple(urlArb, fc.constantFrom<RawDType>('F32', 'F64'), opArb, fc.boolean())
      .map(([url, dtype, op, big]) => {
        const shape =
          op === 'layer_norm' || op === 'rms_norm' ? (big ? [6, 5] : [2, 3]) : big ? [4, 4, 5] : [2, 2, 3];
        const n = shape.reduce((a, b) => a * b, 1);
        const x = { dtype, shape, values: Array.from({ length: n }, (_, i) => (i * 7) % 11) };
        const tensors: Record<string, typeof x> = url === '/backward' ? { x, dy: x } : { x };
        const metadata: Record<string, string> = { op };
        if (op === 'group_norm') metadata.numGroups = '2';
        return { url, body: pack(tensors, metadata).body };
      });
    const mutation = fc.oneof(
      fc.record({
        kind: fc.constant('flip' as const),
        at: fc.array(fc.nat(), { minLength: 1, maxLength: 8 }),
        bits: fc.integer({ min: 1, max: 255 }),
      }),
      fc.record({
        kind: fc.constant('headerFlip' as const),
        at: fc.array(fc.nat(), { minLength: 1, maxLength: 4 }),
        bits: fc.integer({ min: 1, max: 255 }),
      }),
      fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('length' as const), n: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
      fc.record({
        kind: fc.constant('header' as const),
        text: fc.oneof(
          fc.string({ maxLength: 40 }),
          fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.stringify(v)),
        ),
      }),
      fc.record({
        kind: fc.constant('entry' as const),
        entry: fc.record({
          dtype: fc.oneof(fc.constantFrom('F16', 'BF16', 'I32', 'U8', 'F64', 'F32', 'BOOL', ''), wrongValue),
          shape: fc.oneof(fc.array(fc.integer({ min: -2, max: 2 ** 32 }), { maxLength: 4 }), wrongValue),
          data_offsets: fc.oneof(
            fc.tuple(fc.integer({ min: -8, max: 1 << 20 }), fc.integer({ min: -8, max: 1 << 20 })),
            wrongValue,
          ),
        }),
      }),
    );
    const mutate = (body: Buffer, m: Record<string, unknown> & { kind: string }) => {
      const out = Buffer.from(body);
      const headerEnd = 8 + Number(out.readBigUInt64LE(0));
      switch (m.kind) {
        case 'flip':
          for (const i of m.at as number[]) out[i % out.length]! ^= m.bits as number;
          return out;
        case 'headerFlip':
          for (const i of m.at as number[]) out[i % headerEnd]! ^= m.bits as number;
          return out;
        case 'truncate':
          return out.subarray(0, (m.at as number) % out.length);
        case 'length':
          out.writeBigUInt64LE(m.n as bigint, 0);
          return out;
        case 'header': {
          const text = Buffer.from(m.text as string);
          const head = Buffer.alloc(8);
          head.writeBigUInt64LE(BigInt(text.length), 0);
          return Buffer.concat([head, text, out.subarray(headerEnd)]);
        }
        default: {
          const header = JSON.parse(out.subarray(8, headerEnd).toString()) as Record<string, unknown>;
          header.x = m.entry;
          const text = Buffer.from(JSON.stringify(header));
          const head = Buffer.alloc(8);
          head.writeBigUInt64LE(BigInt(text.length), 0);
          return Buffer.concat([head, text, out.subarray(headerEnd)]);
        }
      }
    };
    await fc.assert(
      fc.asyncProperty(valid, mutation, fc.boolean(), async ({ url, body }, m, binaryReply) => {
        const payload = mutate(body, m as never);
        await expectSafe({
          url,
          payload,
          headers: { 'content-type': SAFETENSORS, ...(binaryReply ? { accept: SAFETENSORS } : {}) },
        });
      }),
      { numRuns: 1500, seed: 108 },
    );
  });

  it('wrong content types, empty bodies, other methods', async () => {
    const validJson = JSON.stringify({ x: [[1], [2], [3]] });
    const validBinary = pack({ x: { dtype: 'F64', shape: [3, 1], values: [1, 2, 3] } }).body;
    const type = fc.oneof(
      fc.constantFrom(
        'application/json',
        'application/json; charset=utf-8',
        'APPLICATION/JSON',
        'application/json; charset=latin1',
        'application/jsonx',
        'application/x-json',
        'text/json',
        'text/plain',
        'text/html',
        'application/xml',
        'application/x-www-form-urlencoded',
        'multipart/form-data; boundary=xyz',
        'application/octet-stream',
        SAFETENSORS,
        `${SAFETENSORS}; charset=utf-8`,
        'application/x-safetensorsx',
        '*/*',
        'application/*',
        '',
        ';',
        'application/json, application/x-safetensors',
      ),
      fc.stringMatching(/^[\x20-\x7e]{0,40}$/),
    );
    const payload = fc.oneof(
      fc.constant(''),
      fc.constant(validJson),
      fc.constant(validBinary),
      fc.constant('x=1&y=2'),
      fc.constant('<x>1</x>'),
      fc.constant(' '),
      fc.constant('\u0000'),
      fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('/forward', '/backward', '/forward?x=1', '/nope', '/forward/'),
        fc.constantFrom('POST', 'POST', 'POST', 'GET', 'PUT') as fc.Arbitrary<'POST' | 'GET' | 'PUT'>,
        fc.option(type, { nil: undefined }),
        payload,
        async (url, method, contentType, body) => {
          await expectSafe({
            url,
            method,
            payload: body,
            headers: contentType === undefined ? {} : { 'content-type': contentType },
          });
        },
      ),
      { numRuns: 1000, seed: 109 },
    );
  });

  it('arbitrary JSON values as the whole body', async () => {
    await fc.assert(
      fc.asyncProperty(urlArb, fc.jsonValue({ maxDepth: 4 }), async (url, body) => {
        await expectSafe(json(body, url));
      }),
      { numRuns: 1000, seed: 110 },
    );
  });

  it('a 5,000-deep array or object as op is a 400, not a 500 (the unknown-op message must not recurse)', async () => {
    for (const deep of [
      `${'['.repeat(5_000)}1${']'.repeat(5_000)}`,
      `${'{"a":'.repeat(5_000)}1${'}'.repeat(5_000)}`,
    ]) {
      const r = await t.app.inject({
        method: 'POST',
        url: '/forward',
        payload: `{"x":[[1],[2],[3]],"op":${deep}}`,
        headers: { 'content-type': 'application/json' },
      });
      expect(r.statusCode, r.body.slice(0, 300)).toBe(400);
      expect(r.body.length, 'the 400 does not echo the whole value').toBeLessThan(2_000);
    }
  });

  it('ran at least 10,000 requests', () => {
    expect(sent).toBeGreaterThanOrEqual(10_000);
  });

  it('after all of them, the service still answers right, on the event loop and in the workers', async () => {
    for (const url of ['/forward', '/backward']) {
      const r = await t.post(
        url,
        url === '/forward'
          ? { x: [[1], [2], [3], [4]] }
          : { x: [[1], [2], [3], [4]], dy: [[1], [0], [0], [0]] },
      );
      expect(r.status, r.text).toBe(200);
      if (url === '/forward')
        expectClose(
          values(r.body.y),
          [-1.5, -0.5, 0.5, 1.5].map((d) => d / Math.sqrt(5 / 3 + 1e-5)),
        );
      // The README's worked example: dy = 1 on the first value, correction 1.
      else
        expectClose(
          values(r.body.dx),
          [0.23238039503076413, -0.3098370410540449, -0.07746013167692138, 0.15491677770020218],
          1e-12,
        );
    }
    // A request big enough for a worker.
    const n = 64;
    const x = { shape: [n, 1], data: Array.from({ length: n }, (_, i) => i) };
    const big = await t.post('/forward', { x });
    expect(big.status).toBe(200);
    expectClose(values(big.body.mean), [(n - 1) / 2]);
    expect(t.app.compute.threads).toBe(2);
    expect((await t.get('/ready')).status).toBe(200);
  });
});
