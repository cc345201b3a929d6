import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { decodeSafetensors } from '../../src/tensor/safetensors.js';
import { leaf, type Reply, type TestApp, useApp } from '../helpers.js';
import { assemble, pack, type RawDType, type RawTensor, readHeader } from '../safetensors-bytes.js';

/**
 * The safetensors transport of /forward and /backward. Its expectations are the
 * JSON transport's answers to the same request (which the other route tests
 * check against PyTorch goldens, finite differences and hand-worked values):
 * the binary body must give the very same numbers, whether the reply is JSON
 * (flat {shape, data}, as x was binary) or safetensors. Request bodies are
 * built by hand (test/safetensors-bytes.ts), not with the service's encoder.
 */
const SAFETENSORS = 'application/x-safetensors';

interface BinaryReply extends Reply {
  raw: Buffer;
}

async function postBinary(t: TestApp, url: string, body: Buffer, accept?: string): Promise<BinaryReply> {
  const res = await t.app.inject({
    method: 'POST',
    url,
    payload: body,
    headers: { 'content-type': SAFETENSORS, ...(accept ? { accept } : {}) },
  });
  let parsed: unknown;
  try {
    parsed = JSON.parse(res.body);
  } catch {
    parsed = undefined;
  }
  return { status: res.statusCode, headers: res.headers, text: res.body, body: parsed, raw: res.rawPayload };
}

function expectProblem(r: Reply, status: number, path: string) {
  expect(r.status, r.text).toBe(status);
  expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(r.body.status).toBe(status);
  expect(typeof r.body.detail).toBe('string');
  const paths: string[] = (r.body.errors ?? []).map((e: { path: string }) => e.path);
  expect(paths, `errors[].path names ${path}`).toContain(path);
}

// ---------------------------------------------------------------------------
// One request, three spellings: JSON, safetensors with a JSON reply, safetensors with a safetensors reply.

type Kind = 'signed' | 'positive';

/** Tensors that must be positive to make sense (variances, inverse deviations). */
const POSITIVE = new Set(['runningVar', 'invstd', 'rrms']);

interface Request {
  /** tensor name → shape; x first */
  shapes: Record<string, number[]>;
  /** scalar fields (op included unless the default op is meant) */
  scalars: Record<string, unknown>;
}

interface Built {
  json: Record<string, unknown>;
  binary: Buffer;
}

function randomValues(n: number, kind: Kind, seed: number): number[] {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 31 - 1;
  };
  return Array.from({ length: n }, () => (kind === 'positive' ? 0.5 + Math.abs(next()) : 2 + 3 * next()));
}

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/**
 * The JSON body and the safetensors body of one request. `dtypes` gives each
 * tensor's safetensors dtype (x's decides the computation); the JSON body then
 * asks for that dtype explicitly, and carries the same values (F32 ones rounded).
 */
function build(req: Request, dtypes: (name: string) => RawDType, seed: number): Built {
  const tensors: Record<string, RawTensor> = {};
  const json: Record<string, unknown> = { ...req.scalars };
  let i = 0;
  for (const [name, shape] of Object.entries(req.shapes)) {
    const dtype = dtypes(name);
    const raw = randomValues(size(shape), POSITIVE.has(name) ? 'positive' : 'signed', seed * 100 + i++);
    const values = dtype === 'F32' ? raw.map(Math.fround) : raw;
    tensors[name] = { dtype, shape, values };
    json[name] = { shape, data: values };
  }
  json.dtype = dtypes('x') === 'F32' ? 'float32' : 'float64';
  const metadata = Object.fromEntries(
    Object.entries(req.scalars).map(([k, v]) => [k, k === 'op' ? String(v) : JSON.stringify(v)]),
  );
  const binary = pack(tensors, Object.keys(metadata).length > 0 ? metadata : undefined).body;
  return { json, binary };
}

