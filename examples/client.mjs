#!/usr/bin/env node
/**
 * Batch norm on a [32, 64, 56, 56] float32 batch through normserve, in safetensors:
 * POST /forward and POST /backward (training mode, correction 1: the Bessel-corrected
 * variance), checked against the same formulas computed here in float64.
 *
 * usage: node examples/client.mjs [URL]     (or NORMSERVE_URL=...; default http://127.0.0.1:3000)
 *        NORMSERVE_API_KEY=... when the service has API_KEYS set
 *
 * Dependency-free: Node ≥ 20 (global fetch). safetensors is written and read by hand:
 *
 *   [8 bytes: header length n, u64 little-endian][n bytes: JSON header][raw little-endian data]
 */
import { endianness } from 'node:os';

const base = (process.argv[2] ?? process.env.NORMSERVE_URL ?? 'http://127.0.0.1:3000').replace(/\/+$/, '');
const apiKey = process.env.NORMSERVE_API_KEY;
const SAFETENSORS = 'application/x-safetensors';

// Typed arrays use the machine's byte order; safetensors is little-endian (as every platform Node ships for).
if (endianness() !== 'LE') throw new Error('this example assumes a little-endian machine');

/** {name: Float32Array | Float64Array with .shape} and {key: string} → safetensors bytes. */
function save(tensors, metadata = {}) {
  const header = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, { shape, data }] of Object.entries(tensors)) {
    const dtype = data instanceof Float32Array ? 'F32' : 'F64';
    header[name] = { dtype, shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8); // the data starts 8-byte aligned
  const text = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + text.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(text.length), true);
  out.set(text, 8);
  let at = 8 + text.length;
  for (const { data } of Object.values(tensors)) {
    out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return out;
}

/** safetensors bytes → { tensors: {name: {shape, data}}, metadata }. Aligned data is viewed, not copied. */
function load(bytes) {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const { __metadata__: metadata = {}, ...entries } = header;
  const tensors = {};
  for (const [
    name,
    {
      dtype,
      shape,
      data_offsets: [begin, end],
    },
  ] of Object.entries(entries)) {
    const Ctor = { F32: Float32Array, F64: Float64Array }[dtype];
    if (!Ctor) throw new Error(`${name}: dtype ${dtype} not handled here`);
    const at = bytes.byteOffset + 8 + n + begin;
    const count = (end - begin) / Ctor.BYTES_PER_ELEMENT;
    const data =
      at % Ctor.BYTES_PER_ELEMENT === 0
        ? new Ctor(bytes.buffer, at, count)
        : new Ctor(bytes.buffer.slice(at, at + end - begin));
    tensors[name] = { shape, data };
  }
  return { tensors, metadata };
}

async function post(path, tensors, metadata) {
  const body = save(tensors, metadata);
  const headers = { 'content-type': SAFETENSORS, accept: SAFETENSORS };
  if (apiKey) headers.authorization = `Bearer ${apiKey}`;
  const start = performance.now();
  const res = await fetch(`${base}${path}`, { method: 'POST', headers, body });
  const bytes = new Uint8Array(await res.arrayBuffer());
  const ms = performance.now() - start;
  if (!res.ok) throw new Error(`POST ${path}: HTTP ${res.status}\n${new TextDecoder().decode(bytes)}`);
  const mib = (b) => (b / 2 ** 20).toFixed(1);
  console.log(
    `POST ${base}${path}  ${mib(body.length)} MiB up, ${mib(bytes.length)} MiB down, ${ms.toFixed(0)} ms`,
  );
  return load(bytes).tensors;
}

function maxAbsError(name, got, expected) {
  let err = 0;
  let magnitude = 1;
  for (let i = 0; i < expected.length; i++) {
    err = Math.max(err, Math.abs(got.data[i] - expected[i]));
    magnitude = Math.max(magnitude, Math.abs(expected[i]));
  }
  const type = got.data instanceof Float32Array ? 'float32' : 'float64';
  const shape = `[${got.shape.join(', ')}]`;
  console.log(
    `  ${name.padEnd(7)} ${type.padEnd(8)} ${shape.padEnd(18)} max abs error ${err.toExponential(2)}`,
  );
  return err / magnitude;
}

