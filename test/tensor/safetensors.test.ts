import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeSafetensors, encodeSafetensors, SafetensorsError } from '../../src/tensor/safetensors.js';
import { assemble, leBytes, pack, readHeader } from '../safetensors-bytes.js';

/**
 * The safetensors codec against bodies built by hand (test/safetensors-bytes.ts):
 * the expected numbers are the ones written into the bytes, never the encoder's.
 */

/** Element values, NaN equal to NaN and −0 distinct from 0. */
function expectSame(actual: ArrayLike<number>, expected: readonly number[]) {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    expect(Object.is(actual[i], expected[i]), `element ${i}: got ${actual[i]}, expected ${expected[i]}`).toBe(
      true,
    );
  }
}

/** Decoding `body` throws a SafetensorsError whose path is `path`. */
function expectRejected(body: Uint8Array, path: string, message?: RegExp) {
  let caught: unknown;
  try {
    decodeSafetensors(body, false);
  } catch (err) {
    caught = err;
  }
  expect(caught, 'throws').toBeInstanceOf(SafetensorsError);
  const err = caught as SafetensorsError;
  expect(err.path, err.message).toBe(path);
  expect(err.message.length).toBeGreaterThan(0);
  if (message) expect(err.message).toMatch(message);
}

/** A body with `header` (an object, JSON-stringified, or raw text) and `dataBytes` zero bytes of data. */
function withHeader(header: unknown, dataBytes = 16): Buffer {
  const text = typeof header === 'string' ? header : JSON.stringify(header);
  return assemble(text, new Uint8Array(dataBytes));
}

const entry = (dtype: unknown, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });

describe('decodeSafetensors: well-formed bodies', () => {
  it('one F32 tensor: shape, dtype, values (non-finite, −0 and subnormals included)', () => {
    const values = [1, -2.5, Math.fround(0.1), Number.NaN, Number.POSITIVE_INFINITY, -0, 2 ** -149];
    const { body } = pack({ x: { dtype: 'F32', shape: [7], values } });
    const file = decodeSafetensors(body, false);
    expect(Object.keys(file.tensors)).toEqual(['x']);
    const x = file.tensors.x!;
    expect(x.dtype).toBe('F32');
    expect(x.shape).toEqual([7]);
    expect(x.data).toBeInstanceOf(Float32Array);
    expectSame(x.data, values);
    expect(file.metadata).toEqual({});
  });

  it('one F64 tensor, rank 3, read row-major', () => {
    const values = [1 / 3, -0, Number.NaN, Number.NEGATIVE_INFINITY, 5e-324, 1.7976931348623157e308];
    const { body } = pack({ x: { dtype: 'F64', shape: [1, 2, 3], values } });
    const x = decodeSafetensors(body, false).tensors.x!;
    expect(x.dtype).toBe('F64');
    expect(x.shape).toEqual([1, 2, 3]);
    expect(x.data).toBeInstanceOf(Float64Array);
    expectSame(x.data, values);
  });

  it('the bytes are read little-endian: 1.0f is 00 00 80 3f', () => {
    const body = assemble(
      JSON.stringify({ x: entry('F32', [2], [0, 8]) }),
      new Uint8Array([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]),
    );
    expectSame(decodeSafetensors(body, false).tensors.x!.data, [1, -2]);
  });

  it('several tensors of both dtypes, listed in the header in another order than their data', () => {
    const a = [1, 2, 3, 4, 5, 6];
    const b = [0.5, -0.25];
    const c = [Math.fround(Math.PI)];
    const data = new Uint8Array([...leBytes('F64', b), ...leBytes('F32', a), ...leBytes('F32', c)]);
    const header = {
      a: entry('F32', [2, 3], [16, 40]),
      c: entry('F32', [1], [40, 44]),
      b: entry('F64', [2], [0, 16]),
    };
    const file = decodeSafetensors(assemble(JSON.stringify(header), data), false);
    expect(Object.keys(file.tensors).sort()).toEqual(['a', 'b', 'c']);
    expect(file.tensors.a).toMatchObject({ dtype: 'F32', shape: [2, 3] });
    expectSame(file.tensors.a!.data, a);
    expect(file.tensors.b).toMatchObject({ dtype: 'F64', shape: [2] });
    expectSame(file.tensors.b!.data, b);
    expectSame(file.tensors.c!.data, c);
  });

  it('__metadata__ strings are returned as they are, and are not a tensor', () => {
    const metadata = { op: 'layer_norm', eps: '1e-5', normalizedShape: '[4]', note: 'é → ü' };
    const { body } = pack({ x: { dtype: 'F32', shape: [1], values: [3] } }, metadata);
    const file = decodeSafetensors(body, false);
    expect(file.metadata).toEqual(metadata);
    expect(Object.keys(file.tensors)).toEqual(['x']);
  });

  it('an empty __metadata__ and a header with no tensors decode to nothing', () => {
    const file = decodeSafetensors(withHeader({ __metadata__: {} }, 0), false);
    expect(file).toEqual({ tensors: {}, metadata: {} });
    expect(decodeSafetensors(withHeader({}, 0), false)).toEqual({ tensors: {}, metadata: {} });
  });

  it('a rank-0 tensor (shape []) holds one element; a zero-size one holds none', () => {
    const data = new Uint8Array([...leBytes('F64', [42])]);
    const header = { s: entry('F64', [], [0, 8]), e: entry('F32', [0, 3], [8, 8]) };
    const file = decodeSafetensors(assemble(JSON.stringify(header), data), false);
    expect(file.tensors.s!.shape).toEqual([]);
    expectSame(file.tensors.s!.data, [42]);
    expect(file.tensors.e!.shape).toEqual([0, 3]);
    expect(file.tensors.e!.data.length).toBe(0);
  });

  it('a zero-size tensor at the offset where the next one begins is not an overlap', () => {
    // The layout the reference implementation writes for an empty tensor; whatever the header order.
    const data = leBytes('F32', [1, 2]);
    for (const header of [
      { x: entry('F32', [2], [0, 8]), e: entry('F32', [0], [0, 0]) },
      { e: entry('F32', [0], [0, 0]), x: entry('F32', [2], [0, 8]) },
    ]) {
      const file = decodeSafetensors(assemble(JSON.stringify(header), data), false);
      expectSame(file.tensors.x!.data, [1, 2]);
      expect(file.tensors.e!.data.length).toBe(0);
    }
  });
});

