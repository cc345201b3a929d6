/**
 * Our kernels against PyTorch CPU on one thread: every op forward and backward, float32
 * and float64, at the shapes of bench/cases.ts. PyTorch runs first, in a child process
 * (bench/torch.py with the system Python); then, in this process, our kernels via
 * runKernel (as bench/kernels.ts) and a memcpy of the same bytes (TypedArray.prototype.set),
 * timed the same way as torch.py does: the median of repeated runs within a time budget.
 *
 *   npx tsx bench/compare.ts [--time ms] [--filter text] [--threads n]
 *
 * Without PyTorch (no /usr/bin/python3 or no torch module) the PyTorch columns stay empty.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { OP_NAMES, type Pass, runKernel } from '../src/kernels/registry.js';
import type { KernelTask } from '../src/kernels/task.js';
import type { DType } from '../src/tensor/tensor.js';
import { parameterLength, paramsFor, randomData, SHAPES } from './cases.js';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : fallback;
};
const budgetMs = Number(arg('time', '300'));
const filter = arg('filter', '');
const threads = Number(arg('threads', '1'));
const PYTHON = '/usr/bin/python3';
const TORCH_TIMEOUT_MS = 240_000;

interface TorchLine {
  op: string;
  pass: Pass;
  dtype: DType;
  shape: number[];
  ms: number;
}

const key = (op: string, pass: string, dtype: string, shape: readonly number[]) =>
  `${op} ${pass} ${dtype} [${shape.join(',')}]`;

/** Runs bench/torch.py to completion (bounded in time) and keys its lines like our cases. */
async function torchTimes(): Promise<Map<string, number>> {
  const script = fileURLToPath(new URL('./torch.py', import.meta.url));
  const child = spawn(
    PYTHON,
    [script, String(threads), '--time', String(budgetMs / 1000), '--filter', filter],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const times = new Map<string, number>();
  createInterface({ input: child.stdout }).on('line', (line) => {
    try {
      const t = JSON.parse(line) as TorchLine;
      times.set(key(t.op, t.pass, t.dtype, t.shape), t.ms);
    } catch {
      console.error(`torch.py: ${line}`);
    }
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), TORCH_TIMEOUT_MS);
  const code = await new Promise<number | null>((resolve) => {
    child.once('error', (err) => {
      console.error(`could not run ${PYTHON}: ${err.message}`);
      resolve(-1);
    });
    child.once('close', (c) => resolve(c));
  });
  clearTimeout(timer);
  if (code !== 0) console.error(`torch.py exited with ${code}: PyTorch columns are partial or empty`);
  return times;
}

/** Median wall time of fn() in ms: a short warm-up, then runs until the budget is spent (as torch.py). */
function medianMs(fn: () => unknown, budget = budgetMs, minReps = 5, maxReps = 2000): number {
  const warmEnd = performance.now() + budget / 5;
  for (let i = 0; i < maxReps; i++) {
    fn();
    if (i >= 2 && performance.now() > warmEnd) break;
  }
  const times: number[] = [];
  const end = performance.now() + budget;
  while (times.length < minReps || (performance.now() < end && times.length < maxReps)) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const mid = times.length >> 1;
  return times.length % 2 ? times[mid]! : (times[mid - 1]! + times[mid]!) / 2;
}

interface Measured {
  ours: number;
  torch: number | undefined;
  memcpy: number;
}

console.error(`PyTorch (${threads} thread${threads === 1 ? '' : 's'}), ${budgetMs} ms a case …`);
const torch = await torchTimes();
console.error('normserve kernels, in-process …');

const measured = new Map<string, Measured>();
for (const shape of Object.values(SHAPES)) {
  const n = shape.reduce((a, b) => a * b, 1);
  for (const dtype of ['float32', 'float64'] as DType[]) {
    const Ctor = dtype === 'float32' ? Float32Array : Float64Array;
    const x = Ctor.from(randomData(n, 1));
    const dy = Ctor.from(randomData(n, 2));
    let memcpy: number | undefined;
    for (const op of OP_NAMES) {
      const params = paramsFor(op, shape);
      if (!params) continue;
      const p = parameterLength(op, shape);
      const gamma = Ctor.from(randomData(p, 3).map((v) => 1 + v / 2));
      const beta = op === 'rms_norm' ? undefined : Ctor.from(randomData(p, 4));
      for (const pass of ['forward', 'backward'] as Pass[]) {
        const name = key(op, pass, dtype, shape);
        if (!name.includes(filter)) continue;
        if (memcpy === undefined) {
          // A pass reads x and writes an output of the same size: the bound is one copy of those bytes.
          const src = new Ctor(n);
          const dst = new Ctor(n);
          memcpy = medianMs(() => dst.set(src));
        }
        const tensors = pass === 'forward' ? { x, gamma, beta } : { x, dy, gamma };
        const task: KernelTask = { op, dtype, shape, tensors, params };
        const ours = medianMs(() => runKernel(pass, task));
        measured.set(name, { ours, torch: torch.get(name), memcpy });
      }
    }
  }
}

const fmt = (ms: number | undefined) => (ms === undefined ? '—' : ms < 1 ? ms.toFixed(4) : ms.toFixed(2));
const ratio = (a: number, b: number | undefined) => (b === undefined ? '—' : `${(a / b).toFixed(2)}×`);

const rows = [...measured].map(([name, m]) => ({
  case: name,
  'ours ms': fmt(m.ours),
  'PyTorch ms': fmt(m.torch),
  'ours/PyTorch': ratio(m.ours, m.torch),
  'ours/memcpy': ratio(m.ours, m.memcpy),
}));
console.log(`normserve kernels vs PyTorch CPU (${threads} thread${threads === 1 ? '' : 's'}), median ms`);
console.table(rows);

// The target case: batch-norm training forward + backward of a conv activation, float32.
const conv = SHAPES.conv!;
const fw = measured.get(key('batch_norm', 'forward', 'float32', conv));
const bw = measured.get(key('batch_norm', 'backward', 'float32', conv));
if (fw && bw) {
  const both: Measured = {
    ours: fw.ours + bw.ours,
    torch: fw.torch === undefined || bw.torch === undefined ? undefined : fw.torch + bw.torch,
    memcpy: fw.memcpy + bw.memcpy,
  };
  const verdict = (m: Measured) => {
    const okTorch = m.torch !== undefined && m.ours <= m.torch;
    const okCopy = m.ours <= 2 * m.memcpy;
    return `${okTorch ? 'ok' : 'MISSED'} / ${okCopy ? 'ok' : 'MISSED'}`;
  };
  console.log(
    `batch_norm float32 [${conv.join(',')}]: targets ≤ 1.0× PyTorch (1 thread) and ≤ 2× memcpy (one memcpy a pass)`,
  );
  console.table(
    (
      [
        ['forward', fw],
        ['backward', bw],
        ['forward + backward', both],
      ] as const
    ).map(([pass, m]) => ({
      pass,
      'ours ms': fmt(m.ours),
      'PyTorch ms': fmt(m.torch),
      'ours/PyTorch': ratio(m.ours, m.torch),
      'ours/memcpy': ratio(m.ours, m.memcpy),
      'targets (PyTorch / memcpy)': verdict(m),
    })),
  );
}
