import { describe, expect, it } from 'vitest';
import { channels, dense, expectClose, m2, mean, nest, seeded, useApp, values } from '../helpers.js';

/**
 * POST /forward through app.inject. Expected numbers are worked by hand or are
 * invariants of batch normalization, never the service's own output.
 *
 * The running example: x = [[1], [2], [3], [4]] (N = 4, C = 1, m = 4):
 * mean 2.5, Σ(x − mean)² = 5, var = 5/3 (correction 1) or 1.25 (correction 0).
 */
const t = useApp({ workers: 2 });

const X = [[1], [2], [3], [4]];
const EPS = 1e-5;
const inv = (v: number, eps = EPS) => 1 / Math.sqrt(v + eps);
const yOf = (v: number, eps = EPS) => [1, 2, 3, 4].map((x) => (x - 2.5) * inv(v, eps));

describe('POST /forward: hand-checkable values', () => {
  it('defaults: correction 1 (Bessel), eps 1e-5, gamma ones, beta zeros, training', async () => {
    const r = await t.post('/forward', { x: X });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expect(Object.keys(r.body).sort()).toEqual(['invstd', 'mean', 'var', 'y']);
    expectClose(values(r.body.mean), [2.5]);
    expectClose(values(r.body.var), [5 / 3]);
    expectClose(values(r.body.invstd), [inv(5 / 3)]);
    expectClose(values(r.body.y), yOf(5 / 3));
    // eps really is 1e-5: without it invstd would differ by ~3e-6 relative.
    expect(Math.abs(values(r.body.invstd)[0]! - inv(5 / 3, 0))).toBeGreaterThan(1e-7);
  });

  it('omitting every optional field equals sending the documented defaults', async () => {
    const implicit = await t.post('/forward', { x: X });
    const explicit = await t.post('/forward', {
      op: 'batch_norm',
      x: X,
      gamma: [1],
      beta: [0],
      eps: 1e-5,
      correction: 1,
      training: true,
      momentum: 0.1,
      numBatchesTracked: 0,
      dtype: 'float64',
    });
    expect(explicit.status).toBe(200);
    expect(explicit.body).toEqual(implicit.body);
  });

  it('correction 0 divides by m: var 1.25', async () => {
    const r = await t.post('/forward', { x: X, correction: 0 });
    expect(r.status).toBe(200);
    expectClose(values(r.body.var), [1.25]);
    expectClose(values(r.body.invstd), [inv(1.25)]);
    expectClose(values(r.body.y), yOf(1.25));
  });

  it('eps goes inside the square root: eps 1 gives invstd = 1/sqrt(5/3 + 1)', async () => {
    const r = await t.post('/forward', { x: X, eps: 1 });
    expectClose(values(r.body.invstd), [Math.sqrt(3 / 8)]);
    expectClose(
      values(r.body.y),
      [-1.5, -0.5, 0.5, 1.5].map((d) => d * Math.sqrt(3 / 8)),
    );
  });

  it('gamma and beta apply per channel (C = 2)', async () => {
    const x = [
      [1, 10],
      [2, 20],
      [3, 30],
      [4, 40],
    ];
    const r = await t.post('/forward', { x, gamma: [2, -1], beta: [0.5, 3] });
    expect(r.status).toBe(200);
    expectClose(values(r.body.mean), [2.5, 25]);
    expectClose(values(r.body.var), [5 / 3, 500 / 3]);
    const i0 = inv(5 / 3);
    const i1 = inv(500 / 3);
    const expected = [1, 2, 3, 4].flatMap((k) => [2 * (k - 2.5) * i0 + 0.5, -1 * (10 * k - 25) * i1 + 3]);
    expectClose(values(r.body.y), expected);
  });

  it('a constant channel has var 0 and y = beta exactly', async () => {
    const r = await t.post('/forward', { x: [[7], [7], [7]], beta: [0.25], gamma: [3] });
    expect(r.status).toBe(200);
    expect(values(r.body.var)).toEqual([0]);
    expectClose(values(r.body.invstd), [1 / Math.sqrt(EPS)]);
    expect(values(r.body.y)).toEqual([0.25, 0.25, 0.25]);
  });

  it('stays accurate far from zero (1e9 + small values)', async () => {
    const r = await t.post('/forward', { x: [[1e9 + 1], [1e9 + 2], [1e9 + 3], [1e9 + 4]] });
    expectClose(values(r.body.mean), [1e9 + 2.5]);
    expectClose(values(r.body.var), [5 / 3], 1e-9);
    expectClose(values(r.body.y), yOf(5 / 3), 1e-8);
  });
});

