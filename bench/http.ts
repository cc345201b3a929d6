/**
 * The service over real HTTP on loopback: builds (`npm run build`), starts the real
 * server process (`node dist/server.js`, WORKERS from the environment, LOG_LEVEL=warn)
 * on a free port and measures, each phase bounded in time:
 *
 *   - req/s, p50/p99 latency and MB/s for JSON and safetensors requests, with the
 *     server's peak RSS in each phase (autocannon for small bodies; node:http for bodies
 *     from 256 KB on, where autocannon's JavaScript HTTP parser was the bottleneck);
 *   - [32,64] JSON forward as a fraction of a bare Fastify echo of the same body
 *     (bench/bare-server.ts, its own process);
 *   - the peak RSS one [32,64,56,56] safetensors request adds (VmHWM, reset first);
 *   - /health latency while large safetensors requests are being computed;
 *   - forward + backward latency of one [32,64,56,56] request with WORKERS=1 vs 2 (and,
 *     unless SPLIT_MIN is set, WORKERS=2 with SPLIT_MIN=65536 to force the split).
 *
 *   npx tsx bench/http.ts [--seconds 5] [--no-build]
 */
import autocannon from 'autocannon';
import { agent, type Request, send } from './client.js';
import { check, type Payload, payload } from './payloads.js';
import {
  build,
  errorLines,
  MB,
  mb,
  memoryOf,
  resetPeak,
  type ServerProcess,
  startBare,
  startService,
} from './server-process.js';

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : fallback;
};
const SECONDS = Number(arg('seconds', '5'));
const HEAVY_SECONDS = Math.round(SECONDS * 1.6);

// Everything below is bounded; this is the backstop (the exit handler kills the servers).
setTimeout(() => {
  console.error('bench/http.ts: over its 5-minute bound, giving up');
  process.exit(2);
}, 300_000).unref();

interface Stats {
  label: string;
  client: 'autocannon' | 'node:http';
  connections: number;
  seconds: number;
  /** latencies of the 2xx responses, ms */
  latencies: number[];
  responseBytes: number;
  requestBytes: number;
  statuses: Record<string, number>;
  errors: number;
}

type Probe = { method: 'GET'; path: string };

interface LoadOptions {
  label: string;
  base: string;
  /** one payload, or a sequence that each connection sends in turn */
  requests: Payload[] | Probe;
  connections: number;
  seconds: number;
  /** requests per second over all connections (a probe), else as fast as answered */
  overallRate?: number;
}

/** Bodies from this size on are sent with node:http (see bench/client.ts). */
const LARGE = 256 * 1024;

function emptyStats(o: LoadOptions, client: Stats['client']): Stats {
  const s = { responseBytes: 0, requestBytes: 0, statuses: {}, errors: 0, latencies: [] };
  return { ...s, label: o.label, client, connections: o.connections, seconds: o.seconds };
}

function record(stats: Stats, status: number, responseBytes: number, ms: number, requestBytes: number) {
  stats.statuses[status] = (stats.statuses[status] ?? 0) + 1;
  stats.responseBytes += responseBytes;
  stats.requestBytes += requestBytes;
  if (status >= 200 && status < 300) stats.latencies.push(ms);
}

function load(o: LoadOptions): Promise<Stats> {
  const seq = Array.isArray(o.requests) ? o.requests : [{ ...o.requests, bytes: 0 }];
  return seq.some((r) => r.bytes >= LARGE) ? loadHttp(o, seq) : loadAutocannon(o, seq);
}

