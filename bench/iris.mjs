/**
 * Round-trip latency of one small real request: the Iris measurements ([150, 4]) through
 * POST /forward, 200 times in sequence, against a running service.
 *
 *   npm start &   then   node bench/iris.mjs [http://127.0.0.1:3000]
 */
import { readFileSync } from 'node:fs';

const base = process.argv[2] ?? 'http://127.0.0.1:3000';
const csv = readFileSync(new URL('../examples/iris.csv', import.meta.url), 'utf8');
const rows = csv
  .trim()
  .split('\n')
  .slice(1)
  .map((line) => line.split(',').slice(0, 4).map(Number));
const body = JSON.stringify({ x: rows });
const ms = [];
for (let i = 0; i < 220; i++) {
  const t0 = performance.now();
  const r = await fetch(`${base}/forward`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body,
  });
  await r.json();
  if (i >= 20) ms.push(performance.now() - t0); // the first 20 warm up the client and the server
}
ms.sort((a, b) => a - b);
const at = (q) => ms[Math.min(ms.length - 1, Math.floor(q * ms.length))].toFixed(2);
console.log(
  `Iris [150, 4] POST /forward, ${ms.length} sequential round trips: p50 ${at(0.5)} ms, p99 ${at(0.99)} ms`,
);