/** The safetensors reply has the JSON reply's tensors (same numbers, in `dtype`) and scalars (as strings). */
function expectSameAnswer(bin: BinaryReply, json: Reply, dtype: RawDType) {
  expect(bin.status, bin.text).toBe(200);
  expect(bin.headers['content-type']).toMatch(/^application\/x-safetensors/);
  const { json: header, dataStart } = readHeader(bin.raw);
  expect(dataStart % 8, 'data 8-byte aligned').toBe(0);
  const file = decodeSafetensors(new Uint8Array(bin.raw), false);
  const tensorKeys: string[] = [];
  const scalarKeys: string[] = [];
  for (const [key, value] of Object.entries(json.body as Record<string, unknown>)) {
    if (typeof value === 'object' && value !== null) {
      tensorKeys.push(key);
      const expected = value as { shape: number[]; data: unknown[] };
      const got = file.tensors[key];
      expect(got, `tensor ${key}`).toBeDefined();
      expect((header[key] as { dtype: string }).dtype, `${key}'s dtype`).toBe(dtype);
      expect(got!.dtype).toBe(dtype);
      expect(got!.shape, `${key}'s shape`).toEqual(expected.shape);
      const numbers = expected.data.map(leaf);
      // JSON writes float32 with the fewest digits that round-trip, so rounding them back gives the bits.
      expect(Array.from(got!.data), key).toEqual(dtype === 'F32' ? numbers.map(Math.fround) : numbers);
    } else {
      scalarKeys.push(key);
      expect(file.metadata[key], `__metadata__.${key}`).toBe(String(value));
    }
  }
  expect(Object.keys(file.tensors).sort()).toEqual(tensorKeys.sort());
  expect(Object.keys(file.metadata).sort()).toEqual(scalarKeys.sort());
}

async function expectTransportsAgree(
  t: TestApp,
  url: string,
  req: Request,
  dtypes: (name: string) => RawDType,
  seed: number,
) {
  const { json, binary } = build(req, dtypes, seed);
  const viaJson = await t.post(url, json);
  expect(viaJson.status, viaJson.text).toBe(200);
  const asJson = await postBinary(t, url, binary);
  expect(asJson.status, asJson.text).toBe(200);
  expect(asJson.headers['content-type']).toMatch(/^application\/json/);
  // Same text: same keys, same order, flat tensors, same digits.
  expect(asJson.text).toBe(viaJson.text);
  const asBinary = await postBinary(t, url, binary, SAFETENSORS);
  const computed = dtypes('x');
  expectSameAnswer(asBinary, viaJson, computed);
}

// ---------------------------------------------------------------------------
// Every op, forward and backward. `big` requests have more than 2048 elements (bodies over 4 KiB):
// they leave the event loop for a worker, or for every worker when the app splits requests.

interface Case {
  name: string;
  url: '/forward' | '/backward';
  make(big: boolean): Request;
}

const bn = (big: boolean) => (big ? [8, 4, 80] : [4, 3, 5]);
const ch = (shape: number[]) => [shape[1]!];