function loadAutocannon(o: LoadOptions, seq: (Request & { bytes: number })[]): Promise<Stats> {
  const stats = emptyStats(o, 'autocannon');
  const perConnection = new Map<unknown, number>();
  return new Promise((resolve, reject) => {
    const instance = autocannon(
      {
        url: o.base,
        connections: o.connections,
        duration: o.seconds,
        timeout: 30,
        ...(o.overallRate ? { overallRate: o.overallRate } : {}),
        requests: seq.map(({ method, path, headers, body }) => ({
          method: method as 'GET',
          path,
          ...(headers ? { headers } : {}),
          ...(body === undefined ? {} : { body }),
        })),
      },
      (err, result) => {
        if (err) return reject(err);
        stats.seconds = result.duration;
        stats.errors = result.errors;
        resolve(stats);
      },
    );
    instance.on('response', (client, status, bytes, ms) => {
      // Each connection walks the sequence in order: count which request this answer was for.
      const i = perConnection.get(client) ?? 0;
      perConnection.set(client, i + 1);
      record(stats, status, bytes, ms, seq[i % seq.length]!.bytes);
    });
  });
}

/** `connections` loops, each sending the sequence in turn until the time is up (in-flight requests finish). */
async function loadHttp(o: LoadOptions, seq: (Request & { bytes: number })[]): Promise<Stats> {
  const stats = emptyStats(o, 'node:http');
  const via = agent(o.connections);
  const t0 = performance.now();
  const end = t0 + o.seconds * 1000;
  await Promise.all(
    Array.from({ length: o.connections }, async () => {
      for (let i = 0; performance.now() < end; i++) {
        const r = seq[i % seq.length]!;
        try {
          const a = await send(o.base, r, via);
          record(stats, a.status, a.bytes, a.ms, r.bytes);
        } catch {
          stats.errors++;
        }
      }
    }),
  );
  stats.seconds = (performance.now() - t0) / 1000;
  via.destroy();
  return stats;
}

function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

const ms = (v: number) => (Number.isNaN(v) ? '—' : v < 10 ? v.toFixed(2) : v.toFixed(1));

function summary(s: Stats, peakRss?: number) {
  const sorted = [...s.latencies].sort((a, b) => a - b);
  const ok = s.latencies.length;
  const other = Object.entries(s.statuses)
    .filter(([code]) => !code.startsWith('2'))
    .map(([code, n]) => `${code}×${n}`);
  return {
    case: s.label,
    client: s.client,
    conns: s.connections,
    'req/s': (ok / s.seconds).toFixed(ok / s.seconds < 100 ? 1 : 0),
    'p50 ms': ms(percentile(sorted, 0.5)),
    'p99 ms': ms(percentile(sorted, 0.99)),
    'MB/s in': (s.requestBytes / s.seconds / MB).toFixed(1),
    'MB/s out': (s.responseBytes / s.seconds / MB).toFixed(1),
    'non-2xx / errors': `${other.join(' ') || '0'} / ${s.errors}`,
    'server peak RSS': peakRss === undefined ? '—' : mb(peakRss),
  };
}

/** Forward then backward of one conv request, sequentially; the median of the pairs' latencies. */
async function pairLatency(server: ServerProcess, fw: Payload, bw: Payload, seconds: number) {
  const via = agent(1);
  const once = async () => {
    const t0 = performance.now();
    for (const p of [fw, bw]) {
      const a = await send(server.url, p, via);
      if (a.status !== 200) throw new Error(`${p.name}: status ${a.status}`);
    }
    return performance.now() - t0;
  };
  for (let i = 0; i < 2; i++) await once();
  const times: number[] = [];
  const end = performance.now() + seconds * 1000;
  while (times.length < 3 || (performance.now() < end && times.length < 100)) times.push(await once());
  via.destroy();
  times.sort((a, b) => a - b);
  return { median: percentile(times, 0.5), n: times.length };
}

if (!process.argv.includes('--no-build')) build();

