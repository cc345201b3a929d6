import { describe, expect, it } from 'vitest';
import { channels, dense, expectClose, m2, mean, nest, seeded, sum, useApp, values } from '../helpers.js';

/**
 * POST /backward through app.inject, against hand-worked values and invariants.
 * Running example: x = [[1], [2], [3], [4]], mean 2.5, Σ(x − mean)² = 5.
 * The gradient check (gradcheck.test.ts) ties /backward to /forward numerically.
 */
const t = useApp({ workers: 2 });

const X = [[1], [2], [3], [4]];
const EPS = 1e-5;
const inv = (v: number, eps = EPS) => 1 / Math.sqrt(v + eps);

describe('POST /backward: hand-checkable values', () => {
  it('dy = ones: dbeta = m, dgamma = 0, dx = 0', async () => {
    const r = await t.post('/backward', { x: X, dy: [[1], [1], [1], [1]] });
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toMatch(/^application\/json/);
    expect(Object.keys(r.body).sort()).toEqual(['dbeta', 'dgamma', 'dx']);
    expectClose(values(r.body.dbeta), [4]);
    expectClose(values(r.body.dgamma), [0]);
    expectClose(values(r.body.dx), [0, 0, 0, 0]);
  });

  for (const [correction, v] of [
    [1, 5 / 3],
    [0, 1.25],
  ] as const) {
    it(`dy along x̂ (correction ${correction}): dx = invstd·dy·eps/(var + eps), the divisor m − correction matters`, async () => {
      // dy = 2(x − mean): dbeta = 0, dgamma = Σ dy·x̂ = 2·5·invstd,
      // dx = invstd·(dy − x̂·dgamma/(m − c)) = invstd·dy·(1 − (5/(m − c))·invstd²) = invstd·dy·eps/(var + eps).
      const dy = [-3, -1, 1, 3];
      const r = await t.post('/backward', { x: X, dy: dy.map((d) => [d]), correction });
      expect(r.status).toBe(200);
      expectClose(values(r.body.dbeta), [0]);
      expectClose(values(r.body.dgamma), [10 * inv(v)]);
      // The exact answer is ~1e-5 of dy: it comes from a cancellation, so compare at 1e-8 relative.
      expectClose(
        values(r.body.dx),
        dy.map((d) => (inv(v) * d * EPS) / (v + EPS)),
        1e-8,
        0,
      );
    });
  }

  it('dy = one-hot, gamma 2, correction 0 (the closed form worked by hand)', async () => {
    const is = inv(1.25);
    const xhat = [1, 2, 3, 4].map((x) => (x - 2.5) * is);
    const r = await t.post('/backward', { x: X, dy: [[1], [0], [0], [0]], gamma: [2], correction: 0 });
    expect(r.status).toBe(200);
    expectClose(values(r.body.dbeta), [1]);
    expectClose(values(r.body.dgamma), [xhat[0]!]);
    expectClose(
      values(r.body.dx),
      xhat.map((h, i) => 2 * is * ((i === 0 ? 1 : 0) - 1 / 4 - (h * xhat[0]!) / 4)),
    );
  });

  it('eval mode: dx = dy·gamma/sqrt(runningVar + eps), dgamma = Σ dy·x̂, dbeta = Σ dy', async () => {
    // invstd = 1/sqrt(3 + 1) = 0.5; dx = dy·2·0.5 = dy; dgamma = 0.5·Σ dy·(x − 1) = 0.5·(0 + 2 + 6 + 12) = 10.
    const r = await t.post('/backward', {
      x: X,
      dy: X,
      training: false,
      runningMean: [1],
      runningVar: [3],
      gamma: [2],
      eps: 1,
    });
    expect(r.status).toBe(200);
    expectClose(values(r.body.dx), [1, 2, 3, 4]);
    expectClose(values(r.body.dgamma), [10]);
    expectClose(values(r.body.dbeta), [10]);
  });

  it('eval mode ignores correction and works with one value per channel', async () => {
    const r = await t.post('/backward', {
      x: [[3, 5]],
      dy: [[2, -1]],
      training: false,
      runningMean: [1, 1],
      runningVar: [3, 15],
      eps: 1,
      correction: 1,
    });
    expect(r.status).toBe(200);
    expectClose(values(r.body.dx), [2 * 0.5, -1 * 0.25]);
    expectClose(values(r.body.dgamma), [2 * 2 * 0.5, -1 * 4 * 0.25]);
    expectClose(values(r.body.dbeta), [2, -1]);
  });
});

