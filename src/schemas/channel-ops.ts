import { z } from 'zod';
import { sizeOf } from '../tensor/tensor.js';
import {
  type Ctx,
  correctionField,
  dtypeField,
  dyField,
  epsField,
  expectDivisor,
  expectMinRank,
  expectPair,
  expectShape,
  issue,
  momentumField,
  numBatchesTrackedField,
  optionalTensor,
  trainingField,
} from './common.js';
import { tensorOut, tensorSchema } from './tensor.js';

/**
 * Request schemas of the ops over `[N, C, *spatial]` with a per-channel affine:
 * batch_norm, instance_norm and group_norm. Each is a strict object (a field of
 * another op is a 400) with its cross-field rules in one refinement.
 */
const affine = {
  gamma: optionalTensor('Scale (weight), shape [C]. Default: ones.'),
  beta: optionalTensor('Shift (bias), shape [C]. Default: zeros.'),
};

const running = {
  training: trainingField,
  runningMean: optionalTensor(
    'Running mean, shape [C]. Required when training is false; when sent with training true, updated and returned.',
  ),
  runningVar: optionalTensor(
    'Running variance (unbiased), shape [C]. Required when training is false; when sent with training true, updated and returned.',
  ),
  momentum: momentumField,
  numBatchesTracked: numBatchesTrackedField,
};

const saved = (shape: string) => ({
  mean: optionalTensor(`Saved mean from /forward, shape ${shape}. Default: recomputed from x.`),
  invstd: optionalTensor(
    `Saved invstd = 1/sqrt(var + eps) from /forward, shape ${shape}. Default: recomputed from x.`,
  ),
});

interface Rules {
  minRank: number;
  layout: string;
  /** values per group and what they are, for the m − correction rule */
  groupSize(shape: number[], body: Record<string, unknown>): { m: number; what: string };
  statsShape(shape: number[], body: Record<string, unknown>): number[];
  /** extra checks, after rank; returns false to stop */
  extra?(shape: number[], body: Record<string, unknown>, ctx: Ctx): boolean;
}

type Body = {
  x: { shape: number[] };
  correction: number;
  training?: boolean;
  [k: string]: unknown;
};

function check(rules: Rules, backward: boolean) {
  return (body: Body, ctx: Ctx) => {
    const { shape } = body.x;
    if (!expectMinRank(ctx, body.x as never, rules.minRank, rules.layout)) return;
    if (rules.extra && !rules.extra(shape, body, ctx)) return;
    const C = shape[1]!;
    const channel = [C];
    for (const name of ['gamma', 'beta', 'runningMean', 'runningVar']) {
      expectShape(ctx, name, body[name] as never, channel, `C = ${C}, x's dim 1`);
    }
    const hasRunning = 'training' in body;
    if (hasRunning) expectPair(ctx, body, 'runningMean', 'runningVar');
    if (backward) {
      expectShape(ctx, 'dy', body.dy as never, shape, "x's shape");
      const s = rules.statsShape(shape, body);
      expectShape(ctx, 'mean', body.mean as never, s, 'the statistics');
      expectShape(ctx, 'invstd', body.invstd as never, s, 'the statistics');
      expectPair(ctx, body, 'mean', 'invstd');
    }
    if (body.training === false) {
      if (body.runningMean === undefined && body.runningVar === undefined) {
        issue(ctx, 'runningMean', 'required when training is false');
        issue(ctx, 'runningVar', 'required when training is false');
      }
      return;
    }
    const { m, what } = rules.groupSize(shape, body);
    expectDivisor(ctx, m, body.correction, what);
    if (body.runningVar !== undefined && m < 2) {
      issue(
        ctx,
        'runningVar',
        `updating the running variance divides by m − 1; needs m ≥ 2 values, got ${m} (${what})`,
      );
    }
  };
}

function requests<F extends z.core.$ZodLooseShape>(fields: F, savedShape: string, rules: Rules) {
  const forward = z.strictObject(fields).superRefine(check(rules, false) as never);
  const backward = z
    .strictObject({ ...fields, dy: dyField, ...saved(savedShape) })
    .superRefine(check(rules, true) as never);
  return { forward, backward };
}

