/**
 * Building kernel tasks for layer_norm, group_norm, instance_norm and rms_norm,
 * and the SPEC's grouping of each op, written out independently of src/ so that
 * tests can check statistics shapes and per-group properties. Kernels are only
 * ever reached through the public `runKernel`.
 */
import { runKernel } from '../../src/kernels/registry.js';
import type { KernelResult, KernelTask } from '../../src/kernels/task.js';
import type { DType, FloatArray } from '../../src/tensor/tensor.js';
import { product } from './numeric.js';

export type Op = 'layer_norm' | 'group_norm' | 'instance_norm' | 'rms_norm';
export const OPS: readonly Op[] = ['layer_norm', 'group_norm', 'instance_norm', 'rms_norm'];
/** The ops that subtract a mean (everything but rms_norm). */
export const CENTERED: readonly Op[] = ['layer_norm', 'group_norm', 'instance_norm'];

export type Params = Record<string, unknown>;
export type Tensors = Record<string, ArrayLike<number> | undefined>;

/** The dtype's machine epsilon: rms_norm's default eps, as the SPEC says (PyTorch's finfo.eps). */
export const MACHINE_EPS: Record<DType, number> = { float64: 2 ** -52, float32: 2 ** -23 };

/** The SPEC's defaults for the params the kernels receive (the schema fills them in for real requests). */
export function defaults(op: Op, shape: number[], dtype: DType): Params {
  const last = [shape.at(-1)!];
  switch (op) {
    case 'layer_norm':
      return { eps: 1e-5, correction: 0, normalizedShape: last };
    case 'group_norm':
      return { eps: 1e-5, correction: 0 };
    case 'instance_norm':
      return { eps: 1e-5, correction: 0, training: true, momentum: 0.1, numBatchesTracked: 0 };
    case 'rms_norm':
      return { eps: MACHINE_EPS[dtype], normalizedShape: last };
  }
}

export function makeTask(
  op: Op,
  shape: number[],
  tensors: Tensors,
  params: Params = {},
  dtype: DType = 'float64',
): KernelTask {
  const t: Record<string, Float64Array | undefined> = {};
  for (const [k, v] of Object.entries(tensors)) if (v !== undefined) t[k] = Float64Array.from(v);
  return { op, dtype, shape, tensors: t, params: { ...defaults(op, shape, dtype), ...params } };
}

export function run(
  pass: 'forward' | 'backward',
  op: Op,
  shape: number[],
  tensors: Tensors,
  params: Params = {},
  dtype: DType = 'float64',
): KernelResult {
  return runKernel(pass, makeTask(op, shape, tensors, params, dtype));
}

export function data(r: KernelResult, name: string): FloatArray {
  const t = r.tensors[name];
  if (!t) throw new Error(`result has no tensor ${name}`);
  return t.data;
}

/** The statistics' shape per the SPEC: leading dims ([1] when none), [N, G] or [N, C]. */
export function statsShape(op: Op, shape: number[], params: Params): number[] {
  if (op === 'group_norm') return [shape[0]!, params.numGroups as number];
  if (op === 'instance_norm') return [shape[0]!, shape[1]!];
  const ns = params.normalizedShape as number[];
  const lead = shape.slice(0, shape.length - ns.length);
  return lead.length > 0 ? lead : [1];
}

/** Shape of gamma, beta, dgamma, dbeta. */
export function affineShape(op: Op, shape: number[], params: Params): number[] {
  return op === 'layer_norm' || op === 'rms_norm' ? (params.normalizedShape as number[]) : [shape[1]!];
}

/**
 * The flat indices of x in each group, in the order of the statistics: rows of
 * R = product(normalizedShape) for layer/rms norm; for group norm (n, g) covering
 * channels g·C/G … (g+1)·C/G − 1 of sample n; for instance norm (n, c).
 */
export function groups(op: Op, shape: number[], params: Params): number[][] {
  const out: number[][] = [];
  if (op === 'layer_norm' || op === 'rms_norm') {
    const R = product(params.normalizedShape as number[]);
    const rows = product(shape) / R;
    for (let r = 0; r < rows; r++) out.push(Array.from({ length: R }, (_, i) => r * R + i));
    return out;
  }
  const [N, C] = [shape[0]!, shape[1]!];
  const inner = product(shape.slice(2));
  const G = op === 'group_norm' ? (params.numGroups as number) : C;
  const per = C / G;
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < G; g++) {
      const idx: number[] = [];
      for (let c = g * per; c < (g + 1) * per; c++)
        for (let i = 0; i < inner; i++) idx.push((n * C + c) * inner + i);
      out.push(idx);
    }
  }
  return out;
}

/**
 * Plain two-pass float64 moments of the values at `idx`: mean, M2 = Σ (x − mean)², mean of
 * squares. The mean gets one refinement, mean₀ + Σ (x − mean₀)/m: a plain sum of thousands
 * of values near 1e6 is off by ~1e-8 in the mean, more than the kernels' error.
 */
export function refMoments(x: ArrayLike<number>, idx: number[]) {
  const m = idx.length;
  let s = 0;
  let sq = 0;
  for (const i of idx) {
    s += x[i]!;
    sq += x[i]! * x[i]!;
  }
  const mean0 = s / m;
  let sd = 0;
  for (const i of idx) sd += x[i]! - mean0;
  const mean = mean0 + sd / m;
  let m2 = 0;
  for (const i of idx) m2 += (x[i]! - mean) ** 2;
  return { mean, m2, ms: sq / m, m };
}