describe('POST /backward: saved statistics and gamma', () => {
  const rnd = seeded(11);
  const shape = [4, 3, 2];
  const x = Array.from({ length: 24 }, () => 3 * rnd() + 1);
  const dy = Array.from({ length: 24 }, () => rnd());
  const gamma = [0.5, -2, 1.5];

  for (const correction of [0, 1]) {
    it(`saved mean/invstd from /forward give the same answer as recomputing them (correction ${correction})`, async () => {
      const fwd = await t.post('/forward', { x: nest(shape, x), gamma, correction });
      expect(fwd.status).toBe(200);
      const base = { x: nest(shape, x), dy: nest(shape, dy), gamma, correction };
      const recomputed = await t.post('/backward', base);
      const saved = await t.post('/backward', { ...base, mean: fwd.body.mean, invstd: fwd.body.invstd });
      expect(saved.status).toBe(200);
      for (const key of ['dx', 'dgamma', 'dbeta']) {
        expectClose(values(saved.body[key]), values(recomputed.body[key]), 1e-14, 1e-15);
      }
    });
  }

  it('saved statistics are used, not ignored', async () => {
    const base = { x: X, dy: [[1], [0], [0], [0]] };
    const a = await t.post('/backward', base);
    const b = await t.post('/backward', { ...base, mean: [0], invstd: [1] });
    expect(b.status).toBe(200);
    // With mean 0 and invstd 1, x̂ = x, so dgamma = Σ dy·x = 1.
    expectClose(values(b.body.dgamma), [1]);
    expect(values(a.body.dgamma)).not.toEqual(values(b.body.dgamma));
  });

  it('dgamma is returned when gamma is omitted, and does not depend on gamma; dx scales with gamma', async () => {
    const base = { x: nest(shape, x), dy: nest(shape, dy) };
    const plain = await t.post('/backward', base);
    expect(plain.status).toBe(200);
    expect(Object.keys(plain.body).sort()).toEqual(['dbeta', 'dgamma', 'dx']);
    expect(dense(plain.body.dgamma).shape).toEqual([3]);
    const scaled = await t.post('/backward', { ...base, gamma: [5, 5, 5] });
    expectClose(values(scaled.body.dgamma), values(plain.body.dgamma));
    expectClose(values(scaled.body.dbeta), values(plain.body.dbeta));
    expectClose(
      values(scaled.body.dx),
      values(plain.body.dx).map((v) => 5 * v),
    );
  });
});

describe('POST /backward: forms and non-finite values', () => {
  it('flat x in, flat tensors out; nested x in, nested out', async () => {
    const flat = await t.post('/backward', {
      x: { shape: [4, 1], data: [1, 2, 3, 4] },
      dy: [[1], [1], [1], [1]],
    });
    expect(flat.status).toBe(200);
    expect(flat.body.dx.shape).toEqual([4, 1]);
    expect(flat.body.dbeta).toEqual({ shape: [1], data: [4] });
    expect(Object.keys(flat.body.dgamma).sort()).toEqual(['data', 'shape']);
    const nested = await t.post('/backward', {
      x: X,
      dy: { shape: [4, 1], data: [1, 1, 1, 1] },
    });
    expect(nested.body.dbeta).toEqual([4]);
    expect(dense(nested.body.dx)).toMatchObject({ shape: [4, 1], form: 'nested' });
  });

  it('a NaN in dy makes its channel NaN, written "NaN"; the other channel is untouched', async () => {
    const r = await t.post('/backward', {
      x: [
        [1, 1],
        [2, 2],
        [3, 3],
        [4, 4],
      ],
      dy: [
        [1, 1],
        ['NaN', 1],
        [1, 1],
        [1, 1],
      ],
    });
    expect(r.status).toBe(200);
    expect(r.text).not.toContain('null');
    for (let n = 0; n < 4; n++) expect(r.body.dx[n][0]).toBe('NaN');
    expect(r.body.dgamma[0]).toBe('NaN');
    expect(r.body.dbeta[0]).toBe('NaN');
    expectClose(channels([4, 2], values(r.body.dx))[1]!, [0, 0, 0, 0]);
    expect(values(r.body.dbeta)[1]).toBe(4);
  });

  it('"Infinity" in dy comes back as a non-finite string', async () => {
    const r = await t.post('/backward', {
      x: X,
      dy: [[1], [1], [1], [1]],
      training: false,
      runningMean: [0],
      runningVar: [1],
      gamma: ['-Infinity'],
    });
    expect(r.status).toBe(200);
    expect(r.body.dx).toEqual([['-Infinity'], ['-Infinity'], ['-Infinity'], ['-Infinity']]);
    expect(r.text).not.toContain('null');
  });
});

