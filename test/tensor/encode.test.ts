import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeTensor } from '../../src/tensor/decode.js';
import { encodeResponse, encodeTensor, formatNumber } from '../../src/tensor/encode.js';

/** Significant digits of a JSON number literal (sign, point, exponent, leading and trailing zeros removed). */
function significantDigits(s: string): number {
  const mantissa = s.replace(/^-/, '').replace(/e.*$/i, '').replace('.', '');
  return Math.max(1, mantissa.replace(/^0+/, '').replace(/0+$/, '').length);
}

/** Independent reference: the fewest significant digits that round-trip to the same float32. */
function shortestFloat32Digits(v: number): number {
  for (let p = 1; p <= 9; p++) if (Math.fround(Number(v.toPrecision(p))) === v) return p;
  throw new Error(`no float32 round trip for ${v}`);
}

/** Equal as numbers, NaN included, but the sign of zero not required (see the −0 test). */
function sameValue(a: number, b: number): boolean {
  return Object.is(a, b) || (a === 0 && b === 0);
}

describe('formatNumber: float32', () => {
  it.each([
    [Math.fround(0.1), '0.1'],
    [Math.fround(1 / 3), '0.33333334'],
    [Math.fround(-2.5), '-2.5'],
    [Math.fround(16777217), '16777216'],
    [Math.fround(1e-7), '1e-7'],
    [Math.fround(3e20), '300000000000000000000'],
    [Math.fround(3.4028234663852886e38), '3.4028235e+38'],
    [Math.fround(1.17549435e-38), '1.1754944e-38'],
    [1, '1'],
    [0, '0'],
  ])('%s → %s', (v, text) => {
    expect(formatNumber(v, 'float32')).toBe(text);
  });

  it('float32 subnormals are written with their shortest digits too (1e-45, not 1.4013e-45)', () => {
    // The smallest float32 subnormal, 2^-149 ≈ 1.4013e-45: "1e-45" already rounds to it.
    expect(formatNumber(2 ** -149, 'float32')).toBe('1e-45');
    expect(formatNumber(3 * 2 ** -149, 'float32')).toBe('4e-45');
  });

  it('property: every float32 is written with the fewest digits that round-trip in float32', () => {
    fc.assert(
      fc.property(fc.float({ noNaN: true, noDefaultInfinity: true }), (v) => {
        const text = formatNumber(v, 'float32');
        const back = JSON.parse(text) as number;
        expect(typeof back).toBe('number');
        expect(sameValue(Math.fround(back), v), `${v} → ${text}`).toBe(true);
        expect(significantDigits(text), `${v} → ${text}`).toBe(shortestFloat32Digits(v));
      }),
      { numRuns: 2000 },
    );
  });

  it('property: normal float32 values (no subnormals) are written with the fewest digits', () => {
    const normal = fc
      .float({ noNaN: true, noDefaultInfinity: true, min: 2 ** -126 })
      .chain((v) => fc.constantFrom(v, -v));
    fc.assert(
      fc.property(normal, (v) => {
        const text = formatNumber(v, 'float32');
        expect(Math.fround(JSON.parse(text) as number), text).toBe(v);
        expect(significantDigits(text), `${v} → ${text}`).toBe(shortestFloat32Digits(v));
      }),
      { numRuns: 2000 },
    );
  });
});

describe('formatNumber: float64', () => {
  it.each([
    [0.1, '0.1'],
    [1 / 3, '0.3333333333333333'],
    [5e-324, '5e-324'],
    [Number.MAX_VALUE, '1.7976931348623157e+308'],
    [1e21, '1e+21'],
    [-123.5, '-123.5'],
  ])('%s → %s', (v, text) => {
    expect(formatNumber(v, 'float64')).toBe(text);
  });

  it('property: JSON.parse(formatNumber(x)) is x, bit for bit', () => {
    fc.assert(
      fc.property(fc.double({ noNaN: true, noDefaultInfinity: true }), (v) => {
        fc.pre(!Object.is(v, -0));
        expect(Object.is(JSON.parse(formatNumber(v, 'float64')), v)).toBe(true);
      }),
      { numRuns: 5000 },
    );
  });

  it('−0 is written as a zero; its sign is not part of the contract', () => {
    // Decided: the contract does not promise the sign of zero. Today −0 is written "0", as
    // JSON.stringify does, so it reads back as +0; "-0" (which JSON.parse reads as −0) is allowed too.
    for (const dtype of ['float64', 'float32'] as const) {
      expect(['0', '-0']).toContain(formatNumber(-0, dtype));
    }
  });
});

describe('formatNumber: non-finite values become strings', () => {
  it.each(['float64', 'float32'] as const)('%s', (dtype) => {
    expect(formatNumber(Number.NaN, dtype)).toBe('"NaN"');
    expect(formatNumber(Number.POSITIVE_INFINITY, dtype)).toBe('"Infinity"');
    expect(formatNumber(Number.NEGATIVE_INFINITY, dtype)).toBe('"-Infinity"');
  });
});

