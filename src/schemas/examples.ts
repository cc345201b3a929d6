import type { OpName } from '../kernels/registry.js';

/** Example requests shown in Swagger UI, one per op; each works as is with "Try it out". */
const x32 = [
  [1, 2],
  [3, 6],
  [5, 10],
];
const dy32 = [
  [0.1, -0.2],
  [0.3, 0.4],
  [-0.5, 0.6],
];
const x4 = [
  [
    [1, 2, 3],
    [4, 6, 8],
  ],
  [
    [0, 0, 3],
    [1, -1, 2],
  ],
];
const dy4 = [
  [
    [0.1, 0.2, -0.3],
    [0.5, -0.1, 0],
  ],
  [
    [1, 0, 0],
    [0, 0.2, -0.4],
  ],
];

interface Example {
  summary: string;
  value: Record<string, unknown>;
}

export const forwardExamples: Record<OpName, Example> = {
  batch_norm: {
    summary: 'batch_norm, Bessel-corrected, with running statistics',
    value: {
      op: 'batch_norm',
      x: x32,
      gamma: [1, 0.5],
      beta: [0, 1],
      eps: 1e-5,
      correction: 1,
      training: true,
      runningMean: [0, 0],
      runningVar: [1, 1],
      momentum: 0.1,
    },
  },
  layer_norm: {
    summary: 'layer_norm over the last dim',
    value: { op: 'layer_norm', x: x32, normalizedShape: [2], gamma: [1, 2], beta: [0, 0.5] },
  },
  group_norm: {
    summary: 'group_norm, 2 groups of 1 channel',
    value: { op: 'group_norm', x: x4, numGroups: 2, gamma: [1, 1], beta: [0, 0] },
  },
  instance_norm: {
    summary: 'instance_norm over [N, C, L]',
    value: { op: 'instance_norm', x: x4, gamma: [1, 2], beta: [0, 0] },
  },
  rms_norm: {
    summary: 'rms_norm over the last dim',
    value: { op: 'rms_norm', x: x32, gamma: [1, 0.5] },
  },
};

export const backwardExamples: Record<OpName, Example> = {
  batch_norm: {
    summary: 'batch_norm backward, statistics recomputed from x',
    value: { op: 'batch_norm', x: x32, dy: dy32, gamma: [1, 0.5], eps: 1e-5, correction: 1 },
  },
  layer_norm: {
    summary: 'layer_norm backward',
    value: { op: 'layer_norm', x: x32, dy: dy32, gamma: [1, 2] },
  },
  group_norm: {
    summary: 'group_norm backward',
    value: { op: 'group_norm', x: x4, dy: dy4, numGroups: 1 },
  },
  instance_norm: {
    summary: 'instance_norm backward',
    value: { op: 'instance_norm', x: x4, dy: dy4, gamma: [1, 2] },
  },
  rms_norm: {
    summary: 'rms_norm backward',
    value: { op: 'rms_norm', x: x32, dy: dy32, gamma: [1, 0.5] },
  },
};