const cases: Case[] = [
  {
    name: 'batch_norm forward, all defaults (no __metadata__, op omitted)',
    url: '/forward',
    make: (big) => ({ shapes: { x: bn(big) }, scalars: {} }),
  },
  {
    name: 'batch_norm forward, running statistics, momentum null, correction 0',
    url: '/forward',
    make: (big) => {
      const x = bn(big);
      return {
        shapes: { x, gamma: ch(x), beta: ch(x), runningMean: ch(x), runningVar: ch(x) },
        scalars: { op: 'batch_norm', momentum: null, numBatchesTracked: 3, correction: 0, eps: 1e-3 },
      };
    },
  },
  {
    name: 'batch_norm forward, running statistics, momentum 0.25, training true',
    url: '/forward',
    make: (big) => {
      const x = bn(big);
      return {
        shapes: { x, runningMean: ch(x), runningVar: ch(x) },
        scalars: { op: 'batch_norm', momentum: 0.25, training: true },
      };
    },
  },
  {
    name: 'batch_norm forward, eval',
    url: '/forward',
    make: (big) => {
      const x = bn(big);
      return {
        shapes: { x, gamma: ch(x), beta: ch(x), runningMean: ch(x), runningVar: ch(x) },
        scalars: { op: 'batch_norm', training: false, eps: 1e-2 },
      };
    },
  },
  {
    name: 'batch_norm backward, training, correction 1',
    url: '/backward',
    make: (big) => {
      const x = bn(big);
      return { shapes: { x, dy: x, gamma: ch(x) }, scalars: { op: 'batch_norm', correction: 1 } };
    },
  },
  {
    name: 'batch_norm backward, saved mean and invstd',
    url: '/backward',
    make: (big) => {
      const x = bn(big);
      return {
        shapes: { x, dy: x, gamma: ch(x), mean: ch(x), invstd: ch(x) },
        scalars: { op: 'batch_norm', correction: 0 },
      };
    },
  },
  {
    name: 'batch_norm backward, eval',
    url: '/backward',
    make: (big) => {
      const x = bn(big);
      return {
        shapes: { x, dy: x, gamma: ch(x), runningMean: ch(x), runningVar: ch(x) },
        scalars: { op: 'batch_norm', training: false },
      };
    },
  },
  {
    name: 'layer_norm forward, normalizedShape of two dims',
    url: '/forward',
    make: (big) => {
      const x = big ? [16, 8, 24] : [2, 3, 4];
      const ns = x.slice(1);
      return {
        shapes: { x, gamma: ns, beta: ns },
        scalars: { op: 'layer_norm', normalizedShape: ns, eps: 1e-5, correction: 1 },
      };
    },
  },
  {
    name: 'layer_norm forward, default normalizedShape',
    url: '/forward',
    make: (big) => ({ shapes: { x: big ? [64, 48] : [3, 5] }, scalars: { op: 'layer_norm' } }),
  },
  {
    name: 'layer_norm backward, saved statistics',
    url: '/backward',
    make: (big) => {
      const x = big ? [16, 8, 24] : [2, 3, 4];
      const ns = x.slice(2);
      const lead = x.slice(0, 2);
      return {
        shapes: { x, dy: x, gamma: ns, mean: lead, invstd: lead },
        scalars: { op: 'layer_norm', normalizedShape: ns },
      };
    },
  },
  {
    name: 'group_norm forward',
    url: '/forward',
    make: (big) => {
      const x = big ? [4, 8, 96] : [2, 4, 3];
      return { shapes: { x, gamma: ch(x), beta: ch(x) }, scalars: { op: 'group_norm', numGroups: 2 } };
    },
  },
  {
    name: 'group_norm backward, correction 1',
    url: '/backward',
    make: (big) => {
      const x = big ? [4, 8, 96] : [2, 4, 3];
      return {
        shapes: { x, dy: x, gamma: ch(x) },
        scalars: { op: 'group_norm', numGroups: 4, correction: 1 },
      };
    },
  },
  {
    name: 'instance_norm forward, running statistics',
    url: '/forward',
    make: (big) => {
      const x = big ? [4, 4, 160] : [2, 3, 4];
      return {
        shapes: { x, gamma: ch(x), beta: ch(x), runningMean: ch(x), runningVar: ch(x) },
        scalars: { op: 'instance_norm', momentum: 0.2, numBatchesTracked: 7 },
      };
    },
  },
  {
    name: 'instance_norm forward, eval',
    url: '/forward',
    make: (big) => {
      const x = big ? [4, 4, 160] : [2, 3, 4];
      return {
        shapes: { x, runningMean: ch(x), runningVar: ch(x) },
        scalars: { op: 'instance_norm', training: false },
      };
    },
  },
  {
    name: 'instance_norm backward',
    url: '/backward',
    make: (big) => {
      const x = big ? [4, 4, 160] : [2, 3, 4];
      return { shapes: { x, dy: x, gamma: ch(x) }, scalars: { op: 'instance_norm' } };
    },
  },
  {
    name: "rms_norm forward, eps defaulting to the dtype's machine epsilon",
    url: '/forward',
    make: (big) => {
      const x = big ? [32, 96] : [3, 4];
      return { shapes: { x, gamma: x.slice(1) }, scalars: { op: 'rms_norm' } };
    },
  },
  {
    name: 'rms_norm backward, saved rrms',
    url: '/backward',
    make: (big) => {
      const x = big ? [8, 4, 96] : [2, 2, 4];
      const ns = x.slice(1);
      return {
        shapes: { x, dy: x, gamma: ns, rrms: [x[0]!] },
        scalars: { op: 'rms_norm', normalizedShape: ns, eps: 1e-6 },
      };
    },
  },
];

const uniform = (dtype: RawDType) => () => dtype;