describe('POST /forward: tensor forms are mirrored', () => {
  it('nested x in, nested tensors out', async () => {
    const r = await t.post('/forward', { x: X, runningMean: [0], runningVar: [1] });
    for (const key of ['y', 'mean', 'var', 'invstd', 'runningMean', 'runningVar']) {
      expect(Array.isArray(r.body[key]), key).toBe(true);
    }
    expect(dense(r.body.y).shape).toEqual([4, 1]);
    expect(r.body.mean).toEqual([2.5]);
  });

  it('{shape, data} x in, {shape, data} tensors out, whatever form the other tensors used', async () => {
    const r = await t.post('/forward', {
      x: { shape: [4, 1], data: [1, 2, 3, 4] },
      gamma: [1],
      beta: { shape: [1], data: [0] },
      runningMean: [0],
      runningVar: { shape: [1], data: [1] },
    });
    expect(r.status).toBe(200);
    for (const key of ['y', 'mean', 'var', 'invstd', 'runningMean', 'runningVar']) {
      expect(Object.keys(r.body[key]).sort(), key).toEqual(['data', 'shape']);
    }
    expect(r.body.y.shape).toEqual([4, 1]);
    expect(r.body.mean).toEqual({ shape: [1], data: [2.5] });
    expectClose(r.body.y.data, yOf(5 / 3));
    expectClose(r.body.var.data, [5 / 3]);
  });

  it('nested and flat spellings of the same x give the same numbers', async () => {
    const rnd = seeded(7);
    const shape = [3, 2, 2];
    const data = Array.from({ length: 12 }, () => rnd() * 5);
    const a = await t.post('/forward', { x: nest(shape, data) });
    const b = await t.post('/forward', { x: { shape, data } });
    expect(dense(a.body.y).shape).toEqual(shape);
    expect(dense(a.body.y).form).toBe('nested');
    expect(dense(b.body.y).form).toBe('flat');
    expect(values(a.body.y)).toEqual(values(b.body.y));
  });
});

describe('POST /forward: non-finite values travel as strings', () => {
  it('a NaN in x makes its channel NaN, written "NaN" (never null); other channels are untouched', async () => {
    const x = [
      [1, 1],
      ['NaN', 2],
      [3, 3],
      [4, 4],
    ];
    const r = await t.post('/forward', { x });
    expect(r.status).toBe(200);
    expect(r.text).not.toContain('null');
    const y = dense(r.body.y);
    for (let n = 0; n < 4; n++) {
      expect(r.body.y[n][0]).toBe('NaN');
      expect(y.data[2 * n + 1]).not.toBeNaN();
    }
    expect(r.body.mean[0]).toBe('NaN');
    expect(r.body.var[0]).toBe('NaN');
    expect(r.body.invstd[0]).toBe('NaN');
    // Channel 1 is 1, 2, 3, 4: the hand example.
    expectClose(
      channels([4, 2], y.data)[1]!,
      [1, 2, 3, 4].map((v) => (v - 2.5) * inv(5 / 3)),
    );
  });

  it('"Infinity" and "-Infinity" in, "Infinity" and "-Infinity" out', async () => {
    const x = [
      [1, 1],
      [2, 2],
      [3, 3],
      [4, 4],
    ];
    const r = await t.post('/forward', { x, gamma: ['Infinity', 1], beta: [0, '-Infinity'] });
    expect(r.status).toBe(200);
    expect(r.text).not.toContain('null');
    expect(r.body.y).toEqual([
      ['-Infinity', '-Infinity'],
      ['-Infinity', '-Infinity'],
      ['Infinity', '-Infinity'],
      ['Infinity', '-Infinity'],
    ]);
  });

  it('non-finite strings work in the flat form too', async () => {
    const r = await t.post('/forward', { x: { shape: [3, 1], data: [1, 'Infinity', 3] } });
    expect(r.status).toBe(200);
    expect(r.body.y).toEqual({ shape: [3, 1], data: ['NaN', 'NaN', 'NaN'] });
    expect(r.body.var).toEqual({ shape: [1], data: ['NaN'] });
  });

  it('the mean of a channel holding one Infinity is Infinity (SPEC: mean_c = (1/m) Σ x)', async () => {
    const r = await t.post('/forward', { x: [[1], ['Infinity'], [3]] });
    expect(r.status).toBe(200);
    expect(r.body.mean).toEqual(['Infinity']);
    expect(r.body.y).toEqual([['NaN'], ['NaN'], ['NaN']]);
  });
});

