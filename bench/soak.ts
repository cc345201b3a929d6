/**
 * Soak: the real server process (`node dist/server.js`, WORKERS from the environment)
 * under mixed loopback traffic for a fixed time — every op, forward and backward,
 * float32 and float64, JSON and safetensors, small to [32,64,56,56], and a few bad
 * requests — from 4 concurrent connections. Reports RSS at start, at the end and its
 * maximum (sampled each second), requests by status, and any answer whose status was
 * not the one expected (200, or the 4xx a bad request must get).
 *
 *   npx tsx bench/soak.ts [seconds=60] [--no-build]
 */
import { OP_NAMES, type Pass } from '../src/kernels/registry.js';
import type { DType } from '../src/tensor/tensor.js';
import { agent, type Request, send } from './client.js';
import { payload, SAFETENSORS } from './payloads.js';
import { build, errorLines, mb, memoryOf, startService } from './server-process.js';

const seconds = Number(process.argv.slice(2).find((a) => /^\d+(\.\d+)?$/.test(a)) ?? 60);
const CONNECTIONS = 4;

setTimeout(
  () => {
    console.error('bench/soak.ts: over its bound, giving up');
    process.exit(2);
  },
  (seconds + 90) * 1000,
).unref();

interface Job extends Request {
  name: string;
  expect: number;
  /** how often it is picked, relative to the others */
  weight: number;
}

function jobs(): Job[] {
  const out: Job[] = [];
  const add = (
    op: (typeof OP_NAMES)[number],
    pass: Pass,
    shape: number[],
    dtype: DType,
    json: boolean,
    weight: number,
  ) => {
    const p = payload(op, pass, shape, dtype, json ? 'json' : 'safetensors');
    out.push({ ...p, expect: 200, weight });
  };
  for (const op of OP_NAMES) {
    const rank3 = op === 'instance_norm';
    for (const pass of ['forward', 'backward'] as Pass[]) {
      for (const dtype of ['float32', 'float64'] as DType[]) {
        add(op, pass, rank3 ? [8, 16, 4, 4] : [32, 64], dtype, true, 10);
        add(op, pass, rank3 ? [16, 64, 16, 16] : [256, 1024], dtype, false, 4);
      }
    }
  }
  add('batch_norm', 'forward', [32, 64, 56, 56], 'float32', false, 1);
  add('group_norm', 'backward', [32, 64, 56, 56], 'float32', false, 1);
  const json = { 'content-type': 'application/json' };
  const bad = (name: string, expect: number, r: Request) => out.push({ ...r, name, expect, weight: 2 });
  bad('malformed JSON', 400, { method: 'POST', path: '/forward', headers: json, body: '{"x": [[1, 2], [3' });
  bad('unknown op', 400, {
    method: 'POST',
    path: '/forward',
    headers: json,
    body: '{"op": "nope", "x": [[1], [2]]}',
  });
  bad('ragged x', 400, {
    method: 'POST',
    path: '/backward',
    headers: json,
    body: '{"x": [[1, 2], [3]], "dy": [[1, 2], [3]]}',
  });
  bad('wrong gamma shape', 400, {
    method: 'POST',
    path: '/forward',
    headers: json,
    body: '{"x": [[1, 2], [3, 4]], "gamma": [1, 2, 3]}',
  });
  bad('numGroups not dividing C', 400, {
    method: 'POST',
    path: '/forward',
    headers: json,
    body: '{"op": "group_norm", "numGroups": 3, "x": [[1, 2], [3, 4]]}',
  });
  const header = Buffer.alloc(8);
  header.writeBigUInt64LE(1000n);
  bad('safetensors header past the end', 400, {
    method: 'POST',
    path: '/forward',
    headers: { 'content-type': SAFETENSORS },
    body: Buffer.concat([header, Buffer.from('{}')]),
  });
  bad('text/plain', 415, {
    method: 'POST',
    path: '/forward',
    headers: { 'content-type': 'text/plain' },
    body: 'x',
  });
  return out;
}