function matrix(t: TestApp) {
  cases.forEach((c, k) => {
    for (const big of [false, true]) {
      for (const dtype of ['F32', 'F64'] as const) {
        it(`${c.name}, ${dtype}, ${big ? 'large' : 'small'}`, async () => {
          await expectTransportsAgree(t, c.url, c.make(big), uniform(dtype), k * 4 + (big ? 2 : 0));
        });
      }
    }
  });
}

describe('safetensors = JSON, every op and pass (inline and one worker by size)', () => {
  const t = useApp({ workers: 2 });
  matrix(t);
});

describe('safetensors = JSON, every op and pass, split across workers', () => {
  const t = useApp({ workers: 2, thresholds: { inlineMax: 0, splitMin: 1 } });
  matrix(t);
});

// ---------------------------------------------------------------------------

describe('safetensors requests: dtypes and __metadata__', () => {
  const t = useApp({ workers: 2 });

  const x = [4, 3, 2];
  const bnRequest: Request = {
    shapes: { x, gamma: [3], beta: [3], runningMean: [3], runningVar: [3] },
    scalars: { op: 'batch_norm', momentum: 0.5 },
  };

  it("x's dtype is the computation's: F32 x gives the float32 answer, not the float64 one", async () => {
    const { json, binary } = build(bnRequest, uniform('F32'), 11);
    const f32 = await t.post('/forward', json);
    const f64 = await t.post('/forward', { ...json, dtype: 'float64' });
    const bin = await postBinary(t, '/forward', binary);
    expect(bin.status, bin.text).toBe(200);
    expect(bin.text).toBe(f32.text);
    expect(bin.text).not.toBe(f64.text);
  });

  it('rms_norm: the default eps follows x (2⁻²³ for F32, 2⁻⁵² for F64)', async () => {
    for (const dtype of ['F32', 'F64'] as const) {
      const eps = dtype === 'F32' ? 2 ** -23 : 2 ** -52;
      const req: Request = { shapes: { x: [2, 4] }, scalars: { op: 'rms_norm' } };
      const { json, binary } = build(req, uniform(dtype), 12);
      const explicit = await t.post('/forward', { ...json, eps });
      const bin = await postBinary(t, '/forward', binary);
      expect(bin.text).toBe(explicit.text);
    }
  });

  it('mixed dtypes: F64 gamma, beta and running statistics with F32 x compute in float32', async () => {
    const dtypes = (name: string): RawDType => (name === 'x' ? 'F32' : 'F64');
    await expectTransportsAgree(t, '/forward', bnRequest, dtypes, 13);
    const { json } = build(bnRequest, dtypes, 13);
    // The F64 parameters really are unrounded: the JSON request carries them as doubles.
    expect((json.gamma as { data: number[] }).data.some((v) => Math.fround(v) !== v)).toBe(true);
  });

  it('mixed dtypes: F32 gamma and dy with F64 x compute in float64', async () => {
    const dtypes = (name: string): RawDType => (name === 'x' ? 'F64' : 'F32');
    await expectTransportsAgree(
      t,
      '/backward',
      { shapes: { x, dy: x, gamma: [3] }, scalars: { op: 'batch_norm' } },
      dtypes,
      14,
    );
  });

  it('a dtype in __metadata__ that matches x is accepted, bare or as JSON text', async () => {
    const { json } = build(bnRequest, uniform('F32'), 15);
    const expected = await t.post('/forward', json);
    for (const dtype of ['float32', '"float32"']) {
      const { binary } = buildWith(bnRequest, 'F32', 15, { dtype });
      const bin = await postBinary(t, '/forward', binary);
      expect(bin.text).toBe(expected.text);
    }
  });

  it('a dtype in __metadata__ that contradicts x is a 400 naming dtype', async () => {
    for (const [xType, dtype] of [
      ['F32', 'float64'],
      ['F64', 'float32'],
      ['F64', '"float32"'],
    ] as const) {
      const { binary } = buildWith(bnRequest, xType, 16, { dtype });
      expectProblem(await postBinary(t, '/forward', binary), 400, 'dtype');
    }
  });

  it('scalar fields as JSON text: "1e-5", "true", "null", "[4]", and op as a bare word or a JSON string', async () => {
    const shapes = { x: [3, 2, 4], gamma: [2, 4], beta: [2, 4] };
    const viaJson = await t.post('/forward', {
      ...build({ shapes, scalars: {} }, uniform('F64'), 17).json,
      op: 'layer_norm',
      eps: 1e-5,
      normalizedShape: [2, 4],
      correction: 1,
    });
    expect(viaJson.status, viaJson.text).toBe(200);
    for (const op of ['layer_norm', '"layer_norm"']) {
      const { binary } = buildWith({ shapes, scalars: {} }, 'F64', 17, {
        op,
        eps: '1e-5',
        normalizedShape: '[2, 4]',
        correction: '1',
      });
      const bin = await postBinary(t, '/forward', binary);
      expect(bin.text, op).toBe(viaJson.text);
    }

    const bnShapes = { x: [4, 3], runningMean: [3], runningVar: [3] };
    const bnJson = await t.post('/forward', {
      ...build({ shapes: bnShapes, scalars: {} }, uniform('F64'), 18).json,
      training: true,
      momentum: null,
      numBatchesTracked: 4,
    });
    expect(bnJson.body.numBatchesTracked).toBe(5);
    const { binary } = buildWith({ shapes: bnShapes, scalars: {} }, 'F64', 18, {
      training: 'true',
      momentum: 'null',
      numBatchesTracked: '4',
    });
    expect((await postBinary(t, '/forward', binary)).text).toBe(bnJson.text);
    const reply = await postBinary(t, '/forward', binary, SAFETENSORS);
    expectSameAnswer(reply, bnJson, 'F64');
    expect(decodeSafetensors(new Uint8Array(reply.raw), false).metadata).toEqual({ numBatchesTracked: '5' });
  });

  it('an unpadded header (data at an unaligned offset) gives the same answer', async () => {
    const { json } = build(bnRequest, uniform('F64'), 19);
    const expected = await t.post('/forward', json);
    const tensors: Record<string, RawTensor> = {};
    for (const [name, shape] of Object.entries(bnRequest.shapes)) {
      tensors[name] = { dtype: 'F64', shape, values: (json[name] as { data: number[] }).data };
    }
    for (let pad = 0; pad < 8; pad++) {
      const { body } = pack(tensors, { op: 'batch_norm', momentum: '0.5' }, { pad });
      const bin = await postBinary(t, '/forward', body);
      expect(bin.text, `pad ${pad}`).toBe(expected.text);
    }
  });

  it('Accept with several types: safetensors with q > 0 gets safetensors, q = 0 gets JSON', async () => {
    const { binary } = build(bnRequest, uniform('F64'), 20);
    const wanted = await postBinary(t, '/forward', binary, `application/json;q=0.5, ${SAFETENSORS}`);
    expect(wanted.headers['content-type']).toMatch(/^application\/x-safetensors/);
    const refused = await postBinary(t, '/forward', binary, `${SAFETENSORS};q=0, application/json`);
    expect(refused.headers['content-type']).toMatch(/^application\/json/);
  });

  it('a JSON request may ask for a safetensors reply too', async () => {
    const { json } = build(bnRequest, uniform('F32'), 21);
    const viaJson = await t.post('/forward', json);
    const r = await t.app.inject({
      method: 'POST',
      url: '/forward',
      payload: JSON.stringify(json),
      headers: { 'content-type': 'application/json', accept: SAFETENSORS },
    });
    expectSameAnswer(
      { status: r.statusCode, headers: r.headers, text: '', body: undefined, raw: r.rawPayload },
      viaJson,
      'F32',
    );
  });

  it('concurrent safetensors requests each get their own answer', async () => {
    const reqs = Array.from({ length: 12 }, (_, i) =>
      build(
        { shapes: { x: i % 2 ? [8, 4, 80] : [4, 3, 5], gamma: [i % 2 ? 4 : 3] }, scalars: {} },
        uniform(i % 3 ? 'F64' : 'F32'),
        30 + i,
      ),
    );
    const expected = await Promise.all(reqs.map((r) => t.post('/forward', r.json)));
    const got = await Promise.all(
      reqs.map((r, i) => postBinary(t, '/forward', r.binary, i % 4 ? undefined : SAFETENSORS)),
    );
    got.forEach((g, i) => {
      if (i % 4) expect(g.text, `request ${i}`).toBe(expected[i]!.text);
      else expectSameAnswer(g, expected[i]!, i % 3 ? 'F64' : 'F32');
    });
  });
});

