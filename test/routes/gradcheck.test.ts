import { describe, expect, it } from 'vitest';
import { nest, seeded, useApp, values } from '../helpers.js';

/**
 * Finite-difference gradient check of /backward against /forward, both through
 * app.inject, in float64: with the loss L = Σ w·y, /backward with dy = w must
 * return dL/dx, dL/dgamma and dL/dbeta, which central differences of /forward
 * estimate independently of the closed form:
 *
 *   dL/dθ ≈ (L(θ + h) − L(θ − h)) / 2h,   error O(h²) + O(ε·|L|/h)
 */
const t = useApp({ workers: 2 });

const shape = [3, 2, 2];
const size = 12;
const C = 2;
const H = 1e-5;

const rnd = seeded(2024);
const x = Array.from({ length: size }, () => 2 * rnd() + 0.3);
const w = Array.from({ length: size }, () => rnd());
const gamma = [1.3, -0.7];
const beta = [0.2, -0.4];
const running = { runningMean: [0.5, -0.25], runningVar: [0.8, 1.7] };

type Params = { x: number[]; gamma: number[]; beta: number[] };

async function loss(p: Params, extra: Record<string, unknown>): Promise<number> {
  const r = await t.post('/forward', { x: nest(shape, p.x), gamma: p.gamma, beta: p.beta, ...extra });
  expect(r.status, r.text).toBe(200);
  const y = values(r.body.y);
  return y.reduce((s, v, i) => s + w[i]! * v, 0);
}

/** Central differences of the loss with respect to every element of p[name]. */
async function numeric(name: keyof Params, extra: Record<string, unknown>): Promise<number[]> {
  const base: Params = { x, gamma, beta };
  const shifted = (i: number, h: number): Params => {
    const arr = [...base[name]];
    arr[i] = arr[i]! + h;
    return { ...base, [name]: arr };
  };
  return Promise.all(
    base[name].map(async (_, i) => {
      const [up, down] = await Promise.all([loss(shifted(i, H), extra), loss(shifted(i, -H), extra)]);
      return (up - down) / (2 * H);
    }),
  );
}

function expectGradClose(analytic: number[], approx: number[], what: string) {
  expect(analytic.length).toBe(approx.length);
  analytic.forEach((a, i) => {
    const tol = 1e-6 * Math.max(1, Math.abs(a));
    if (!(Math.abs(a - approx[i]!) <= tol)) {
      expect.fail(`${what}[${i}]: backward ${a}, finite differences ${approx[i]} (±${tol})`);
    }
  });
}

const configs = [
  { training: true, correction: 0 },
  { training: true, correction: 1 },
  { training: false, correction: 0 },
  { training: false, correction: 1 },
];

describe('gradient check: /backward agrees with central differences of /forward (float64)', () => {
  for (const { training, correction } of configs) {
    const extra: Record<string, unknown> = training
      ? { correction }
      : { correction, training: false, ...running };
    describe(`training ${training}, correction ${correction}`, () => {
      it('dL/dx, dL/dgamma, dL/dbeta', async () => {
        const r = await t.post('/backward', {
          x: nest(shape, x),
          dy: nest(shape, w),
          gamma,
          ...extra,
        });
        expect(r.status, r.text).toBe(200);
        const [dx, dgamma, dbeta] = await Promise.all([
          numeric('x', extra),
          numeric('gamma', extra),
          numeric('beta', extra),
        ]);
        expectGradClose(values(r.body.dx), dx, 'dx');
        expectGradClose(values(r.body.dgamma), dgamma, 'dgamma');
        expectGradClose(values(r.body.dbeta), dbeta, 'dbeta');
        expect(values(r.body.dgamma)).toHaveLength(C);
      });
    });
  }

  it('the check has teeth: the correction-0 gradient fails against the correction-1 forward', async () => {
    const r = await t.post('/backward', { x: nest(shape, x), dy: nest(shape, w), gamma, correction: 0 });
    const approx = await numeric('x', { correction: 1 });
    const worst = Math.max(...values(r.body.dx).map((a, i) => Math.abs(a - approx[i]!)));
    expect(worst).toBeGreaterThan(1e-3);
  });
});
