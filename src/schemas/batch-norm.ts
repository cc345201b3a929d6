import { z } from 'zod';
import { sizeOf } from '../tensor/tensor.js';
import {
  channelTensor,
  correctionField,
  dtypeField,
  epsField,
  expectPair,
  expectShape,
  momentumField,
  numBatchesTrackedField,
  trainingField,
} from './common.js';
import { tensorOut, tensorSchema } from './tensor.js';

const fields = {
  op: z.literal('batch_norm').default('batch_norm').describe('The normalization. Default "batch_norm".'),
  x: tensorSchema('The batch, shape [N, C, *spatial], rank ≥ 2.'),
  gamma: channelTensor('Scale (weight). Default: ones.'),
  beta: channelTensor('Shift (bias). Default: zeros.'),
  eps: epsField(1e-5),
  correction: correctionField(1),
  training: trainingField,
  runningMean: channelTensor(
    'Running mean. Required when training is false; when sent with training true, updated and returned.',
  ),
  runningVar: channelTensor(
    'Running (unbiased) variance. Required when training is false; when sent with training true, updated and returned.',
  ),
  momentum: momentumField,
  numBatchesTracked: numBatchesTrackedField,
  dtype: dtypeField,
};

type Fields = z.output<z.ZodObject<typeof fields>>;

/** Cross-field rules shared by /forward and /backward; each issue names its field. */
function checkBatchNorm(body: Fields, ctx: z.core.$RefinementCtx) {
  const { x } = body;
  if (x.shape.length < 2) {
    ctx.addIssue({
      code: 'custom',
      path: ['x'],
      message: `expected rank ≥ 2 ([N, C, *spatial]), got rank ${x.shape.length}`,
    });
    return;
  }
  const C = x.shape[1]!;
  const m = sizeOf(x.shape) / C;
  for (const name of ['gamma', 'beta', 'runningMean', 'runningVar'] as const) {
    expectShape(ctx, name, body[name], [C], `C = ${C}, x's dim 1`);
  }
  expectPair(ctx, body, 'runningMean', 'runningVar');
  if (!body.training) {
    if (body.runningMean === undefined && body.runningVar === undefined) {
      ctx.addIssue({ code: 'custom', path: ['runningMean'], message: 'required when training is false' });
      ctx.addIssue({ code: 'custom', path: ['runningVar'], message: 'required when training is false' });
    }
    return;
  }
  if (m - body.correction <= 0) {
    ctx.addIssue({
      code: 'custom',
      path: ['correction'],
      message: `m − correction must be > 0, where m = ${m} values per channel (N × spatial); got correction ${body.correction}`,
    });
  }
  if (body.runningVar !== undefined && m < 2) {
    ctx.addIssue({
      code: 'custom',
      path: ['runningVar'],
      message: 'updating the running variance needs at least 2 values per channel (it divides by m − 1)',
    });
  }
}

export const batchNormForwardRequest = z.strictObject(fields).superRefine(checkBatchNorm);

export const batchNormBackwardRequest = z
  .strictObject({
    ...fields,
    dy: tensorSchema('Gradient of the loss with respect to y, same shape as x.'),
    mean: channelTensor('Saved batch mean from /forward (training mode). Default: recomputed from x.'),
    invstd: channelTensor(
      'Saved 1/sqrt(var + eps) from /forward (training mode). Default: recomputed from x.',
    ),
  })
  .superRefine((body, ctx) => {
    checkBatchNorm(body, ctx);
    if (body.x.shape.length < 2) return;
    expectShape(ctx, 'dy', body.dy, body.x.shape, "x's shape");
    const C = [body.x.shape[1]!];
    expectShape(ctx, 'mean', body.mean, C, `C = ${C[0]}`);
    expectShape(ctx, 'invstd', body.invstd, C, `C = ${C[0]}`);
    expectPair(ctx, body, 'mean', 'invstd');
  });

export type BatchNormForwardRequest = z.output<typeof batchNormForwardRequest>;
export type BatchNormBackwardRequest = z.output<typeof batchNormBackwardRequest>;

export const batchNormForwardResponse = z.object({
  y: tensorOut('Normalized output, shape of x.'),
  mean: tensorOut('Batch mean per channel, shape [C] (training mode).').optional(),
  var: tensorOut('Batch variance per channel, divisor m − correction, shape [C] (training mode).').optional(),
  invstd: tensorOut('1 / sqrt(var + eps) per channel, shape [C] (training mode).').optional(),
  runningMean: tensorOut('Updated running mean (when sent, training mode).').optional(),
  runningVar: tensorOut('Updated running variance, always unbiased (when sent, training mode).').optional(),
  numBatchesTracked: z
    .number()
    .int()
    .optional()
    .describe('numBatchesTracked + 1 (when running statistics were sent).'),
});

export const batchNormBackwardResponse = z.object({
  dx: tensorOut('Gradient with respect to x, shape of x.'),
  dgamma: tensorOut('Gradient with respect to gamma, shape [C] (returned even when gamma was omitted).'),
  dbeta: tensorOut('Gradient with respect to beta, shape [C].'),
});
