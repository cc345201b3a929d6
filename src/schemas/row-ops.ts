import { z } from 'zod';
import { formatShape } from '../tensor/tensor.js';
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
  normalizedShapeField,
  optionalTensor,
} from './common.js';
import { tensorOut, tensorSchema } from './tensor.js';

/**
 * Request schemas of the ops that normalize the trailing `normalizedShape` dims
 * of each row with an elementwise affine: layer_norm and rms_norm.
 */
type Body = { x: { shape: number[] }; normalizedShape?: number[]; [k: string]: unknown };

/** `normalizedShape`, or x's last dim when absent. */
export function normalizedShapeOf(body: Body): number[] {
  return body.normalizedShape ?? [body.x.shape.at(-1)!];
}

/** The statistics' shape: x's leading dims, [1] when normalizedShape is all of x. */
export function rowStatsShape(shape: number[], ns: number[]): number[] {
  const lead = shape.slice(0, shape.length - ns.length);
  return lead.length > 0 ? lead : [1];
}

function check(statNames: string[], backward: boolean) {
  return (body: Body, ctx: Ctx) => {
    const { shape } = body.x;
    if (!expectMinRank(ctx, body.x as never, 1, '[*, *normalizedShape]')) return;
    const ns = normalizedShapeOf(body);
    const suffix = shape.slice(shape.length - ns.length);
    if (ns.length > shape.length || suffix.some((d, i) => d !== ns[i])) {
      issue(
        ctx,
        'normalizedShape',
        `must be a suffix of x's shape ${formatShape(shape)}; got ${formatShape(ns)}`,
      );
      return;
    }
    expectShape(ctx, 'gamma', body.gamma as never, ns, 'normalizedShape');
    expectShape(ctx, 'beta', body.beta as never, ns, 'normalizedShape');
    if ('correction' in body) {
      expectDivisor(
        ctx,
        ns.reduce((a, b) => a * b, 1),
        body.correction as number,
        'values per normalized row',
      );
    }
    if (backward) {
      expectShape(ctx, 'dy', body.dy as never, shape, "x's shape");
      const s = rowStatsShape(shape, ns);
      for (const name of statNames) expectShape(ctx, name, body[name] as never, s, "x's leading dims");
      if (statNames.length === 2) expectPair(ctx, body, statNames[0]!, statNames[1]!);
    }
  };
}

const layerFields = {
  op: z.literal('layer_norm').describe('Layer normalization (F.layer_norm).'),
  x: tensorSchema('The input, shape [*, *normalizedShape].'),
  normalizedShape: normalizedShapeField,
  gamma: optionalTensor('Scale (weight), shape normalizedShape. Default: ones.'),
  beta: optionalTensor('Shift (bias), shape normalizedShape. Default: zeros.'),
  eps: epsField(1e-5),
  correction: correctionField(0),
  dtype: dtypeField,
};

export const layerNorm = {
  forward: z.strictObject(layerFields).superRefine(check([], false) as never),
  backward: z
    .strictObject({
      ...layerFields,
      dy: dyField,
      mean: optionalTensor("Saved mean from /forward, shape x's leading dims. Default: recomputed from x."),
      invstd: optionalTensor(
        "Saved invstd from /forward, shape x's leading dims. Default: recomputed from x.",
      ),
    })
    .superRefine(check(['mean', 'invstd'], true) as never),
  forwardResponse: z.object({
    y: tensorOut('Normalized output, shape of x.'),
    mean: tensorOut("Mean per row, shape x's leading dims ([1] when there are none)."),
    var: tensorOut('Variance per row (divisor R − correction).'),
    invstd: tensorOut('1 / sqrt(var + eps) per row.'),
  }),
  backwardResponse: z.object({
    dx: tensorOut('Gradient with respect to x, shape of x.'),
    dgamma: tensorOut('Gradient with respect to gamma, shape normalizedShape.'),
    dbeta: tensorOut('Gradient with respect to beta, shape normalizedShape.'),
  }),
};

export const MACHINE_EPSILON = { float64: 2 ** -52, float32: 2 ** -23 } as const;

const rmsFields = {
  op: z.literal('rms_norm').describe('RMS normalization (F.rms_norm).'),
  x: tensorSchema('The input, shape [*, *normalizedShape].'),
  normalizedShape: normalizedShapeField,
  gamma: optionalTensor('Scale (weight), shape normalizedShape. Default: ones. rms_norm has no beta.'),
  eps: z
    .number()
    .gt(0)
    .optional()
    .describe(
      "Added to the mean of squares inside the square root. Must be > 0. Default: the dtype's machine epsilon (2⁻⁵² for float64, 2⁻²³ for float32), as PyTorch.",
    ),
  dtype: dtypeField,
};

export const rmsNorm = {
  forward: z.strictObject(rmsFields).superRefine(check([], false) as never),
  backward: z
    .strictObject({
      ...rmsFields,
      dy: dyField,
      rrms: optionalTensor("Saved rrms from /forward, shape x's leading dims. Default: recomputed from x."),
    })
    .superRefine(check(['rrms'], true) as never),
  forwardResponse: z.object({
    y: tensorOut('Normalized output, shape of x.'),
    rrms: tensorOut("1 / sqrt(mean(x²) + eps) per row, shape x's leading dims ([1] when there are none)."),
  }),
  backwardResponse: z.object({
    dx: tensorOut('Gradient with respect to x, shape of x.'),
    dgamma: tensorOut('Gradient with respect to gamma, shape normalizedShape.'),
  }),
};