const small = { fw: payload('batch_norm', 'forward', [32, 64], 'float32', 'json') };
const cases = {
  smallFw: small.fw,
  smallBw: payload('batch_norm', 'backward', [32, 64], 'float32', 'json'),
  wideJson: payload('batch_norm', 'forward', [256, 1024], 'float32', 'json'),
  wideSt: payload('batch_norm', 'forward', [256, 1024], 'float32', 'safetensors'),
  convFw: payload('batch_norm', 'forward', [32, 64, 56, 56], 'float32', 'safetensors'),
  convBw: payload('batch_norm', 'backward', [32, 64, 56, 56], 'float32', 'safetensors'),
};
const echo: Payload = { ...small.fw, name: 'bare echo', path: '/echo' };

const logs: { name: string; lines: string[] }[] = [];
const service = await startService();
logs.push({ name: service.name, lines: service.logs });
const rows: ReturnType<typeof summary>[] = [];
const memRows: Record<string, string>[] = [];
let bareRatio = '';
let afterLoad = '';
let healthRows: Record<string, string | number>[] = [];

try {
  // Peak RSS first, on a fresh process: the high-water mark is reset to the current RSS,
  // then one request is answered, and the mark read again.
  for (const p of [cases.convFw, cases.convBw]) {
    const before = memoryOf(service.pid);
    const reset = resetPeak(service.pid);
    const base = reset ? memoryOf(service.pid).hwm : before.hwm;
    await check(service.url, p);
    const after = memoryOf(service.pid);
    const delta = after.hwm - base;
    memRows.push({
      request: p.name,
      body: mb(p.bytes),
      'RSS before': mb(before.rss),
      'peak before': mb(base) + (reset ? '' : ' (not reset)'),
      'peak after': mb(after.hwm),
      'peak − before': mb(delta),
      '÷ body': `${(delta / p.bytes).toFixed(2)}×`,
      'target ≤ 4×': delta / p.bytes <= 4 ? 'ok' : 'MISSED',
    });
  }

  for (const p of Object.values(cases)) await check(service.url, p);
  const plan: [Payload, number, number][] = [
    [cases.smallFw, 10, SECONDS],
    [cases.smallBw, 10, SECONDS],
    [cases.wideJson, 4, SECONDS],
    [cases.wideSt, 4, SECONDS],
    [cases.convFw, 2, HEAVY_SECONDS],
    [cases.convBw, 2, HEAVY_SECONDS],
  ];
  const byName = new Map<string, Stats>();
  for (const [p, connections, seconds] of plan) {
    console.error(`load: ${p.name} …`);
    // The server's peak RSS during this phase alone (reset first; '—' where the kernel refuses).
    const reset = resetPeak(service.pid);
    const s = await load({ label: p.name, base: service.url, requests: [p], connections, seconds });
    byName.set(p.name, s);
    rows.push(summary(s, reset ? memoryOf(service.pid).hwm : undefined));
  }

  const bare = await startBare();
  logs.push({ name: bare.name, lines: bare.logs });
  try {
    await check(bare.url, echo);
    console.error('load: bare fastify echo …');
    const s = await load({
      label: 'bare fastify echo (same JSON body)',
      base: bare.url,
      requests: [echo],
      connections: 10,
      seconds: SECONDS,
    });
    rows.push(summary(s));
    const ours = byName.get(cases.smallFw.name)!.latencies.length / byName.get(cases.smallFw.name)!.seconds;
    const theirs = s.latencies.length / s.seconds;
    const pct = (100 * ours) / theirs;
    bareRatio = `[32,64] JSON forward: ${ours.toFixed(0)} req/s = ${pct.toFixed(0)}% of bare Fastify's ${theirs.toFixed(0)} req/s (target ≥ 50%: ${pct >= 50 ? 'ok' : 'MISSED'})`;
  } finally {
    await bare.stop();
  }

  console.error('/health, idle then under load …');
  resetPeak(service.pid);
  const probe = { method: 'GET' as const, path: '/health' };
  const idle = await load({
    label: '/health idle',
    base: service.url,
    requests: probe,
    connections: 1,
    seconds: 2,
    overallRate: 100,
  });
  const [busy, heavy] = await Promise.all([
    load({
      label: '/health under load',
      base: service.url,
      requests: probe,
      connections: 1,
      seconds: HEAVY_SECONDS,
      overallRate: 100,
    }),
    load({
      label: 'conv safetensors fw+bw',
      base: service.url,
      requests: [cases.convFw, cases.convBw],
      connections: 2,
      seconds: HEAVY_SECONDS,
    }),
  ]);
  healthRows = [idle, busy].map((s) => {
    const sorted = [...s.latencies].sort((a, b) => a - b);
    const p99 = percentile(sorted, 0.99);
    return {
      '/health': s.label,
      probes: s.latencies.length,
      'p50 ms': ms(percentile(sorted, 0.5)),
      'p99 ms': ms(p99),
      'max ms': ms(sorted.at(-1) ?? Number.NaN),
      'target p99 < 10 ms': p99 < 10 ? 'ok' : 'MISSED',
      meanwhile: s === busy ? `${summary(heavy)['req/s']} conv fw/bw req/s, 2 conns` : 'nothing',
    };
  });
  const now = memoryOf(service.pid);
  afterLoad = `server RSS after all the load phases above: ${mb(now.rss)}, peak ${mb(now.hwm)} (during the /health phases)`;
} finally {
  await service.stop();
}

