import type { FloatArray } from './tensor.js';

/**
 * The safetensors format (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes: header length n, u64 little-endian][n bytes: JSON header][raw data]
 *
 * header = { name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": { key: string } },
 * offsets relative to the start of the raw data. Only F32 and F64 tensors are
 * accepted; data is little-endian (as every platform Node runs on).
 *
 * Decoding makes each tensor a view on the request body when its offset is
 * aligned, else one copy; nothing is copied twice.
 */
export type SafeDType = 'F32' | 'F64';

export interface SafeTensor {
  dtype: SafeDType;
  shape: number[];
  data: FloatArray;
}

export interface SafeFile {
  tensors: Record<string, SafeTensor>;
  metadata: Record<string, string>;
}

export class SafetensorsError extends Error {
  constructor(
    /** the tensor or header part at fault: "header", "__metadata__" or a tensor's name */
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

const BYTES: Record<SafeDType, number> = { F32: 4, F64: 8 };

/** Largest header accepted, as the reference implementation does (100 MB). */
const MAX_HEADER = 100_000_000;

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * @param exclusive true when `body`'s memory belongs to this request alone (a body read into
 *   shared memory): tensors are then views on it where their offset is aligned. False for
 *   memory that may be reused (Node's Buffer pool): every tensor is copied out.
 */
export function decodeSafetensors(body: Uint8Array, exclusive: boolean): SafeFile {
  if (body.byteLength < 8)
    throw new SafetensorsError(
      'header',
      `body of ${body.byteLength} bytes is shorter than the 8-byte header length`,
    );
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(Math.min(MAX_HEADER, body.byteLength - 8))) {
    throw new SafetensorsError(
      'header',
      `header length ${n} exceeds the ${body.byteLength - 8} bytes that follow it`,
    );
  }
  const headerLen = Number(n);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body.subarray(8, 8 + headerLen)));
  } catch {
    throw new SafetensorsError('header', 'header is not valid UTF-8 JSON');
  }
  if (!isRecord(header)) throw new SafetensorsError('header', 'header must be a JSON object');
  const dataStart = 8 + headerLen;
  const dataLen = body.byteLength - dataStart;

  const metadata: Record<string, string> = Object.create(null);
  const rawMeta = header.__metadata__;
  if (rawMeta !== undefined) {
    if (!isRecord(rawMeta)) throw new SafetensorsError('__metadata__', 'must be an object of strings');
    for (const [k, v] of Object.entries(rawMeta)) {
      if (typeof v !== 'string')
        throw new SafetensorsError(`__metadata__.${k}`, 'metadata values must be strings');
      metadata[k] = v;
    }
  }

  const spans: { name: string; begin: number; end: number }[] = [];
  // No prototype: a tensor named "__proto__" is a tensor like any other, not a prototype.
  const tensors: Record<string, SafeTensor> = Object.create(null);
  for (const [name, info] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    if (!isRecord(info))
      throw new SafetensorsError(name, 'tensor entry must be an object {dtype, shape, data_offsets}');
    const { dtype, shape, data_offsets: offsets } = info;
    if (dtype !== 'F32' && dtype !== 'F64') {
      throw new SafetensorsError(name, `unsupported dtype ${JSON.stringify(dtype)}; expected "F32" or "F64"`);
    }
    if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0)) {
      throw new SafetensorsError(name, 'shape must be an array of non-negative integers');
    }
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0) ||
      offsets[0] > offsets[1]
    ) {
      throw new SafetensorsError(name, 'data_offsets must be [begin, end] with 0 ≤ begin ≤ end');
    }
    const [begin, end] = offsets as [number, number];
    if (end > dataLen)
      throw new SafetensorsError(name, `data_offsets [${begin}, ${end}] run past the ${dataLen} data bytes`);
    let count = 1;
    for (const d of shape as number[]) count *= d;
    if (!Number.isSafeInteger(count) || count * BYTES[dtype] !== end - begin) {
      throw new SafetensorsError(
        name,
        `shape [${(shape as number[]).join(', ')}] of ${dtype} needs ${count * BYTES[dtype]} bytes, data_offsets give ${end - begin}`,
      );
    }
    spans.push({ name, begin, end });
    tensors[name] = {
      dtype,
      shape: shape as number[],
      data: view32or64(body, dataStart + begin, count, dtype, exclusive),
    };
  }
  // Empty tensors occupy no bytes and overlap nothing.
  const filled = spans.filter((sp) => sp.end > sp.begin).sort((p, q) => p.begin - q.begin);
  for (let i = 1; i < filled.length; i++) {
    if (filled[i]!.begin < filled[i - 1]!.end) {
      throw new SafetensorsError(filled[i]!.name, `data overlaps tensor "${filled[i - 1]!.name}"`);
    }
  }
  return { tensors, metadata };
}

function view32or64(
  body: Uint8Array,
  at: number,
  count: number,
  dtype: SafeDType,
  exclusive: boolean,
): FloatArray {
  const Ctor = dtype === 'F32' ? Float32Array : Float64Array;
  const offset = body.byteOffset + at;
  if (exclusive && offset % Ctor.BYTES_PER_ELEMENT === 0)
    return new Ctor(body.buffer as ArrayBuffer, offset, count);
  // Unaligned or pooled: one copy into a buffer of its own.
  const out = new Ctor(count);
  new Uint8Array(out.buffer).set(body.subarray(at, at + count * Ctor.BYTES_PER_ELEMENT));
  return out;
}

/**
 * Encodes tensors and string metadata as the pieces of one safetensors file: the
 * length and header (padded with spaces so the data starts 8-byte aligned), then
 * each tensor's bytes as a view on its own memory — nothing is copied, so a large
 * result goes to the socket from where the kernel wrote it.
 */
export function encodeSafetensorsChunks(
  tensors: Record<string, { shape: readonly number[]; data: FloatArray }>,
  metadata: Record<string, string> = {},
): { chunks: Uint8Array[]; length: number } {
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  const entries = Object.entries(tensors);
  for (const [name, t] of entries) {
    const dtype = t.data instanceof Float32Array ? 'F32' : 'F64';
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.alloc(8 + Buffer.byteLength(json));
  head.writeBigUInt64LE(BigInt(head.length - 8), 0);
  head.write(json, 8);
  const chunks: Uint8Array[] = [head];
  for (const [, t] of entries) chunks.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return { chunks, length: head.length + offset };
}

/** The same file in one Buffer (for clients and tests). */
export function encodeSafetensors(
  tensors: Record<string, { shape: readonly number[]; data: FloatArray }>,
  metadata: Record<string, string> = {},
): Buffer {
  return Buffer.concat(encodeSafetensorsChunks(tensors, metadata).chunks);
}
