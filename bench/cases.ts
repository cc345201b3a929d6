import type { OpName } from '../src/kernels/registry.js';

/** The shapes every benchmark uses, and each op's parameters for them. */
export const SHAPES: Record<string, number[]> = {
  small: [32, 64],
  wide: [256, 1024],
  conv: [32, 64, 56, 56],
};

export function paramsFor(op: OpName, shape: number[]): Record<string, unknown> | undefined {
  const common = { eps: 1e-5, correction: op === 'batch_norm' ? 1 : 0 };
  switch (op) {
    case 'batch_norm':
      return { ...common, training: true, momentum: 0.1, numBatchesTracked: 0 };
    case 'instance_norm':
      return shape.length < 3
        ? undefined
        : { ...common, training: true, momentum: 0.1, numBatchesTracked: 0 };
    case 'group_norm':
      return { ...common, numGroups: Math.min(32, shape[1]! / 2) };
    case 'layer_norm':
      return { ...common, normalizedShape: shape.slice(1) };
    case 'rms_norm':
      return { eps: 1e-6, normalizedShape: shape.slice(1) };
  }
}

/** Deterministic pseudo-random values (a small LCG), so runs compare like with like. */
export function randomData(n: number, seed = 1): Float64Array {
  const out = new Float64Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

export function parameterLength(op: OpName, shape: number[]): number {
  return op === 'layer_norm' || op === 'rms_norm' ? shape.slice(1).reduce((a, b) => a * b, 1) : shape[1]!;
}