describe('POST /forward: dtype float32', () => {
  /** The float32 a client reading the number as float32 gets; it must be the expected float32. */
  const expectFloat32 = (actual: number[], expected64: number[]) => {
    expect(actual.length).toBe(expected64.length);
    actual.forEach((v, i) => {
      expect(Math.fround(v), `element ${i}: ${v}`).toBe(Math.fround(expected64[i]!));
    });
  };
  /** Significant digits of a number as written in JSON: float32 needs at most 9. */
  const digits = (s: string) =>
    s.replace(/^-/, '').replace(/e.*$/, '').replace('.', '').replace(/^0+/, '').length;

  it('results are the float32 values (computation in float32, statistics accumulated in float64)', async () => {
    const r = await t.post('/forward', { x: X, gamma: [0.1], beta: [0.2], dtype: 'float32' });
    expect(r.status).toBe(200);
    const g = Math.fround(0.1);
    const b = Math.fround(0.2);
    const scale = inv(5 / 3) * g;
    expectFloat32(
      values(r.body.y),
      [1, 2, 3, 4].map((x) => (x - 2.5) * scale + b),
    );
    expectFloat32(values(r.body.mean), [2.5]);
    expectFloat32(values(r.body.var), [5 / 3]);
    expectFloat32(values(r.body.invstd), [inv(5 / 3)]);
    const numbers = r.text.match(/-?\d[\d.]*(e[-+]?\d+)?/g) ?? [];
    for (const s of numbers) expect(digits(s), s).toBeLessThanOrEqual(9);
  });

  it('float32 and float64 answers differ (the dtype is really applied)', async () => {
    const a = await t.post('/forward', { x: X, dtype: 'float32' });
    const b = await t.post('/forward', { x: X, dtype: 'float64' });
    expect(values(a.body.var)[0]).not.toBe(values(b.body.var)[0]);
    expect(Math.fround(values(a.body.var)[0]!)).toBe(Math.fround(values(b.body.var)[0]!));
  });

  it('inputs are rounded to float32 once: 1 + 2^-30 is 1 in float32', async () => {
    const tiny = 2 ** -30;
    const r = await t.post('/forward', { x: [[1 + tiny], [1]], dtype: 'float32', correction: 0 });
    expect(values(r.body.var)).toEqual([0]);
    const r64 = await t.post('/forward', { x: [[1 + tiny], [1]], correction: 0 });
    expect(values(r64.body.var)[0]).toBeGreaterThan(0);
  });

  it('running statistics come back as float32 too', async () => {
    const r = await t.post('/forward', {
      x: { shape: [4, 1], data: [1, 2, 3, 4] },
      runningMean: [0.3],
      runningVar: [0.7],
      dtype: 'float32',
    });
    expect(r.status).toBe(200);
    expectFloat32(r.body.runningMean.data, [0.9 * Math.fround(0.3) + 0.1 * 2.5]);
    expectFloat32(r.body.runningVar.data, [0.9 * Math.fround(0.7) + 0.1 * (5 / 3)]);
    expect(r.body.numBatchesTracked).toBe(1);
  });
});