describe('decodeSafetensors: alignment and ownership of the bytes', () => {
  const values = [1.5, -2.25, 3e-300, Number.NaN, 7];
  const tensors = {
    f: { dtype: 'F32' as const, shape: [1], values: [0.5] },
    x: { dtype: 'F64' as const, shape: [5], values },
  };

  it('a header padded to 8 bytes: the data starts aligned', () => {
    const { body, dataStart } = pack(tensors, { op: 'batch_norm' });
    expect(dataStart % 8).toBe(0);
    const file = decodeSafetensors(body, false);
    expectSame(file.tensors.x!.data, values);
    expectSame(file.tensors.f!.data, [0.5]);
  });

  for (const exclusive of [false, true]) {
    it(`unpadded headers (0 to 7 extra spaces), exclusive ${exclusive}: unaligned F64 and F32 data decode exactly`, () => {
      // f is 4 bytes, so x (F64) starts 4 bytes into the data; over the 8 paddings the data start takes every residue mod 8.
      const starts = new Set<number>();
      for (let pad = 0; pad < 8; pad++) {
        const { body, dataStart } = pack(tensors, undefined, { pad });
        starts.add(dataStart % 8);
        const file = decodeSafetensors(body, exclusive);
        expectSame(file.tensors.x!.data, values);
        expectSame(file.tensors.f!.data, [0.5]);
      }
      expect(starts.size).toBe(8);
    });
  }

  it('exclusive false: tensors never alias the body (a pooled buffer may be reused)', () => {
    const { body } = pack(tensors);
    const file = decodeSafetensors(body, false);
    for (const t of Object.values(file.tensors)) expect(t.data.buffer).not.toBe(body.buffer);
    body.fill(0);
    expectSame(file.tensors.x!.data, values);
  });

  it('exclusive true: aligned tensors are views on the body, unaligned ones copies (as documented)', () => {
    const aligned = pack({ x: tensors.x, f: tensors.f });
    const file = decodeSafetensors(aligned.body, true);
    expect(file.tensors.x!.data.buffer).toBe(aligned.body.buffer);
    expect(file.tensors.f!.data.buffer).toBe(aligned.body.buffer);
    expectSame(file.tensors.x!.data, values);

    const unaligned = pack(tensors, undefined, { pad: 'align' });
    const u = decodeSafetensors(unaligned.body, true);
    expect(u.tensors.x!.data.buffer).not.toBe(unaligned.body.buffer);
    expectSame(u.tensors.x!.data, values);
  });

  it('a body that is a slice of a larger buffer at an odd byteOffset', () => {
    const { body } = pack(tensors);
    for (const shift of [1, 3, 8, 13]) {
      const big = new Uint8Array(body.length + shift + 11).fill(0xab);
      big.set(body, shift);
      const slice = big.subarray(shift, shift + body.length);
      const file = decodeSafetensors(slice, false);
      expectSame(file.tensors.x!.data, values);
      expectSame(file.tensors.f!.data, [0.5]);
    }
  });

  it('a body in shared memory (SharedArrayBuffer) decodes the same', () => {
    for (const pad of ['align', 3] as const) {
      const { body } = pack(tensors, { eps: '1e-5' }, { pad });
      const shared = new Uint8Array(new SharedArrayBuffer(body.length));
      shared.set(body);
      for (const exclusive of [false, true]) {
        const file = decodeSafetensors(shared, exclusive);
        expectSame(file.tensors.x!.data, values);
        expectSame(file.tensors.f!.data, [0.5]);
        expect(file.metadata).toEqual({ eps: '1e-5' });
      }
    }
  });
});

