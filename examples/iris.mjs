#!/usr/bin/env node
/**
 * Batch norm on Fisher's Iris data through normserve: forward, backward, and a
 * finite-difference check that the two agree.
 *
 * usage: node examples/iris.mjs [URL]     (or NORMSERVE_URL=...; default http://127.0.0.1:3000)
 *        NORMSERVE_API_KEY=... when the service has API_KEYS set
 *
 * Dependency-free: Node ≥ 20 (global fetch). The CSV's origin is in examples/README.md.
 */
import { readFileSync } from 'node:fs';

const base = (process.argv[2] ?? process.env.NORMSERVE_URL ?? 'http://127.0.0.1:3000').replace(/\/+$/, '');
const apiKey = process.env.NORMSERVE_API_KEY;

async function post(path, body) {
  const headers = { 'content-type': 'application/json' };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  const res = await fetch(`${base}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${path}: HTTP ${res.status}\n${text}`);
  return JSON.parse(text);
}

// --- the data: 150 flowers × 4 measurements (cm), plus the species ---------------------------
const [header, ...lines] = readFileSync(new URL('./iris.csv', import.meta.url), 'utf8')
  .trim()
  .split(/\r?\n/);
const features = header.split(',').slice(0, 4);
const rows = lines.map((line) => line.split(','));
const x = rows.map((r) => r.slice(0, 4).map(Number)); // [N = 150, C = 4]: each measurement is a channel
const species = rows.map((r) => r[4]);
const N = x.length;

// Numbers come back as JSON numbers, or as "NaN"/"Infinity" strings: print either.
const f = (v) => (typeof v === 'number' ? v.toFixed(6) : String(v)).padStart(11);
const e = (v) => (typeof v === 'number' ? v.toExponential(3) : String(v)).padStart(11);
const showRows = (name, t, fmt, n = 5) => {
  console.log(`${name} (first ${n} of ${t.length} rows):`);
  for (let i = 0; i < n; i++) console.log(`  ${t[i].map(fmt).join(' ')}   ${species[i]}`);
};

// --- forward: standardize each measurement with batch statistics ----------------------------
// correction 1: var = Σ(x − mean)² / (N − 1), the sample variance a statistics course uses.
const common = { op: 'batch_norm', training: true, correction: 1, eps: 1e-5 };
const fwd = await post('/forward', { ...common, x });

console.log(`POST ${base}/forward  x: [${N}, ${features.length}], correction 1`);
console.log(`  ${'feature'.padEnd(14)}${'mean'.padStart(11)}${'var'.padStart(11)}${'invstd'.padStart(11)}`);
features.forEach((name, c) => {
  console.log(`  ${name.padEnd(14)}${f(fwd.mean[c])}${f(fwd.var[c])}${f(fwd.invstd[c])}`);
});
showRows('y', fwd.y, f);

// --- a gradient worth back-propagating ------------------------------------------------------
// A hand-set linear probe reads the standardized features y and scores "is it virginica?":
//   p_i = b + Σ_c w_c · y_ic,  w = [0, 0, 1/4, 1/4] (long, wide petals), b = 1/3 (a third are virginica)
// with the squared-error loss against the indicator t_i ∈ {0, 1}:
//   L = (1 / 2N) Σ_i (p_i − t_i)²,   so   dy_ic = dL/dy_ic = (p_i − t_i) · w_c / N.
// Sepal columns get dy = 0: batch norm never mixes channels, so their dx, dgamma, dbeta are 0 too.
// dbeta_c = w_c · Σ(p − t) / N is 0 up to rounding: b = 1/3 is already the best bias (Σ y = 0).
// dgamma_c > 0 says the loss falls if the petal features shrink: the probe's weights are too large.
const w = [0, 0, 0.25, 0.25];
const b = 1 / 3;
const target = species.map((s) => (s === 'virginica' ? 1 : 0));
const score = (y) => y.map((yi) => b + yi.reduce((s, v, c) => s + w[c] * v, 0));
const loss = (y) => score(y).reduce((s, p, i) => s + (p - target[i]) ** 2, 0) / (2 * N);
const residual = score(fwd.y).map((p, i) => p - target[i]);
const dy = residual.map((r) => w.map((wc) => (r * wc) / N));

// --- backward: dL/dx, dL/dgamma, dL/dbeta, reusing the forward's saved statistics ------------
const bwd = await post('/backward', { ...common, x, dy, mean: fwd.mean, invstd: fwd.invstd });

console.log(`\nprobe loss L = ${loss(fwd.y).toFixed(6)}`);
console.log(`POST ${base}/backward  dy = dL/dy, saved mean and invstd`);
console.log(`  ${'feature'.padEnd(14)}${'dgamma'.padStart(11)}${'dbeta'.padStart(11)}`);
features.forEach((name, c) => {
  console.log(`  ${name.padEnd(14)}${e(bwd.dgamma[c])}${e(bwd.dbeta[c])}`);
});
showRows('dx', bwd.dx, e);

// --- check: dx is the gradient of the forward pass ------------------------------------------
// Directional derivative along a fixed direction v, by central differences through /forward:
//   (L(x + h·v) − L(x − h·v)) / 2h  ≈  Σ dx · v
const h = 1e-4;
const v = x.map((xi, i) => xi.map((_, c) => Math.sin(1 + i * 4 + c)));
const shifted = async (sign) => {
  const xs = x.map((xi, i) => xi.map((xic, c) => xic + sign * h * v[i][c]));
  return loss((await post('/forward', { ...common, x: xs })).y);
};
const numeric = ((await shifted(1)) - (await shifted(-1))) / (2 * h);
const analytic = bwd.dx.reduce((s, dxi, i) => s + dxi.reduce((t, g, c) => t + g * v[i][c], 0), 0);
const rel = Math.abs(numeric - analytic) / Math.abs(analytic);
console.log(`\nfinite-difference check along a fixed direction v (h = ${h}):`);
console.log(`  Σ dx·v = ${analytic.toExponential(9)}   (L(x+hv) − L(x−hv))/2h = ${numeric.toExponential(9)}`);
console.log(`  relative difference ${rel.toExponential(2)}`);