describe('POST /forward: eval mode (training false)', () => {
  it('uses runningMean/runningVar and answers {y} only', async () => {
    // invstd = 1/sqrt(3 + 1) = 0.5, y = 2·(x − 1)·0.5 + 0.5 = x − 0.5
    const r = await t.post('/forward', {
      x: X,
      training: false,
      runningMean: [1],
      runningVar: [3],
      gamma: [2],
      beta: [0.5],
      eps: 1,
    });
    expect(r.status).toBe(200);
    expect(Object.keys(r.body)).toEqual(['y']);
    expectClose(values(r.body.y), [0.5, 1.5, 2.5, 3.5]);
  });

  it('needs no batch statistics: one value per channel is fine, whatever correction', async () => {
    const r = await t.post('/forward', {
      x: [[5, 6]],
      training: false,
      runningMean: [1, 2],
      runningVar: [3, 0],
      eps: 1,
      correction: 1,
    });
    expect(r.status).toBe(200);
    expectClose(values(r.body.y), [2, 4]);
  });

  it('does not update or return running statistics', async () => {
    const r = await t.post('/forward', {
      x: X,
      training: false,
      runningMean: [0],
      runningVar: [1],
      momentum: 0.5,
      numBatchesTracked: 3,
    });
    expect(Object.keys(r.body)).toEqual(['y']);
    expectClose(
      values(r.body.y),
      [1, 2, 3, 4].map((v) => v * inv(1)),
    );
  });
});

describe('POST /forward: running statistics', () => {
  it('momentum 0.1 by default; runningVar uses the unbiased variance; numBatchesTracked increments', async () => {
    const r = await t.post('/forward', { x: X, runningMean: [0.5], runningVar: [2] });
    expect(r.status).toBe(200);
    expect(Object.keys(r.body).sort()).toEqual([
      'invstd',
      'mean',
      'numBatchesTracked',
      'runningMean',
      'runningVar',
      'var',
      'y',
    ]);
    expectClose(values(r.body.runningMean), [0.9 * 0.5 + 0.1 * 2.5]);
    expectClose(values(r.body.runningVar), [0.9 * 2 + 0.1 * (5 / 3)]);
    expect(r.body.numBatchesTracked).toBe(1);
  });

  it('with correction 0 the batch var is biased (1.25) but runningVar still uses 5/3', async () => {
    const r = await t.post('/forward', { x: X, correction: 0, runningMean: [0.5], runningVar: [2] });
    expectClose(values(r.body.var), [1.25]);
    expectClose(values(r.body.runningVar), [0.9 * 2 + 0.1 * (5 / 3)]);
  });

  it('explicit momentum and numBatchesTracked', async () => {
    const r = await t.post('/forward', {
      x: X,
      runningMean: [0.5],
      runningVar: [2],
      momentum: 0.5,
      numBatchesTracked: 7,
    });
    expectClose(values(r.body.runningMean), [1.5]);
    expectClose(values(r.body.runningVar), [0.5 * 2 + 0.5 * (5 / 3)]);
    expect(r.body.numBatchesTracked).toBe(8);
  });

  it('momentum 0 leaves the running statistics unchanged', async () => {
    const r = await t.post('/forward', { x: X, runningMean: [0.5], runningVar: [2], momentum: 0 });
    expect(values(r.body.runningMean)).toEqual([0.5]);
    expect(values(r.body.runningVar)).toEqual([2]);
    expect(r.body.numBatchesTracked).toBe(1);
  });

  it('momentum null: factor 1/(numBatchesTracked + 1)', async () => {
    const r = await t.post('/forward', {
      x: X,
      runningMean: [0.5],
      runningVar: [2],
      momentum: null,
      numBatchesTracked: 3,
    });
    expectClose(values(r.body.runningMean), [0.75 * 0.5 + 0.25 * 2.5]);
    expectClose(values(r.body.runningVar), [0.75 * 2 + 0.25 * (5 / 3)]);
    expect(r.body.numBatchesTracked).toBe(4);
  });

  it('momentum null from numBatchesTracked 0 replaces the statistics by the batch ones', async () => {
    const r = await t.post('/forward', { x: X, runningMean: [100], runningVar: [100], momentum: null });
    expectClose(values(r.body.runningMean), [2.5]);
    expectClose(values(r.body.runningVar), [5 / 3]);
    expect(r.body.numBatchesTracked).toBe(1);
  });

  it('momentum null over several batches is the cumulative average of the batch statistics', async () => {
    const batches = [
      [[1], [2], [3], [4]],
      [[10], [20], [30], [40]],
      [[-1], [1], [-1], [1]],
    ];
    let runningMean: unknown = [0];
    let runningVar: unknown = [1];
    let numBatchesTracked = 0;
    for (const x of batches) {
      const r = await t.post('/forward', { x, runningMean, runningVar, momentum: null, numBatchesTracked });
      expect(r.status).toBe(200);
      ({ runningMean, runningVar, numBatchesTracked } = r.body);
    }
    expect(numBatchesTracked).toBe(3);
    expectClose(values(runningMean), [(2.5 + 25 + 0) / 3]);
    expectClose(values(runningVar), [(5 / 3 + 500 / 3 + 4 / 3) / 3]);
  });

  it('without running statistics none are returned', async () => {
    const r = await t.post('/forward', { x: X, momentum: 0.3, numBatchesTracked: 2 });
    expect(Object.keys(r.body).sort()).toEqual(['invstd', 'mean', 'var', 'y']);
  });
});