// Split: one request at a time, so only splitting it across workers can make WORKERS=2 faster.
// With SPLIT_MIN unset the build's default threshold applies; a third server forces the split
// (SPLIT_MIN=65536) to show what it would give.
const splitRuns: { workers: number; env: NodeJS.ProcessEnv; label: string }[] = [
  { workers: 1, env: {}, label: 'WORKERS=1' },
  { workers: 2, env: {}, label: 'WORKERS=2' },
];
if (process.env.SPLIT_MIN === undefined) {
  splitRuns.push({ workers: 2, env: { SPLIT_MIN: '65536' }, label: 'WORKERS=2, SPLIT_MIN=65536' });
}
const split: Record<string, string>[] = [];
const latency: number[] = [];
for (const run of splitRuns) {
  const s = await startService(run.workers, run.env);
  logs.push({ name: `normserve (${run.label})`, lines: s.logs });
  try {
    console.error(`split: ${run.label} …`);
    const r = await pairLatency(s, cases.convFw, cases.convBw, SECONDS);
    latency.push(r.median);
    split.push({
      server: run.label,
      pairs: String(r.n),
      'fw+bw median ms': ms(r.median),
      'speedup vs WORKERS=1': `${(latency[0]! / r.median).toFixed(2)}×`,
    });
  } finally {
    await s.stop();
  }
}
const speedup = latency[0]! / latency[1]!;

console.log(`HTTP, normserve ${service.name}, float32 batch_norm, loopback; latencies of 2xx answers`);
console.table(rows);
console.log(bareRatio);
console.log('\nPeak RSS of the server process for one [32,64,56,56] safetensors request (fresh process)');
console.table(memRows);
console.log(afterLoad);
console.log(
  `\n/health latency (100 probes/s), idle and while [32,64,56,56] safetensors requests are computed`,
);
console.table(healthRows);
console.log(
  `\n[32,64,56,56] safetensors forward + backward, one request at a time (SPLIT_MIN=${process.env.SPLIT_MIN ?? "the build's default"})`,
);
console.table(split);
console.log(
  `speedup WORKERS=2 vs 1: ${speedup.toFixed(2)}× (target ≥ 1.6×: ${speedup >= 1.6 ? 'ok' : 'MISSED'})`,
);
for (const { name, lines } of logs) {
  const { errors, other } = errorLines(lines);
  console.log(
    `${name}: ${lines.length} lines logged (LOG_LEVEL=warn): ${errors.length} errors, ${other.length} not JSON logs`,
  );
  for (const line of [...errors.slice(0, 3), ...other.slice(0, 3)]) console.log(`  ${line.slice(0, 300)}`);
}