/** A deterministic weighted schedule (LCG), so two soaks send the same mix. */
function picker(all: Job[]) {
  const total = all.reduce((s, j) => s + j.weight, 0);
  let seed = 12345;
  return () => {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    let r = (seed / 2 ** 32) * total;
    for (const j of all) {
      r -= j.weight;
      if (r < 0) return j;
    }
    return all.at(-1)!;
  };
}

if (!process.argv.includes('--no-build')) build();
const all = jobs();
const next = picker(all);
const server = await startService();
const statuses: Record<string, number> = {};
const unexpected = new Map<string, { count: number; example: string }>();
let errors = 0;
let sent = 0;
const start = memoryOf(server.pid);
let maxRss = start.rss;
const samples: number[] = [];
const sampler = setInterval(() => {
  if (server.exited()) return;
  const { rss } = memoryOf(server.pid);
  samples.push(rss);
  maxRss = Math.max(maxRss, rss);
}, 1000);

console.error(
  `soak: ${seconds} s, ${CONNECTIONS} connections, ${all.length} kinds of request against ${server.name} …`,
);
const via = agent(CONNECTIONS);
const t0 = performance.now();
const end = t0 + seconds * 1000;
try {
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < end && !server.exited()) {
        const job = next();
        sent++;
        try {
          const a = await send(server.url, job, via, { keepBody: true });
          statuses[a.status] = (statuses[a.status] ?? 0) + 1;
          if (a.status !== job.expect) {
            const key = `${job.name}: expected ${job.expect}, got ${a.status}`;
            const u = unexpected.get(key) ?? { count: 0, example: a.body.subarray(0, 200).toString() };
            u.count++;
            unexpected.set(key, u);
          }
        } catch (err) {
          errors++;
          const key = `${job.name}: ${(err as Error).message}`;
          const u = unexpected.get(key) ?? { count: 0, example: '' };
          u.count++;
          unexpected.set(key, u);
        }
      }
    }),
  );
} finally {
  clearInterval(sampler);
  via.destroy();
}
const elapsed = (performance.now() - t0) / 1000;
const alive = !server.exited();
const endMem = alive ? memoryOf(server.pid) : undefined;
if (endMem) maxRss = Math.max(maxRss, endMem.rss);
let health = 'process gone';
if (alive) {
  const h = await send(server.url, { method: 'GET', path: '/health' }, agent(1), { timeoutMs: 5000 }).catch(
    (err: Error) => ({ status: err.message }),
  );
  health = String(h.status);
}
const exitCode = await server.stop();

console.log(
  `soak: ${elapsed.toFixed(1)} s, ${sent} requests (${(sent / elapsed).toFixed(1)}/s), ${CONNECTIONS} connections`,
);
console.table([
  {
    'RSS start': mb(start.rss),
    'RSS end': endMem ? mb(endMem.rss) : '—',
    'RSS max (1 s samples)': mb(maxRss),
    'peak (VmHWM)': endMem ? mb(endMem.hwm) : '—',
    '/health after': health,
    'exit code on SIGTERM': String(exitCode),
  },
]);
const every = Math.max(1, Math.round(samples.length / 12));
const trend = samples.filter((_, i) => (i + 1) % every === 0).map((b) => (b / 1e6).toFixed(0));
console.log(`RSS every ${every} s, MB: ${trend.join(' ')}`);
console.log('requests by status');
console.table(Object.entries(statuses).map(([status, count]) => ({ status, count })));
console.log(`client errors (socket, timeout): ${errors}`);
if (unexpected.size === 0) console.log('every answer had the expected status');
for (const [key, { count, example }] of unexpected) console.log(`UNEXPECTED ×${count}: ${key} ${example}`);
const { errors: logged, other } = errorLines(server.logs);
console.log(
  `server: ${server.logs.length} lines logged (LOG_LEVEL=warn): ${logged.length} errors, ${other.length} not JSON logs`,
);
for (const line of [...logged.slice(0, 5), ...other.slice(0, 3)]) console.log(`  ${line.slice(0, 300)}`);
