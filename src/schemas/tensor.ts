import { z } from 'zod';
import { type DecodeLimits, decodeTensor } from '../tensor/decode.js';
import type { DecodedTensor } from '../tensor/tensor.js';

/**
 * A tensor field: the envelope is checked by zod, the numbers by one tight
 * decoding pass (see `decodeTensor`), which turns the field into a
 * `DecodedTensor` (shape + Float64Array) or a 400 naming the element.
 */
const leafDoc = {
  oneOf: [{ type: 'number' as const }, { type: 'string' as const, enum: ['NaN', 'Infinity', '-Infinity'] }],
};

/** The two tensor forms, documented once as OpenAPI components and referenced by every tensor field. */
export const tensorComponents = {
  NestedTensor: {
    title: 'nested',
    description:
      'Rectangular nested array of numbers, rank ≥ 1, e.g. [[1, 2], [3, 4]]. Non-finite values as "NaN", "Infinity", "-Infinity".',
    type: 'array' as const,
    items: {},
  },
  FlatTensor: {
    title: 'flat',
    description: 'Shape plus flat row-major data, e.g. {"shape": [2, 2], "data": [1, 2, 3, 4]}.',
    type: 'object' as const,
    required: ['shape', 'data'],
    additionalProperties: false,
    properties: {
      shape: { type: 'array' as const, items: { type: 'integer' as const, minimum: 1 }, minItems: 1 },
      data: { type: 'array' as const, items: leafDoc },
    },
  },
};

const tensorDoc = {
  oneOf: [{ $ref: '#/components/schemas/NestedTensor' }, { $ref: '#/components/schemas/FlatTensor' }],
};

export function tensorSchema(description: string, limits?: DecodeLimits) {
  return z
    .unknown()
    .transform((value, ctx): DecodedTensor => {
      const result = decodeTensor(value, limits);
      if (result.ok) return result.tensor;
      ctx.issues.push({
        code: 'custom',
        message: result.issue.message,
        path: result.issue.path,
        input: value,
      });
      return z.NEVER;
    })
    .meta({
      ...tensorDoc,
      description: `${description} Non-finite values as "NaN", "Infinity", "-Infinity".`,
    });
}

/** Response-side documentation of a tensor (responses are written by the encoder, not by zod). */
export function tensorOut(description: string) {
  return z
    .unknown()
    .meta({ ...tensorDoc, description: `${description} Same form (nested or flat) as the request's x.` });
}