describe('POST /forward: ranks 2 to 5 (invariants)', () => {
  const shapes = [
    [6, 3],
    [4, 3, 5],
    [3, 2, 4, 3],
    [2, 3, 2, 3, 2],
  ];
  for (const shape of shapes) {
    for (const correction of [0, 1]) {
      it(`x of shape [${shape.join(', ')}], correction ${correction}`, async () => {
        const rnd = seeded(shape.length * 10 + correction);
        const size = shape.reduce((a, b) => a * b, 1);
        const C = shape[1]!;
        // Channels sit at different offsets and scales so a wrong channel axis shows.
        const inner = size / (shape[0]! * C);
        const data = Array.from({ length: size }, (_, i) => {
          const c = Math.floor(i / inner) % C;
          return 10 * c + (c + 1) * rnd();
        });
        const xc = channels(shape, data);
        const gamma = Array.from({ length: C }, () => 1 + rnd());
        const beta = Array.from({ length: C }, () => rnd());
        const r = await t.post('/forward', { x: nest(shape, data), gamma, beta, correction });
        expect(r.status).toBe(200);
        const y = dense(r.body.y);
        expect(y.shape).toEqual(shape);
        expect(y.form).toBe('nested');
        const m = size / C;
        const mu = values(r.body.mean);
        const vr = values(r.body.var);
        const is = values(r.body.invstd);
        const yc = channels(shape, y.data);
        for (let c = 0; c < C; c++) {
          const ch = xc[c]!;
          expectClose([mu[c]!], [mean(ch)]);
          const v = m2(ch) / (m - correction);
          expectClose([vr[c]!], [v]);
          expectClose([is[c]!], [1 / Math.sqrt(v + EPS)]);
          // Output mean is beta; output (biased) variance is gamma²·(m − c)/m·var/(var + eps).
          const out = yc[c]!;
          expectClose([mean(out)], [beta[c]!], 1e-12, 1e-12);
          const outVar = out.reduce((s, u) => s + (u - beta[c]!) ** 2, 0) / m;
          expectClose([outVar], [(gamma[c]! ** 2 * ((m - correction) / m) * v) / (v + EPS)], 1e-11);
          // And pointwise, the formula itself.
          expectClose(
            out,
            ch.map((u) => (gamma[c]! * (u - mean(ch))) / Math.sqrt(v + EPS) + beta[c]!),
            1e-11,
            1e-12,
          );
        }
      });
    }
  }
});

describe('POST /forward: concurrent requests', () => {
  it('each of many concurrent requests gets its own answer', async () => {
    const ks = Array.from({ length: 24 }, (_, i) => i + 1);
    const replies = await Promise.all(ks.map((k) => t.post('/forward', { x: X.map(([v]) => [k * v!]) })));
    replies.forEach((r, i) => {
      const k = ks[i]!;
      expect(r.status).toBe(200);
      expectClose(values(r.body.mean), [2.5 * k]);
      expectClose(values(r.body.var), [(5 / 3) * k * k]);
    });
  });
});
