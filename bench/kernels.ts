/**
 * Kernel throughput, in-process: every op forward and backward, float32 and float64,
 * at the shapes of bench/cases.ts, each against a memcpy of the same bytes
 * (TypedArray.prototype.set) measured in the same run as the bandwidth bound.
 *
 *   npx tsx bench/kernels.ts [--time ms] [--filter conv]
 */
import { Bench } from 'tinybench';
import { OP_NAMES, runKernel } from '../src/kernels/registry.js';
import type { KernelTask } from '../src/kernels/task.js';
import type { DType } from '../src/tensor/tensor.js';
import { parameterLength, paramsFor, randomData, SHAPES } from './cases.js';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : fallback;
};
const time = Number(arg('time', '400'));
const filter = arg('filter', '');

function meanMs(task: Bench['tasks'][number]): number {
  const r = task.result;
  if (!r || !('latency' in r)) throw new Error(`${task.name} did not complete`);
  return r.latency.mean;
}

interface Row {
  case: string;
  'Melem/s': string;
  'ms/op': string;
  'x memcpy': string;
}
const rows: Row[] = [];

for (const [shapeName, shape] of Object.entries(SHAPES)) {
  if (filter && !shapeName.includes(filter)) continue;
  const n = shape.reduce((a, b) => a * b, 1);
  for (const dtype of ['float32', 'float64'] as DType[]) {
    const Ctor = dtype === 'float32' ? Float32Array : Float64Array;
    const x = Ctor.from(randomData(n, 1));
    const dy = Ctor.from(randomData(n, 2));
    const src = new Ctor(n);
    const dst = new Ctor(n);
    const bench = new Bench({ time, warmupTime: 100 });
    // A forward pass reads x and writes y: the bound is one copy of the same bytes.
    bench.add('memcpy', () => dst.set(src));
    for (const op of OP_NAMES) {
      const params = paramsFor(op, shape);
      if (!params) continue;
      const p = parameterLength(op, shape);
      const task = (tensors: KernelTask['tensors']): KernelTask => ({ op, dtype, shape, tensors, params });
      const gamma = Ctor.from(randomData(p, 3).map((v) => 1 + v / 2));
      const beta = op === 'rms_norm' ? undefined : Ctor.from(randomData(p, 4));
      bench.add(`${op} forward`, () => runKernel('forward', task({ x, gamma, beta })));
      bench.add(`${op} backward`, () => runKernel('backward', task({ x, dy, gamma })));
    }
    await bench.run();
    const copyMs = meanMs(bench.tasks.find((t) => t.name === 'memcpy')!);
    for (const t of bench.tasks) {
      const ms = meanMs(t);
      rows.push({
        case: `${t.name} ${dtype} [${shape.join(',')}]`,
        'Melem/s': (n / ms / 1e3).toFixed(1),
        'ms/op': ms.toFixed(3),
        'x memcpy': (ms / copyMs).toFixed(2),
      });
    }
    console.error(`done ${shapeName} ${dtype}`);
  }
}
console.table(rows);