describe('POST /backward: dtype float32', () => {
  it('eval mode: dx = dy·gamma·invstd rounded to float32', async () => {
    const g = Math.fround(0.1);
    const is = 1 / Math.sqrt(3 + EPS);
    const dy = [1, -2, 3, 0.5];
    const r = await t.post('/backward', {
      x: X,
      dy: dy.map((d) => [d]),
      training: false,
      runningMean: [0],
      runningVar: [3],
      gamma: [0.1],
      dtype: 'float32',
    });
    expect(r.status).toBe(200);
    values(r.body.dx).forEach((v, i) => {
      expect(Math.fround(v), `dx[${i}] = ${v}`).toBe(Math.fround(dy[i]! * (g * is)));
    });
    expect(Math.fround(values(r.body.dbeta)[0]!)).toBe(2.5);
    expect(Math.fround(values(r.body.dgamma)[0]!)).toBe(Math.fround((1 * 1 - 2 * 2 + 3 * 3 + 0.5 * 4) * is));
  });
});

describe('POST /backward: ranks 2 to 5 (invariants)', () => {
  const shapes = [
    [5, 2],
    [3, 2, 4],
    [2, 3, 2, 2],
    [2, 2, 2, 2, 3],
  ];
  for (const shape of shapes) {
    for (const correction of [0, 1]) {
      it(`x of shape [${shape.join(', ')}], correction ${correction}`, async () => {
        const rnd = seeded(100 + shape.length * 10 + correction);
        const size = shape.reduce((a, b) => a * b, 1);
        const C = shape[1]!;
        const m = size / C;
        const x = Array.from({ length: size }, () => 2 * rnd() + 0.5);
        const dy = Array.from({ length: size }, () => rnd());
        const gamma = Array.from({ length: C }, () => 1 + rnd());
        const r = await t.post('/backward', { x: nest(shape, x), dy: nest(shape, dy), gamma, correction });
        expect(r.status).toBe(200);
        const dx = dense(r.body.dx);
        expect(dx.shape).toEqual(shape);
        const xc = channels(shape, x);
        const dyc = channels(shape, dy);
        const dxc = channels(shape, dx.data);
        const dgamma = values(r.body.dgamma);
        const dbeta = values(r.body.dbeta);
        for (let c = 0; c < C; c++) {
          const v = m2(xc[c]!) / (m - correction);
          const is = 1 / Math.sqrt(v + EPS);
          const xhat = xc[c]!.map((u) => (u - mean(xc[c]!)) * is);
          expectClose([dbeta[c]!], [sum(dyc[c]!)]);
          expectClose([dgamma[c]!], [sum(dyc[c]!.map((g, i) => g * xhat[i]!))], 1e-12, 1e-12);
          // Shifting x along a channel does not change y: Σ dx = 0.
          expectClose([sum(dxc[c]!)], [0], 0, 1e-12);
          // Scaling x: Σ dx·x̂ = gamma·invstd·dgamma·eps/(var + eps).
          expectClose(
            [sum(dxc[c]!.map((g, i) => g * xhat[i]!))],
            [(gamma[c]! * is * dgamma[c]! * EPS) / (v + EPS)],
            1e-6,
            1e-12,
          );
        }
      });
    }
  }
});
