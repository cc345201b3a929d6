import { z } from 'zod';
import { type DecodedTensor, formatShape, sameShape } from '../tensor/tensor.js';
import { tensorSchema } from './tensor.js';

/** Fields every op shares, with their defaults and documentation. */
export const dtypeField = z
  .enum(['float64', 'float32'])
  .default('float64')
  .describe(
    'Element type of the computation and of the results. Statistics are accumulated in float64 either way.',
  );

export const epsField = (fallback: number, doc = 'Added to the variance inside the square root.') =>
  z.number().gt(0).default(fallback).describe(`${doc} Must be > 0. Default ${fallback}.`);

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

export const channelTensor = (what: string) => tensorSchema(`${what} Shape [C].`).optional();

type Ctx = z.core.$RefinementCtx;

/** Adds a 400 issue at `path` when tensor `t` is present and its shape differs from `expected`. */
export function expectShape(
  ctx: Ctx,
  path: string,
  t: DecodedTensor | undefined,
  expected: number[],
  why: string,
) {
  if (t && !sameShape(t.shape, expected)) {
    ctx.addIssue({
      code: 'custom',
      path: [path],
      message: `expected shape ${formatShape(expected)} (${why}), got ${formatShape(t.shape)}`,
    });
  }
}

/** Adds an issue when exactly one of two fields that go together was sent. */
export function expectPair(ctx: Ctx, body: Record<string, unknown>, a: string, b: string) {
  if ((body[a] === undefined) !== (body[b] === undefined)) {
    const missing = body[a] === undefined ? a : b;
    const sent = missing === a ? b : a;
    ctx.addIssue({ code: 'custom', path: [missing], message: `required when ${sent} is sent` });
  }
}
