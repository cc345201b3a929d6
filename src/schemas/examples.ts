/** Example requests shown in Swagger UI; each works as is with "Try it out". */
export const forwardExample = {
  op: 'batch_norm',
  x: [
    [1, 2],
    [3, 6],
    [5, 10],
  ],
  gamma: [1, 0.5],
  beta: [0, 1],
  eps: 1e-5,
  correction: 1,
  training: true,
  runningMean: [0, 0],
  runningVar: [1, 1],
  momentum: 0.1,
};

export const backwardExample = {
  op: 'batch_norm',
  x: [
    [1, 2],
    [3, 6],
    [5, 10],
  ],
  dy: [
    [0.1, -0.2],
    [0.3, 0.4],
    [-0.5, 0.6],
  ],
  gamma: [1, 0.5],
  eps: 1e-5,
  correction: 1,
};