const stats = (shape: string, more = '') => ({
  mean: tensorOut(`Mean per group, shape ${shape}${more}.`).optional(),
  var: tensorOut(`Variance per group (divisor m − correction), shape ${shape}${more}.`).optional(),
  invstd: tensorOut(`1 / sqrt(var + eps), shape ${shape}${more}.`).optional(),
});

const runningOut = {
  runningMean: tensorOut('Updated running mean (when sent, training mode).').optional(),
  runningVar: tensorOut('Updated running variance, always unbiased (when sent, training mode).').optional(),
  numBatchesTracked: z
    .number()
    .int()
    .optional()
    .describe('numBatchesTracked + 1 (when running statistics were sent).'),
};

const grads = z.object({
  dx: tensorOut('Gradient with respect to x, shape of x.'),
  dgamma: tensorOut('Gradient with respect to gamma, shape [C] (returned even when gamma was omitted).'),
  dbeta: tensorOut('Gradient with respect to beta, shape [C].'),
});

const spatial = (shape: number[]) => sizeOf(shape) / (shape[0]! * shape[1]!);

export const batchNorm = {
  ...requests(
    {
      op: z
        .literal('batch_norm')
        .default('batch_norm')
        .describe('Batch normalization (F.batch_norm, with selectable correction). The default op.'),
      x: tensorSchema('The batch, shape [N, C, *spatial], rank ≥ 2.'),
      ...affine,
      eps: epsField(1e-5),
      correction: correctionField(1),
      ...running,
      dtype: dtypeField,
    },
    '[C]',
    {
      minRank: 2,
      layout: '[N, C, *spatial]',
      groupSize: (s) => ({ m: s[0]! * spatial(s), what: 'values per channel, N × spatial' }),
      statsShape: (s) => [s[1]!],
    },
  ),
  forwardResponse: z.object({
    y: tensorOut('Normalized output, shape of x.'),
    ...stats('[C]', ' (training mode)'),
    ...runningOut,
  }),
  backwardResponse: grads,
};

export const instanceNorm = {
  ...requests(
    {
      op: z.literal('instance_norm').describe('Instance normalization (F.instance_norm).'),
      x: tensorSchema('The batch, shape [N, C, *spatial], rank ≥ 3.'),
      ...affine,
      eps: epsField(1e-5),
      correction: correctionField(0),
      ...running,
      dtype: dtypeField,
    },
    '[N, C]',
    {
      minRank: 3,
      layout: '[N, C, *spatial] with at least one spatial dim',
      groupSize: (s) => ({ m: spatial(s), what: 'values per sample and channel, the spatial size' }),
      statsShape: (s) => [s[0]!, s[1]!],
    },
  ),
  forwardResponse: z.object({
    y: tensorOut('Normalized output, shape of x.'),
    ...stats('[N, C]', ' (training mode)'),
    ...runningOut,
  }),
  backwardResponse: grads,
};

const numGroups = (body: Record<string, unknown>) => body.numGroups as number;

export const groupNorm = {
  ...requests(
    {
      op: z.literal('group_norm').describe('Group normalization (F.group_norm).'),
      x: tensorSchema('The batch, shape [N, C, *spatial], rank ≥ 2.'),
      numGroups: z
        .number()
        .int()
        .min(1)
        .describe('G: the number of groups the C channels are split into; must divide C.'),
      ...affine,
      eps: epsField(1e-5),
      correction: correctionField(0),
      dtype: dtypeField,
    },
    '[N, G]',
    {
      minRank: 2,
      layout: '[N, C, *spatial]',
      extra(shape, body, ctx) {
        const G = numGroups(body);
        if (shape[1]! % G === 0) return true;
        issue(ctx, 'numGroups', `must divide C = ${shape[1]} (x's dim 1); got ${G}`);
        return false;
      },
      groupSize: (s, body) => ({
        m: (s[1]! / numGroups(body)) * spatial(s),
        what: 'values per group, C/G × spatial',
      }),
      statsShape: (s, body) => [s[0]!, numGroups(body)],
    },
  ),
  forwardResponse: z.object({ y: tensorOut('Normalized output, shape of x.'), ...stats('[N, G]') }),
  backwardResponse: grads,
};