/** `build`, with `metadata` strings sent as they are (not JSON-stringified). */
function buildWith(req: Request, dtype: RawDType, seed: number, metadata: Record<string, string>): Built {
  const { json } = build(req, uniform(dtype), seed);
  const tensors: Record<string, RawTensor> = {};
  for (const [name, shape] of Object.entries(req.shapes)) {
    tensors[name] = { dtype, shape, values: (json[name] as { data: number[] }).data };
  }
  const meta = {
    ...Object.fromEntries(
      Object.entries(req.scalars).map(([k, v]) => [k, k === 'op' ? String(v) : JSON.stringify(v)]),
    ),
    ...metadata,
  };
  return { json, binary: pack(tensors, meta).body };
}

// ---------------------------------------------------------------------------

describe('safetensors requests: errors are 400 problem+json naming the part at fault', () => {
  const t = useApp({ workers: 2 });

  const good: Request = { shapes: { x: [4, 3, 2], gamma: [3] }, scalars: { op: 'batch_norm' } };
  const header = (h: Record<string, unknown>) => JSON.stringify(h);
  const e = (dtype: string, shape: number[], offsets: number[]) => ({ dtype, shape, data_offsets: offsets });

  it('a truncated body names the tensor whose data is cut off', async () => {
    const { binary } = build(good, uniform('F32'), 40);
    for (const cut of [1, 4, 12]) {
      expectProblem(await postBinary(t, '/forward', binary.subarray(0, binary.length - cut)), 400, 'gamma');
    }
    // Cut into x's data too: the first tensor it reaches past the end is named.
    const r = await postBinary(t, '/forward', binary.subarray(0, binary.length - 20));
    expect(r.status).toBe(400);
    expect(['x', 'gamma']).toContain(r.body.errors[0].path);
  });

  it('a header length that lies names the header', async () => {
    const text = header({ x: e('F32', [2, 1], [0, 8]) });
    const data = new Uint8Array(8);
    for (const n of [BigInt(text.length + 9), 2n ** 40n, 2n ** 64n - 1n, BigInt(text.length - 2)]) {
      expectProblem(await postBinary(t, '/forward', assemble(text, data, n)), 400, 'header');
    }
  });

  it('a body shorter than 8 bytes, an empty body, a header that is not JSON', async () => {
    expectProblem(await postBinary(t, '/forward', Buffer.from([1, 0, 0])), 400, 'header');
    expectProblem(await postBinary(t, '/forward', Buffer.alloc(0)), 400, 'header');
    expectProblem(await postBinary(t, '/forward', assemble('{"x": {', new Uint8Array(8))), 400, 'header');
    expectProblem(await postBinary(t, '/forward', assemble('[1, 2]', new Uint8Array(8))), 400, 'header');
  });

  it('overlapping tensors', async () => {
    const text = header({ x: e('F32', [2, 2], [0, 16]), gamma: e('F32', [2], [8, 16]) });
    const r = await postBinary(t, '/forward', assemble(text, new Uint8Array(16)));
    expect(r.status).toBe(400);
    expect(['x', 'gamma']).toContain(r.body.errors[0].path);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
  });

  it('an unknown dtype names the tensor', async () => {
    // Each entry is well-formed for its dtype (F16 and BF16: 2 bytes, I64: 8, U8: 1); only the dtype is refused.
    const f32 = (shape: number[], at: number) => e('F32', shape, [at, at + 4 * size(shape)]);
    const cases: [Record<string, unknown>, string][] = [
      [{ x: e('F16', [2, 2], [0, 8]), gamma: f32([2], 8) }, 'x'],
      [{ x: e('BF16', [2, 2], [0, 8]), gamma: f32([2], 8) }, 'x'],
      [{ x: f32([2, 2], 0), gamma: e('I64', [2], [16, 32]) }, 'gamma'],
      [{ x: f32([2, 2], 0), gamma: e('U8', [2], [16, 18]) }, 'gamma'],
    ];
    for (const [h, name] of cases) {
      expectProblem(await postBinary(t, '/forward', assemble(header(h), new Uint8Array(32))), 400, name);
    }
    const noDtype = header({ x: { shape: [2, 2], data_offsets: [0, 16] } });
    expectProblem(await postBinary(t, '/forward', assemble(noDtype, new Uint8Array(16))), 400, 'x');
  });

  it('a length that does not match the shape names the tensor', async () => {
    const text = header({ x: e('F32', [2, 2], [0, 16]), beta: e('F64', [2], [16, 24]) });
    expectProblem(await postBinary(t, '/forward', assemble(text, new Uint8Array(24))), 400, 'beta');
  });

  it('a wrong gamma shape, a wrong dy shape, a missing x, a missing dy', async () => {
    expectProblem(
      await postBinary(
        t,
        '/forward',
        build({ ...good, shapes: { x: [4, 3, 2], gamma: [4] } }, uniform('F32'), 41).binary,
      ),
      400,
      'gamma',
    );
    expectProblem(
      await postBinary(
        t,
        '/backward',
        build({ ...good, shapes: { x: [4, 3], dy: [3, 4] } }, uniform('F64'), 42).binary,
      ),
      400,
      'dy',
    );
    expectProblem(
      await postBinary(t, '/forward', build({ ...good, shapes: { gamma: [3] } }, uniform('F64'), 43).binary),
      400,
      'x',
    );
    expectProblem(await postBinary(t, '/backward', build(good, uniform('F64'), 44).binary), 400, 'dy');
  });

  it('an x of rank 0 or with an empty dimension names x', async () => {
    for (const shape of [[], [0, 3], [2, 0]]) {
      const n = size(shape);
      const text = header({ x: e('F64', shape, [0, 8 * n]) });
      expectProblem(await postBinary(t, '/forward', assemble(text, new Uint8Array(8 * n))), 400, 'x');
    }
  });

  it('__metadata__ values that are not JSON text name the key', async () => {
    for (const [key, text] of [
      ['eps', 'abc'],
      ['eps', '1e-5x'],
      ['training', 'yes'],
      ['normalizedShape', '[4'],
      ['momentum', ''],
    ] as const) {
      const { binary } = buildWith(good, 'F32', 45, { [key]: text });
      expectProblem(await postBinary(t, '/forward', binary), 400, `__metadata__.${key}`);
    }
  });

  it('__metadata__ values of the wrong type, or not strings at all', async () => {
    expectProblem(
      await postBinary(t, '/forward', buildWith(good, 'F32', 46, { eps: '"1e-5"' }).binary),
      400,
      'eps',
    );
    expectProblem(
      await postBinary(t, '/forward', buildWith(good, 'F32', 46, { eps: '0' }).binary),
      400,
      'eps',
    );
    expectProblem(
      await postBinary(t, '/forward', buildWith(good, 'F32', 46, { training: '"true"' }).binary),
      400,
      'training',
    );
    const text = header({ __metadata__: { eps: 1e-5 }, x: e('F32', [2, 1], [0, 8]) });
    expectProblem(
      await postBinary(t, '/forward', assemble(text, new Uint8Array(8))),
      400,
      '__metadata__.eps',
    );
  });

  it('an unknown field in __metadata__, an unknown tensor, a field of another op', async () => {
    expectProblem(
      await postBinary(t, '/forward', buildWith(good, 'F32', 47, { colour: '"red"' }).binary),
      400,
      'colour',
    );
    expectProblem(
      await postBinary(
        t,
        '/forward',
        build({ ...good, shapes: { x: [4, 3], colour: [3] } }, uniform('F32'), 48).binary,
      ),
      400,
      'colour',
    );
    expectProblem(
      await postBinary(t, '/forward', buildWith(good, 'F32', 49, { numGroups: '1' }).binary),
      400,
      'numGroups',
    );
  });

  it('an unknown op names op', async () => {
    const r = await postBinary(t, '/forward', buildWith(good, 'F32', 50, { op: 'foo_norm' }).binary);
    expect(r.status).toBe(400);
    expect(r.text).toMatch(/foo_norm/);
  });

  it('a key both in __metadata__ and a tensor names the metadata key', async () => {
    expectProblem(
      await postBinary(t, '/forward', buildWith(good, 'F32', 51, { gamma: '[1, 1, 1]' }).binary),
      400,
      '__metadata__.gamma',
    );
  });

  it('a tensor named __proto__ is refused as JSON refuses it, not silently ignored', async () => {
    const text = header({ x: e('F64', [2, 1], [0, 16]) }).replace(
      /}$/,
      ', "__proto__": {"dtype": "F64", "shape": [1], "data_offsets": [16, 24]}}',
    );
    const viaJson = await t.post('/forward', '{"x": [[1], [2]], "__proto__": [1]}');
    expect(viaJson.status).toBe(400);
    const r = await postBinary(t, '/forward', assemble(text, new Uint8Array(24)));
    expect(r.status, r.text).toBe(400);
  });

  it('after all of that, and alongside bad requests, a good request still answers correctly', async () => {
    const { json, binary } = build(good, uniform('F32'), 52);
    const expected = await t.post('/forward', json);
    const bad = binary.subarray(0, binary.length - 3);
    const replies = await Promise.all(
      Array.from({ length: 10 }, (_, i) => postBinary(t, '/forward', i % 2 ? bad : binary)),
    );
    replies.forEach((r, i) => {
      if (i % 2) expect(r.status).toBe(400);
      else expect(r.text).toBe(expected.text);
    });
  });
});

