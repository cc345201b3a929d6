import { z } from 'zod';
import { type DecodedTensor, formatShape, sameShape } from '../tensor/tensor.js';
import { tensorSchema } from './tensor.js';

/** Fields the ops share, with their defaults and documentation. */
export const dtypeField = z
  .enum(['float64', 'float32'])
  .default('float64')
  .describe(
    'Element type of the computation and of the results. Statistics are accumulated in float64 either way.',
  );

export const epsField = (fallback: number) =>
  z
    .number()
    .gt(0)
    .default(fallback)
    .describe(`Added to the variance inside the square root. Must be > 0. Default ${fallback}.`);

export const correctionField = (fallback: number) =>
  z
    .number()
    .int()
    .min(0)
    .default(fallback)
    .describe(
      `Variance divisor is m − correction (m = values per group). 1: Bessel-corrected (unbiased); 0: biased, as PyTorch normalizes. Default ${fallback}.`,
    );

export const trainingField = z
  .boolean()
  .default(true)
  .describe(
    'true: normalize with batch statistics; false: with the given runningMean and runningVar. Default true.',
  );

export const momentumField = z
  .number()
  .min(0)
  .max(1)
  .nullable()
  .default(0.1)
  .describe(
    "Running statistics' update factor f: new = (1 − f)·old + f·batch. null: cumulative average, f = 1/(numBatchesTracked + 1). Default 0.1.",
  );

export const numBatchesTrackedField = z
  .number()
  .int()
  .min(0)
  .default(0)
  .describe('Batches seen before this one; used when momentum is null, returned incremented. Default 0.');

export const normalizedShapeField = z
  .array(z.number().int().min(1))
  .min(1)
  .optional()
  .describe(
    "The trailing dims of x to normalize over; must be a suffix of x's shape. Default: x's last dim.",
  );

export const optionalTensor = (doc: string) => tensorSchema(doc).optional();

export const dyField = tensorSchema('Gradient of the loss with respect to y, same shape as x.');

export type Ctx = z.core.$RefinementCtx;

export function issue(ctx: Ctx, path: string, message: string) {
  ctx.addIssue({ code: 'custom', path: [path], message });
}

/** Adds a 400 issue at `path` when tensor `t` is present and its shape differs from `expected`. */
export function expectShape(
  ctx: Ctx,
  path: string,
  t: DecodedTensor | undefined,
  expected: number[],
  why: string,
) {
  if (t && !sameShape(t.shape, expected)) {
    issue(ctx, path, `expected shape ${formatShape(expected)} (${why}), got ${formatShape(t.shape)}`);
  }
}

/** Adds an issue when exactly one of two fields that go together was sent. */
export function expectPair(ctx: Ctx, body: Record<string, unknown>, a: string, b: string) {
  if ((body[a] === undefined) !== (body[b] === undefined)) {
    const missing = body[a] === undefined ? a : b;
    issue(ctx, missing, `required when ${missing === a ? b : a} is sent`);
  }
}

export function expectMinRank(ctx: Ctx, x: DecodedTensor, rank: number, layout: string): boolean {
  if (x.shape.length >= rank) return true;
  issue(ctx, 'x', `expected rank ≥ ${rank} (${layout}), got rank ${x.shape.length}`);
  return false;
}

/** m − correction must stay positive: the variance divides by it. */
export function expectDivisor(ctx: Ctx, m: number, correction: number, what: string) {
  if (m - correction <= 0) {
    issue(
      ctx,
      'correction',
      `m − correction must be > 0, where m = ${m} (${what}); got correction ${correction}`,
    );
  }
}
