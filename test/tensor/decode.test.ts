import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { type DecodeResult, decodeTensor } from '../../src/tensor/decode.js';
import { MAX_RANK } from '../../src/tensor/tensor.js';

function ok(r: DecodeResult) {
  if (!r.ok) throw new Error(`expected success, got ${JSON.stringify(r.issue)}`);
  return r.tensor;
}

function issue(r: DecodeResult) {
  if (r.ok) throw new Error(`expected failure, got shape ${JSON.stringify(r.tensor.shape)}`);
  return r.issue;
}

/** Builds a nested array of the given shape from row-major data. */
function nest(shape: readonly number[], data: readonly unknown[]): unknown {
  if (shape.length === 1) return [...data];
  const [n, ...rest] = shape;
  const step = data.length / n!;
  return Array.from({ length: n! }, (_, i) => nest(rest, data.slice(i * step, (i + 1) * step)));
}

describe('decodeTensor: nested arrays', () => {
  it('rank 1', () => {
    const t = ok(decodeTensor([1, 2.5, -3]));
    expect(t.shape).toEqual([3]);
    expect(t.data).toBeInstanceOf(Float64Array);
    expect(Array.from(t.data)).toEqual([1, 2.5, -3]);
    expect(t.form).toBe('nested');
  });

  it('rank 3 is read row-major', () => {
    const t = ok(
      decodeTensor([
        [
          [1, 2],
          [3, 4],
          [5, 6],
        ],
        [
          [7, 8],
          [9, 10],
          [11, 12],
        ],
      ]),
    );
    expect(t.shape).toEqual([2, 3, 2]);
    expect(Array.from(t.data)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  });

  it('dimensions of size 1', () => {
    const t = ok(decodeTensor([[[[7]]]]));
    expect(t.shape).toEqual([1, 1, 1, 1]);
    expect(Array.from(t.data)).toEqual([7]);
  });

  it('keeps the float64 value of every number exactly', () => {
    const values = [0.1, 1 / 3, 5e-324, Number.MAX_VALUE, -Number.MIN_VALUE, 2 ** 53 + 2];
    expect(Array.from(ok(decodeTensor(values)).data)).toEqual(values);
  });

  it('accepts "NaN", "Infinity", "-Infinity" as the non-finite values', () => {
    const t = ok(
      decodeTensor([
        ['NaN', 'Infinity'],
        ['-Infinity', 0],
      ]),
    );
    expect(t.data[0]).toBeNaN();
    expect(t.data[1]).toBe(Number.POSITIVE_INFINITY);
    expect(t.data[2]).toBe(Number.NEGATIVE_INFINITY);
    expect(t.data[3]).toBe(0);
  });

  it.each([
    ['a number string', '1.5'],
    ['lower-case nan', 'nan'],
    ['inf', 'inf'],
    ['+Infinity', '+Infinity'],
    ['padded', ' NaN'],
    ['empty string', ''],
    ['null', null],
    ['a boolean', true],
    ['an object', {}],
    ['a prototype key', 'constructor'],
  ])('rejects %s as an element, pointing at it', (_label, bad) => {
    const i = issue(
      decodeTensor([
        [1, 2],
        [3, bad],
      ]),
    );
    expect(i.path).toEqual([1, 1]);
    expect(i.message).toMatch(/number/);
    expect(i.message).toMatch(/"NaN", "Infinity", "-Infinity"/);
  });

  it('ragged: a short row is reported at that row', () => {
    const i = issue(decodeTensor([[1, 2], [3]]));
    expect(i.path).toEqual([1]);
    expect(i.message).toMatch(/ragged/);
    expect(i.message).toMatch(/expected 2 elements.*got 1/);
  });

  it('ragged: a long row deep inside is reported with its full path', () => {
    const x = [
      [
        [1, 2],
        [3, 4],
      ],
      [
        [5, 6],
        [7, 8, 9],
      ],
    ];
    const i = issue(decodeTensor(x));
    expect(i.path).toEqual([1, 1]);
    expect(i.message).toMatch(/ragged/);
  });

  it('ragged: a number where a row is expected', () => {
    const i = issue(decodeTensor([[1, 2], 3]));
    expect(i.path).toEqual([1]);
    expect(i.message).toMatch(/ragged/);
  });

  it('ragged: an array where a number is expected (too deep)', () => {
    const i = issue(
      decodeTensor([
        [1, 2],
        [3, [4]],
      ]),
    );
    expect(i.path).toEqual([1, 1]);
    expect(i.message).toMatch(/ragged.*too deep/);
    expect(issue(decodeTensor([1, [2]])).path).toEqual([1]);
  });

  it('ragged: a missing dimension in a later block', () => {
    const i = issue(
      decodeTensor([
        [
          [1, 2],
          [3, 4],
        ],
        [5, 6],
      ]),
    );
    expect(i.path).toEqual([1, 0]);
    expect(i.message).toMatch(/ragged/);
  });

  it('empty arrays are rejected, at any depth', () => {
    expect(issue(decodeTensor([])).message).toMatch(/empty/);
    const inner = issue(decodeTensor([[]]));
    expect(inner.path).toEqual([0]);
    expect(inner.message).toMatch(/empty/);
    // An empty row after a full one is ragged, at that row.
    expect(issue(decodeTensor([[1], []])).path).toEqual([1]);
  });

  it(`rank limit: ${MAX_RANK} dims decode, ${MAX_RANK + 1} are rejected`, () => {
    const deep = (rank: number): unknown => (rank === 0 ? 1 : [deep(rank - 1)]);
    expect(ok(decodeTensor(deep(MAX_RANK))).shape).toEqual(new Array(MAX_RANK).fill(1));
    expect(issue(decodeTensor(deep(MAX_RANK + 1))).message).toMatch(/rank/);
    // Far deeper input fails the same way without walking all of it.
    expect(issue(decodeTensor(deep(5000))).message).toMatch(/rank/);
  });

  it('element limit', () => {
    expect(ok(decodeTensor([1, 2, 3], { maxElements: 3 })).shape).toEqual([3]);
    expect(issue(decodeTensor([[1, 2, 3]], { maxElements: 2 })).message).toMatch(/3 elements.*limit of 2/);
  });
});

describe('decodeTensor: {shape, data}', () => {
  it('reads data row-major with the given shape', () => {
    const t = ok(decodeTensor({ shape: [2, 3], data: [1, 2, 3, 4, 5, 6] }));
    expect(t.shape).toEqual([2, 3]);
    expect(Array.from(t.data)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(t.form).toBe('flat');
  });

  it('is the same tensor as the nested form', () => {
    const nested = ok(
      decodeTensor([
        [[1], [2]],
        [[3], [4]],
      ]),
    );
    const flat = ok(decodeTensor({ shape: [2, 2, 1], data: [1, 2, 3, 4] }));
    expect(flat.shape).toEqual(nested.shape);
    expect(Array.from(flat.data)).toEqual(Array.from(nested.data));
  });

  it('accepts non-finite strings in data and rejects other strings, pointing at the element', () => {
    const t = ok(decodeTensor({ shape: [3], data: ['-Infinity', 'NaN', 'Infinity'] }));
    expect(t.data[0]).toBe(Number.NEGATIVE_INFINITY);
    expect(t.data[1]).toBeNaN();
    expect(t.data[2]).toBe(Number.POSITIVE_INFINITY);
    const i = issue(decodeTensor({ shape: [3], data: [1, 'Inf', 3] }));
    expect(i.path).toEqual(['data', 1]);
  });

  it('shape/data length mismatch names data and both sizes', () => {
    const i = issue(decodeTensor({ shape: [2, 2], data: [1, 2, 3] }));
    expect(i.path).toEqual(['data']);
    expect(i.message).toMatch(/3/);
    expect(i.message).toMatch(/\[2, 2\]/);
    expect(issue(decodeTensor({ shape: [1], data: [] })).path).toEqual(['data']);
    expect(issue(decodeTensor({ shape: [2], data: [1, 2, 3] })).path).toEqual(['data']);
  });

  it('data must be flat', () => {
    const i = issue(
      decodeTensor({
        shape: [2, 2],
        data: [
          [1, 2],
          [3, 4],
        ],
      }),
    );
    expect(i.path).toEqual(['data']);
  });

  it.each([
    [[0], ['shape', 0]],
    [
      [2, 0],
      ['shape', 1],
    ],
    [[-1], ['shape', 0]],
    [[1.5], ['shape', 0]],
    [['2'], ['shape', 0]],
    [[2 ** 53], ['shape', 0]],
    [[Number.NaN], ['shape', 0]],
  ])('rejects shape %j at %j', (shape, path) => {
    expect(issue(decodeTensor({ shape, data: [1] })).path).toEqual(path);
  });

  it('rejects an empty or missing shape, and a missing data', () => {
    expect(issue(decodeTensor({ shape: [], data: [1] })).path).toEqual(['shape']);
    expect(issue(decodeTensor({ data: [1] })).path).toEqual(['shape']);
    expect(issue(decodeTensor({ shape: 3, data: [1, 2, 3] })).path).toEqual(['shape']);
    expect(issue(decodeTensor({ shape: [1] })).path).toEqual(['data']);
  });

  it('rejects unknown keys, naming them', () => {
    const i = issue(decodeTensor({ shape: [1], data: [1], dtype: 'float32' }));
    expect(i.path).toEqual(['dtype']);
  });

  it(`rank limit: ${MAX_RANK} dims decode, ${MAX_RANK + 1} are rejected`, () => {
    expect(ok(decodeTensor({ shape: new Array(MAX_RANK).fill(1), data: [1] })).shape).toHaveLength(MAX_RANK);
    const i = issue(decodeTensor({ shape: new Array(MAX_RANK + 1).fill(1), data: [1] }));
    expect(i.path).toEqual(['shape']);
    expect(i.message).toMatch(/rank/);
  });

  it('a huge shape that its data does not fill is refused as a mismatch, before anything is allocated', () => {
    const i = issue(decodeTensor({ shape: [100000, 100000, 100000], data: [1] }));
    expect(i.path).toEqual(['data']);
    expect(i.message).toMatch(
      /does not match shape \[100000, 100000, 100000\] \(1000000000000000 elements\)/,
    );
  });

  it('a nested array whose first rows claim more than the element limit is refused before allocating', () => {
    const i = issue(decodeTensor([new Array(5).fill(0), [1]], { maxElements: 4 }));
    expect(i.path).toEqual([]);
    expect(i.message).toMatch(/limit of 4/);
  });

  it('a number literal beyond float64 (JSON 1e400 parses as Infinity) is refused: non-finite values are strings', () => {
    const i = issue(decodeTensor([1, Number.POSITIVE_INFINITY]));
    expect(i.path).toEqual([1]);
    expect(i.message).toMatch(/finite number/);
  });
});

describe('decodeTensor: not a tensor', () => {
  it.each([[5], ['x'], [null], [true]])('%j', (v) => {
    const i = issue(decodeTensor(v));
    expect(i.path).toEqual([]);
    expect(i.message).toMatch(/tensor/);
  });

  it('undefined is "required"', () => {
    expect(issue(decodeTensor(undefined))).toEqual({ path: [], message: 'required' });
  });
});

describe('decodeTensor: properties', () => {
  const shapeArb = fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 1, maxLength: 4 });
  const element = fc.oneof(
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.constantFrom('NaN', 'Infinity', '-Infinity'),
  );
  const toNumber = (v: number | string) =>
    v === 'NaN' ? Number.NaN : v === 'Infinity' ? Infinity : v === '-Infinity' ? -Infinity : (v as number);

  it('a rectangular nested array decodes to its shape and row-major data; {shape, data} agrees', () => {
    fc.assert(
      fc.property(
        shapeArb.chain((shape) =>
          fc.tuple(
            fc.constant(shape),
            fc.array(element, {
              minLength: shape.reduce((a, b) => a * b, 1),
              maxLength: shape.reduce((a, b) => a * b, 1),
            }),
          ),
        ),
        ([shape, data]) => {
          const expected = data.map(toNumber);
          const nested = ok(decodeTensor(nest(shape, data)));
          expect(nested.shape).toEqual(shape);
          expect(Array.from(nested.data)).toEqual(expected);
          const flat = ok(decodeTensor({ shape, data }));
          expect(Array.from(flat.data)).toEqual(expected);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('removing one element of any row makes it ragged, reported at that row', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 2, max: 4 }), { minLength: 2, maxLength: 4 }),
        fc.nat(),
        (shape, pick) => {
          const size = shape.reduce((a, b) => a * b, 1);
          const x = nest(
            shape,
            Array.from({ length: size }, (_, i) => i),
          ) as unknown[];
          // Walk to a random innermost row and drop its last element.
          const path: number[] = [];
          let node = x;
          let k = pick;
          for (let d = 0; d < shape.length - 1; d++) {
            const i = k % shape[d]!;
            k = Math.floor(k / shape[d]!);
            path.push(i);
            node = node[i] as unknown[];
          }
          node.pop();
          // The first row sets the expected length, so a short first row makes its sibling the odd one.
          const first = path.every((i) => i === 0);
          const i = issue(decodeTensor(x));
          expect(i.path).toEqual(first ? [...path.slice(0, -1), 1] : path);
          expect(i.message).toMatch(/ragged/);
        },
      ),
      { numRuns: 100 },
    );
  });
});