describe('safetensors requests: the body limit', () => {
  const t = useApp({ bodyLimit: 4096 });

  it('a body over the limit is a 413; a good request afterwards still answers correctly', async () => {
    const big = build({ shapes: { x: [16, 4, 10] }, scalars: {} }, uniform('F64'), 60);
    expect(big.binary.length).toBeGreaterThan(4096);
    const r = await postBinary(t, '/forward', big.binary);
    expect(r.status, r.text).toBe(413);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(r.body.status).toBe(413);

    const small = build({ shapes: { x: [4, 3, 2], gamma: [3] }, scalars: {} }, uniform('F32'), 61);
    expect(small.binary.length).toBeLessThan(4096);
    const expected = await t.post('/forward', small.json);
    const ok = await postBinary(t, '/forward', small.binary);
    expect(ok.status).toBe(200);
    expect(ok.text).toBe(expected.text);
    expectSameAnswer(await postBinary(t, '/forward', small.binary, SAFETENSORS), expected, 'F32');
  });

  /** POSTs `body` in `pieces` chunks as a stream: no Content-Length, as a chunked upload. */
  async function postStream(body: Buffer, pieces: number): Promise<Reply> {
    const step = Math.ceil(body.length / pieces);
    const chunks = Array.from({ length: pieces }, (_, i) => body.subarray(i * step, (i + 1) * step));
    const res = await t.app.inject({
      method: 'POST',
      url: '/forward',
      payload: Readable.from(chunks),
      headers: { 'content-type': SAFETENSORS },
    });
    let parsed: unknown;
    try {
      parsed = JSON.parse(res.body);
    } catch {
      parsed = undefined;
    }
    return { status: res.statusCode, headers: res.headers, text: res.body, body: parsed };
  }

  it('a chunked body (no Content-Length) is read whole; over the limit it is a 413', async () => {
    const small = build({ shapes: { x: [4, 3, 2], gamma: [3] }, scalars: {} }, uniform('F64'), 62);
    const expected = await t.post('/forward', small.json);
    const ok = await postStream(small.binary, 5);
    expect(ok.status, ok.text).toBe(200);
    expect(ok.text).toBe(expected.text);

    const big = build({ shapes: { x: [16, 4, 10] }, scalars: {} }, uniform('F64'), 63);
    const r = await postStream(big.binary, 7);
    expect(r.status, r.text).toBe(413);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect((await postStream(small.binary, 3)).text).toBe(expected.text);
  });

  it('a Content-Length larger than the body sent is a 400, and the next request is unaffected', async () => {
    const small = build({ shapes: { x: [4, 3, 2], gamma: [3] }, scalars: {} }, uniform('F32'), 64);
    const res = await t.app.inject({
      method: 'POST',
      url: '/forward',
      payload: small.binary,
      headers: { 'content-type': SAFETENSORS, 'content-length': String(small.binary.length + 16) },
    });
    expect(res.statusCode, res.body).toBe(400);
    expect(res.headers['content-type']).toMatch(/^application\/problem\+json/);
    const expected = await t.post('/forward', small.json);
    expect((await postBinary(t, '/forward', small.binary)).text).toBe(expected.text);
  });
});