// --- the batch: 32 images, 64 channels of 56 × 56, each channel with its own scale and offset ---
const [N, C, H, W] = [32, 64, 56, 56];
const inner = H * W;
const m = N * inner; // values per channel

/** mulberry32: a seeded uniform generator in [0, 1), so every run sends the same batch. */
function uniform(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}
const rand = uniform(2024);
const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand()); // Box–Muller

const scale = Array.from({ length: C }, () => 0.5 + 3.5 * rand());
const shift = Array.from({ length: C }, () => -3 + 6 * rand());
const x = new Float32Array(N * C * inner);
const dy = new Float32Array(N * C * inner);
for (let n = 0; n < N; n++)
  for (let c = 0; c < C; c++)
    for (let i = 0, at = (n * C + c) * inner; i < inner; i++) x[at + i] = normal() * scale[c] + shift[c];
for (let i = 0; i < dy.length; i++) dy[i] = normal();
const gamma = Float32Array.from({ length: C }, () => 0.5 + rand());
const beta = Float32Array.from({ length: C }, () => rand() - 0.5);
const eps = 1e-5;
const shape = [N, C, H, W];
const params = { op: 'batch_norm', training: 'true', correction: '1', eps: '1e-5' }; // JSON text

// --- the reference, in float64: var = Σ(x − mean)² / (m − 1), two passes per channel ---------
const start = performance.now();
const mean = new Float64Array(C);
const variance = new Float64Array(C);
const invstd = new Float64Array(C);
const dgamma = new Float64Array(C);
const dbeta = new Float64Array(C);
const y = new Float64Array(x.length);
const dx = new Float64Array(x.length);
const each = (c, f) => {
  for (let n = 0; n < N; n++) for (let i = 0, at = (n * C + c) * inner; i < inner; i++) f(at + i);
};
for (let c = 0; c < C; c++) {
  let s = 0;
  each(c, (k) => {
    s += x[k];
  });
  mean[c] = s / m;
  let q = 0;
  each(c, (k) => {
    q += (x[k] - mean[c]) ** 2;
  });
  variance[c] = q / (m - 1);
  invstd[c] = 1 / Math.sqrt(variance[c] + eps);
  let sg = 0;
  let sb = 0;
  each(c, (k) => {
    const xhat = (x[k] - mean[c]) * invstd[c];
    y[k] = gamma[c] * xhat + beta[c];
    sb += dy[k];
    sg += dy[k] * xhat;
  });
  dgamma[c] = sg;
  dbeta[c] = sb;
  each(c, (k) => {
    const xhat = (x[k] - mean[c]) * invstd[c];
    dx[k] = gamma[c] * invstd[c] * (dy[k] - sb / m - (xhat * sg) / (m - 1));
  });
}
console.log(`float64 reference in JavaScript: ${(performance.now() - start).toFixed(0)} ms`);

// --- the service: float32 x, so a float32 computation (statistics accumulated in float64) -----
console.log(`x: [${shape.join(', ')}] float32, m = ${m} values per channel, correction 1`);
const fwd = await post(
  '/forward',
  { x: { shape, data: x }, gamma: { shape: [C], data: gamma }, beta: { shape: [C], data: beta } },
  params,
);
const relative = [
  maxAbsError('y', fwd.y, y),
  maxAbsError('mean', fwd.mean, mean),
  maxAbsError('var', fwd.var, variance),
  maxAbsError('invstd', fwd.invstd, invstd),
];
const bwd = await post(
  '/backward',
  { x: { shape, data: x }, dy: { shape, data: dy }, gamma: { shape: [C], data: gamma } },
  params,
);
relative.push(
  maxAbsError('dx', bwd.dx, dx),
  maxAbsError('dgamma', bwd.dgamma, dgamma),
  maxAbsError('dbeta', bwd.dbeta, dbeta),
);

// The results are float32: y and dx (a few units) are rounded by a few 1e-7; dgamma and dbeta,
// sums over m = 100352 values that come to a few hundred, by a few 1e-5. Relative to each
// tensor's largest value that is float32's half step, 6e-8; 1e-5 would be a real disagreement.
const worst = Math.max(...relative);
console.log(`largest error relative to the reference's magnitude: ${worst.toExponential(2)}`);
if (!(worst <= 1e-5)) {
  console.error('FAIL: the service and the reference disagree');
  process.exit(1);
}
console.log('OK');
