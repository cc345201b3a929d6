import { z } from 'zod';
import type { OpName } from '../kernels/registry.js';
import { clip } from '../text.js';
import { batchNorm, groupNorm, instanceNorm } from './channel-ops.js';
import { backwardExamples, forwardExamples } from './examples.js';
import { layerNorm, MACHINE_EPSILON, normalizedShapeOf, rmsNorm } from './row-ops.js';

/**
 * The request bodies of /forward and /backward: a union discriminated by `op`
 * (default "batch_norm"), one strict member per op of the kernel registry.
 */
const perOp = {
  batch_norm: batchNorm,
  layer_norm: layerNorm,
  group_norm: groupNorm,
  instance_norm: instanceNorm,
  rms_norm: rmsNorm,
} satisfies Record<OpName, unknown>;

const ops = Object.keys(perOp) as OpName[];

const unknownOp = (iss: { input?: unknown }) => {
  const body = iss.input;
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return 'expected a JSON object';
  const given = (body as { op?: unknown }).op;
  // Only a primitive is quoted back: a nested value could be arbitrarily deep or large.
  const op =
    given === null || typeof given !== 'object'
      ? clip(JSON.stringify(given) ?? 'undefined')
      : `of type ${Array.isArray(given) ? 'array' : 'object'}`;
  return `unknown op ${op}; expected one of ${ops.map((o) => `"${o}"`).join(', ')}`;
};

/** Defaults that depend on other fields: layer/rms norm's normalizedShape, rms norm's eps. */
function resolveDefaults<B extends { op: string; dtype: 'float32' | 'float64' }>(body: B): B {
  if (body.op !== 'layer_norm' && body.op !== 'rms_norm') return body;
  const b = body as unknown as { normalizedShape?: number[]; eps?: number; x: { shape: number[] } };
  b.normalizedShape = normalizedShapeOf(b);
  if (body.op === 'rms_norm') b.eps ??= MACHINE_EPSILON[body.dtype];
  return body;
}

const members = <K extends 'forward' | 'backward'>(k: K) =>
  ops.map((op) => perOp[op][k]) as [(typeof perOp)[OpName][K]];

export const forwardRequest = z
  .discriminatedUnion('op', members('forward'), { error: unknownOp })
  .transform(resolveDefaults)
  .meta({ 'x-examples': forwardExamples });

export const backwardRequest = z
  .discriminatedUnion('op', members('backward'), { error: unknownOp })
  .transform(resolveDefaults)
  .meta({ 'x-examples': backwardExamples });

export const forwardResponse = z.union(ops.map((op) => perOp[op].forwardResponse));
export const backwardResponse = z.union(ops.map((op) => perOp[op].backwardResponse));
