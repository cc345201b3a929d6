import { describe, expect, it } from 'vitest';
import { SharedBuffers } from '../../src/workers/shared-buffers.js';
import { useApp } from '../helpers.js';
import { pack } from '../safetensors-bytes.js';

describe('SharedBuffers', () => {
  it('hands back a recycled buffer of the same MiB size class, and only within its byte budget', () => {
    const pool = new SharedBuffers(3 << 20);
    const a = pool.take(1_500_000);
    expect(a.byteLength).toBe(2 << 20);
    pool.give(a);
    expect(pool.bytesFree).toBe(2 << 20);
    expect(pool.take(2_000_000)).toBe(a);
    expect(pool.bytesFree).toBe(0);
    pool.give(a);
    // Two 2 MiB buffers would exceed the 3 MiB budget: the second is left to the collector.
    pool.give(new SharedArrayBuffer(2 << 20));
    expect(pool.bytesFree).toBe(2 << 20);
  });

  it('does not recycle small bodies', () => {
    const pool = new SharedBuffers(64 << 20);
    const small = pool.take(1000);
    expect(small.byteLength).toBe(1000);
    pool.give(small);
    expect(pool.bytesFree).toBe(0);
  });
});

/**
 * Bodies of a few MiB go through recycled memory: every request, however its
 * predecessors used the same memory, must get its own right answer. Each x is a
 * ramp with a different slope and offset per request, so per-channel means are
 * known by hand: channel c of request k has mean k + c.
 */
describe('recycled body memory never leaks one request into another', () => {
  const t = useApp({ workers: 2 });
  const N = 4096;
  const C = 128;

  function body(k: number, pass: 'forward' | 'backward') {
    const x = new Array<number>(N * C);
    for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) x[n * C + c] = k + c + (n % 2 === 0 ? 1 : -1);
    const tensors: Parameters<typeof pack>[0] = { x: { dtype: 'F32', shape: [N, C], values: x } };
    if (pass === 'backward') tensors.dy = { dtype: 'F32', shape: [N, C], values: x.map(() => 1) };
    return pack(tensors, { op: 'batch_norm', correction: '0' }).body;
  }

  it('sequential and concurrent requests of the same size class', async () => {
    for (let round = 0; round < 3; round++) {
      const ks = [1, 2, 3, 4, 5, 6].map((k) => k + round * 10);
      const replies = await Promise.all(
        ks.map((k) =>
          t.app.inject({
            method: 'POST',
            url: k % 2 === 0 ? '/backward' : '/forward',
            payload: body(k, k % 2 === 0 ? 'backward' : 'forward'),
            headers: { 'content-type': 'application/x-safetensors' },
          }),
        ),
      );
      replies.forEach((r, i) => {
        const k = ks[i]!;
        expect(r.statusCode, r.body.slice(0, 200)).toBe(200);
        const json = JSON.parse(r.body);
        if (k % 2 === 0) {
          // dy = 1 everywhere: dbeta = N per channel, dgamma = Σ x̂ = 0, dx = 0.
          expect(json.dbeta.data.every((v: number) => v === N)).toBe(true);
          expect(json.dx.data.every((v: number) => Math.abs(v) < 1e-6)).toBe(true);
        } else {
          // x = k + c ± 1: mean k + c, biased variance 1.
          expect(json.mean.data).toEqual(Array.from({ length: C }, (_, c) => k + c));
          expect(json.var.data).toEqual(new Array(C).fill(1));
        }
      });
    }
  });
});