describe('encodeTensor', () => {
  const data = Float64Array.from([1, 2, 3, 4, 5, 6]);

  it('nested form mirrors the shape', () => {
    expect(encodeTensor([6], data, 'float64', 'nested')).toBe('[1,2,3,4,5,6]');
    expect(encodeTensor([2, 3], data, 'float64', 'nested')).toBe('[[1,2,3],[4,5,6]]');
    expect(encodeTensor([3, 2], data, 'float64', 'nested')).toBe('[[1,2],[3,4],[5,6]]');
    expect(encodeTensor([3, 1, 2], data, 'float64', 'nested')).toBe('[[[1,2]],[[3,4]],[[5,6]]]');
    expect(encodeTensor([1, 1, 1], Float64Array.of(5), 'float64', 'nested')).toBe('[[[5]]]');
  });

  it('flat form is {shape, data}', () => {
    expect(encodeTensor([2, 3], data, 'float64', 'flat')).toBe('{"shape":[2,3],"data":[1,2,3,4,5,6]}');
  });

  it('non-finite values are strings in both forms, never null', () => {
    const bad = Float64Array.from([Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 0]);
    const nested = encodeTensor([2, 2], bad, 'float64', 'nested');
    expect(nested).toBe('[["NaN","Infinity"],["-Infinity",0]]');
    expect(JSON.parse(encodeTensor([4], bad, 'float32', 'flat'))).toEqual({
      shape: [4],
      data: ['NaN', 'Infinity', '-Infinity', 0],
    });
    expect(nested).not.toMatch(/null/);
  });

  it('float32 data is written with short digits', () => {
    expect(encodeTensor([2], Float32Array.from([0.1, 0.2]), 'float32', 'nested')).toBe('[0.1,0.2]');
  });

  it('property: decodeTensor(JSON.parse(encodeTensor(t))) gives t back, in both forms', () => {
    const tensorArb = fc
      .array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 4 })
      .chain((shape) => {
        const n = shape.reduce((a, b) => a * b, 1);
        return fc.tuple(fc.constant(shape), fc.array(fc.double(), { minLength: n, maxLength: n }));
      });
    fc.assert(
      fc.property(
        tensorArb,
        fc.constantFrom('nested', 'flat') as fc.Arbitrary<'nested' | 'flat'>,
        ([shape, values], form) => {
          const text = encodeTensor(shape, Float64Array.from(values), 'float64', form);
          const r = decodeTensor(JSON.parse(text));
          if (!r.ok) throw new Error(JSON.stringify(r.issue));
          expect(r.tensor.shape).toEqual(shape);
          expect(r.tensor.form).toBe(form);
          values.forEach((v, i) => {
            expect(sameValue(r.tensor.data[i]!, v), `${v} at ${i}`).toBe(true);
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  it('property: float32 tensors round-trip to the same float32 values', () => {
    const arb = fc.array(fc.float(), { minLength: 1, maxLength: 20 });
    fc.assert(
      fc.property(arb, (values) => {
        const f32 = Float32Array.from(values);
        const r = decodeTensor(JSON.parse(encodeTensor([f32.length], f32, 'float32', 'flat')));
        if (!r.ok) throw new Error(JSON.stringify(r.issue));
        f32.forEach((v, i) => {
          expect(sameValue(Math.fround(r.tensor.data[i]!), v), `${v} at ${i}`).toBe(true);
        });
      }),
      { numRuns: 300 },
    );
  });
});

describe('encodeResponse', () => {
  it('writes tensors in the requested form and scalars as JSON', () => {
    const text = encodeResponse(
      {
        y: { kind: 'tensor', shape: [2, 1], data: Float64Array.from([0.5, Number.NaN]) },
        mean: { kind: 'tensor', shape: [1], data: Float64Array.from([-1]) },
        numBatchesTracked: { kind: 'scalar', value: 3 },
        note: { kind: 'scalar', value: 'a "quoted" \\ string' },
        none: { kind: 'scalar', value: null },
      },
      'float64',
      'nested',
    );
    expect(JSON.parse(text)).toEqual({
      y: [[0.5], ['NaN']],
      mean: [-1],
      numBatchesTracked: 3,
      note: 'a "quoted" \\ string',
      none: null,
    });
  });

  it('flat form and float32 digits', () => {
    const text = encodeResponse(
      { y: { kind: 'tensor', shape: [2], data: Float32Array.from([0.1, 1 / 3]) } },
      'float32',
      'flat',
    );
    expect(text).toBe('{"y":{"shape":[2],"data":[0.1,0.33333334]}}');
  });
});

describe('float32 shortest digits agree with the toPrecision definition', () => {
  /** The definition: the fewest significant digits (1…9) that read back as the same float32. */
  function reference(v: number): string {
    for (let p = 1; p <= 9; p++) {
      const s = Number(v.toPrecision(p));
      if (Math.fround(s) === v) return String(s);
    }
    throw new Error(`no round trip for ${v}`);
  }

  it('for any finite, non-zero float32 bit pattern', () => {
    const bits = new Uint32Array(1);
    const f32 = new Float32Array(bits.buffer);
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 32 - 1 }), (u) => {
        bits[0] = u;
        const v = f32[0]!;
        fc.pre(Number.isFinite(v) && v !== 0);
        expect(formatNumber(v, 'float32')).toBe(reference(v));
      }),
      { numRuns: 20_000 },
    );
  });
});