describe('encodeSafetensors', () => {
  it('round trip: encode → decode gives the same tensors, dtypes, shapes and metadata', () => {
    const tensors = {
      y: { shape: [2, 3], data: Float32Array.from([1, -2, 0.1, Number.NaN, Number.NEGATIVE_INFINITY, -0]) },
      mean: { shape: [3], data: Float64Array.from([1 / 3, 2e-310, -7]) },
      one: { shape: [1], data: Float32Array.from([5]) },
    };
    const metadata = { numBatchesTracked: '4', note: 'naïve → ok' };
    const file = decodeSafetensors(encodeSafetensors(tensors, metadata), false);
    expect(Object.keys(file.tensors)).toEqual(['y', 'mean', 'one']);
    expect(file.tensors.y).toMatchObject({ dtype: 'F32', shape: [2, 3] });
    expect(file.tensors.mean).toMatchObject({ dtype: 'F64', shape: [3] });
    expect(file.tensors.one).toMatchObject({ dtype: 'F32', shape: [1] });
    for (const [name, t] of Object.entries(tensors)) expectSame(file.tensors[name]!.data, Array.from(t.data));
    expect(file.metadata).toEqual(metadata);
  });

  it('the header length is u64 little-endian, the header JSON, the data 8-byte aligned and laid out in order', () => {
    const a = Float32Array.from([1, 2, 3]);
    const b = Float64Array.from([0.5, -1]);
    const out = encodeSafetensors({ a: { shape: [3], data: a }, b: { shape: [2], data: b } }, { k: 'v' });
    const { n, json, dataStart } = readHeader(out);
    expect(dataStart % 8).toBe(0);
    expect(out.length).toBe(dataStart + 12 + 16);
    expect(json).toEqual({
      __metadata__: { k: 'v' },
      a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] },
      b: { dtype: 'F64', shape: [2], data_offsets: [12, 28] },
    });
    // Any padding is JSON whitespace at the end of the header.
    const text = new TextDecoder().decode(out.subarray(8, 8 + n));
    expect(text.trimEnd()).toBe(text.slice(0, text.trimEnd().length));
    expect(/^[ ]*$/.test(text.slice(text.trimEnd().length))).toBe(true);
    expect(Array.from(out.subarray(dataStart, dataStart + 12))).toEqual(
      Array.from(leBytes('F32', [1, 2, 3])),
    );
    expect(Array.from(out.subarray(dataStart + 12))).toEqual(Array.from(leBytes('F64', [0.5, -1])));
  });

  it('no metadata: no __metadata__ key', () => {
    const out = encodeSafetensors({ x: { shape: [1], data: Float64Array.from([1]) } });
    expect(Object.keys(readHeader(out).json)).toEqual(['x']);
  });

  it('a view (subarray) is encoded with its own bytes only', () => {
    const base = Float64Array.from([9, 1, 2, 3, 9]);
    const out = encodeSafetensors({ x: { shape: [3], data: base.subarray(1, 4) } });
    const { json, dataStart } = readHeader(out);
    expect(json.x).toEqual({ dtype: 'F64', shape: [3], data_offsets: [0, 24] });
    expect(Array.from(out.subarray(dataStart))).toEqual(Array.from(leBytes('F64', [1, 2, 3])));
  });

  it('property: the data start is 8-byte aligned whatever the header length (multi-byte names included)', () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ minLength: 1, maxLength: 12, unit: 'grapheme' }), fc.nat({ max: 5 }), {
          maxKeys: 4,
        }),
        fc.dictionary(fc.string({ maxLength: 8, unit: 'grapheme' }), fc.string({ maxLength: 12 }), {
          maxKeys: 3,
        }),
        (sizes, metadata) => {
          const tensors: Record<string, { shape: number[]; data: Float32Array | Float64Array }> = {};
          for (const [name, n] of Object.entries(sizes)) {
            if (name === '__metadata__' || name === '__proto__') continue;
            const data = n % 2 ? new Float32Array(n + 1) : new Float64Array(n + 1);
            data.forEach((_, i) => {
              data[i] = i - n / 3;
            });
            tensors[name] = { shape: [n + 1], data };
          }
          const clean = Object.fromEntries(Object.entries(metadata).filter(([k]) => k !== '__proto__'));
          const out = encodeSafetensors(tensors, clean);
          expect(readHeader(out).dataStart % 8).toBe(0);
          const file = decodeSafetensors(out, false);
          for (const [name, t] of Object.entries(tensors))
            expectSame(file.tensors[name]!.data, Array.from(t.data));
          expect(file.metadata).toEqual(clean);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe('decodeSafetensors: malformed bodies throw SafetensorsError naming the part at fault', () => {
  it('a body shorter than 8 bytes', () => {
    for (const n of [0, 1, 7]) expectRejected(new Uint8Array(n), 'header', /8/);
  });

  it('a header length larger than the body', () => {
    const text = JSON.stringify({ x: entry('F32', [1], [0, 4]) });
    const bytes = new TextEncoder().encode(text).length;
    expectRejected(assemble(text, leBytes('F32', [1]), BigInt(bytes + 4 + 1)), 'header', /exceeds/);
    expectRejected(assemble(text, new Uint8Array(0), BigInt(bytes + 1)), 'header');
    expectRejected(assemble(text, new Uint8Array(0), 2n ** 64n - 1n), 'header');
    expectRejected(assemble(text, new Uint8Array(0), 2n ** 53n + 1n), 'header');
    // Exactly the rest of the body is fine.
    expect(() => decodeSafetensors(assemble('{}', new Uint8Array(0)), false)).not.toThrow();
  });

  it('a header that is not JSON (or not UTF-8)', () => {
    expectRejected(withHeader('{"x": '), 'header');
    expectRejected(withHeader(''), 'header');
    expectRejected(withHeader("{'x': 1}"), 'header');
    const bad = assemble('{}  ', new Uint8Array(0));
    bad[9] = 0xff;
    expectRejected(bad, 'header');
  });

  it('a header length that cuts the JSON short', () => {
    const text = JSON.stringify({ x: entry('F32', [1], [0, 4]) });
    expectRejected(assemble(text, leBytes('F32', [1]), BigInt(text.length - 1)), 'header');
  });

  it('a header that is not an object', () => {
    for (const text of ['[]', '[{"dtype": "F32"}]', '"x"', 'null', '42', 'true']) {
      expectRejected(withHeader(text), 'header', /object/);
    }
  });

  it('a tensor entry that is not an object', () => {
    for (const info of [5, 'F32', null, [], ['F32', [1], [0, 4]]])
      expectRejected(withHeader({ x: info }), 'x');
    expectRejected(withHeader({ x: entry('F32', [1], [0, 4]), gamma: true }), 'gamma');
  });

  it('an unknown or missing dtype', () => {
    for (const dtype of ['F16', 'BF16', 'I64', 'I32', 'U8', 'BOOL', 'f32', 'float32', 'F8_E4M3', 4, null]) {
      expectRejected(withHeader({ x: entry(dtype, [1], [0, 4]) }), 'x', /dtype/);
    }
    expectRejected(withHeader({ x: { shape: [1], data_offsets: [0, 4] } }), 'x', /dtype/);
  });

  it('a shape that is not an array of non-negative integers', () => {
    for (const shape of ['3', 3, null, { 0: 1 }, [-1], [2, -3], [1.5], ['2'], [null], [Number.MAX_VALUE]]) {
      expectRejected(withHeader({ w: entry('F32', shape, [0, 4]) }), 'w', /shape/);
    }
    expectRejected(withHeader({ w: { dtype: 'F32', data_offsets: [0, 4] } }), 'w', /shape/);
  });

  it('data_offsets of the wrong length, reversed, negative, fractional or missing', () => {
    for (const offsets of [[], [0], [0, 4, 8], [8, 4], [-4, 0], [0, -4], [0, 4.5], ['0', '4'], '0,4', null]) {
      expectRejected(withHeader({ beta: entry('F32', [1], offsets) }), 'beta', /data_offsets/);
    }
    expectRejected(withHeader({ beta: { dtype: 'F32', shape: [1] } }), 'beta', /data_offsets/);
  });

  it('data_offsets past the end of the data (a truncated body)', () => {
    expectRejected(withHeader({ x: entry('F32', [5], [0, 20]) }, 16), 'x', /past/);
    expectRejected(withHeader({ x: entry('F32', [1], [16, 20]) }, 16), 'x', /past/);
    const { body } = pack({
      a: { dtype: 'F32', shape: [1], values: [1] },
      dy: { dtype: 'F64', shape: [4], values: [1, 2, 3, 4] },
    });
    expectRejected(body.subarray(0, body.length - 1), 'dy', /past/);
  });

  it('a shape × dtype size that differs from the offsets length', () => {
    expectRejected(withHeader({ x: entry('F32', [3], [0, 8]) }), 'x', /needs 12 bytes/);
    expectRejected(withHeader({ x: entry('F64', [2], [0, 8]) }), 'x', /needs 16 bytes/);
    expectRejected(withHeader({ x: entry('F32', [2, 2], [0, 8]) }), 'x');
    expectRejected(withHeader({ x: entry('F32', [0], [0, 4]) }), 'x');
    expectRejected(withHeader({ x: entry('F32', [2 ** 30, 2 ** 30, 2 ** 30], [0, 8]) }), 'x');
  });

  it('overlapping tensors name one of the two', () => {
    const cases: [Record<string, unknown>, string[]][] = [
      [{ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [4, 12]) }, ['a', 'b']],
      [{ a: entry('F32', [2], [0, 8]), b: entry('F32', [2], [0, 8]) }, ['a', 'b']],
      [{ big: entry('F32', [4], [0, 16]), small: entry('F32', [1], [4, 8]) }, ['big', 'small']],
      [
        { a: entry('F32', [1], [0, 4]), b: entry('F32', [2], [8, 16]), c: entry('F32', [2], [4, 12]) },
        ['b', 'c'],
      ],
    ];
    for (const [header, names] of cases) {
      let caught: unknown;
      try {
        decodeSafetensors(withHeader(header, 16), false);
      } catch (err) {
        caught = err;
      }
      expect(caught, JSON.stringify(header)).toBeInstanceOf(SafetensorsError);
      expect(names).toContain((caught as SafetensorsError).path);
      expect((caught as SafetensorsError).message).toMatch(/overlap/);
    }
  });

  it('__metadata__ that is not an object of strings', () => {
    const x = entry('F32', [1], [0, 4]);
    expectRejected(withHeader({ __metadata__: { eps: 1e-5 }, x }), '__metadata__.eps', /string/);
    expectRejected(
      withHeader({ __metadata__: { op: 'layer_norm', training: true }, x }),
      '__metadata__.training',
    );
    expectRejected(withHeader({ __metadata__: { normalizedShape: [4] }, x }), '__metadata__.normalizedShape');
    expectRejected(withHeader({ __metadata__: { momentum: null }, x }), '__metadata__.momentum');
    for (const meta of ['eps=1e-5', ['1e-5'], null, 5]) {
      expectRejected(withHeader({ __metadata__: meta, x }), '__metadata__');
    }
  });

  it('a tensor named __proto__ is decoded as a tensor or rejected, never dropped silently', () => {
    const body = assemble(
      '{"__proto__": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}',
      leBytes('F32', [1]),
    );
    let file: ReturnType<typeof decodeSafetensors> | undefined;
    try {
      file = decodeSafetensors(body, false);
    } catch (err) {
      expect(err).toBeInstanceOf(SafetensorsError);
      return;
    }
    expect(Object.keys(file.tensors)).toEqual(['__proto__']);
  });

  it('property: random bytes after a valid length never throw anything but SafetensorsError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.nat({ max: 80 }), (tail, n) => {
        const body = new Uint8Array(8 + tail.length);
        new DataView(body.buffer).setUint32(0, n, true);
        body.set(tail, 8);
        try {
          decodeSafetensors(body, false);
        } catch (err) {
          expect(err).toBeInstanceOf(SafetensorsError);
        }
      }),
      { numRuns: 500 },
    );
  });

  it('property: a hostile header (any JSON) never throws anything but SafetensorsError', () => {
    fc.assert(
      fc.property(fc.jsonValue(), fc.nat({ max: 64 }), (header, dataBytes) => {
        try {
          decodeSafetensors(withHeader(header, dataBytes), false);
        } catch (err) {
          expect(err).toBeInstanceOf(SafetensorsError);
        }
      }),
      { numRuns: 500 },
    );
  });
});
