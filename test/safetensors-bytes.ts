/**
 * safetensors bodies built by hand, byte by byte, independently of
 * `src/tensor/safetensors.ts`:
 *
 *   [u64 little-endian header length n][n bytes of JSON header][raw little-endian data]
 *
 * so that tests of the decoder (and of the routes) never rely on the encoder
 * they might share a bug with.
 */
export type RawDType = 'F32' | 'F64';

export interface RawTensor {
  dtype: RawDType;
  shape: number[];
  values: readonly number[];
}

const SIZE: Record<RawDType, number> = { F32: 4, F64: 8 };

/** `values` as little-endian F32 or F64 bytes, written with DataView (explicit byte order). */
export function leBytes(dtype: RawDType, values: readonly number[]): Uint8Array {
  const out = new Uint8Array(values.length * SIZE[dtype]);
  const dv = new DataView(out.buffer);
  values.forEach((v, i) => {
    if (dtype === 'F32') dv.setFloat32(i * 4, v, true);
    else dv.setFloat64(i * 8, v, true);
  });
  return out;
}

/**
 * `[length][header text][data]` in a Buffer that owns its whole ArrayBuffer.
 * `declaredLength` overrides the length field (to make it lie).
 */
export function assemble(headerText: string, data: Uint8Array, declaredLength?: bigint): Buffer {
  const header = new TextEncoder().encode(headerText);
  const out = Buffer.alloc(8 + header.length + data.length);
  const dv = new DataView(out.buffer, out.byteOffset, out.byteLength);
  const n = declaredLength ?? BigInt(header.length);
  // Two u32 halves, low first: the 8-byte little-endian length spelled out.
  dv.setUint32(0, Number(n & 0xffffffffn), true);
  dv.setUint32(4, Number(n >> 32n), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}

export interface PackOptions {
  /** spaces appended to the header: 'align' pads so the data starts at a multiple of 8; a number appends that many */
  pad?: 'align' | number;
}

/**
 * Lays `tensors` out one after another in the order given, writes their header
 * entries with `data_offsets` relative to the data start, and `metadata` as `__metadata__`.
 */
export function pack(
  tensors: Record<string, RawTensor>,
  metadata?: Record<string, string>,
  { pad = 'align' }: PackOptions = {},
): { body: Buffer; header: Record<string, unknown>; dataStart: number } {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const bytes = leBytes(t.dtype, t.values);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let text = JSON.stringify(header);
  const length = new TextEncoder().encode(text).length;
  text += ' '.repeat(pad === 'align' ? (8 - ((8 + length) % 8)) % 8 : pad);
  const data = new Uint8Array(offset);
  let at = 0;
  for (const c of chunks) {
    data.set(c, at);
    at += c.length;
  }
  const body = assemble(text, data);
  return { body, header, dataStart: body.length - offset };
}

/** The header of a safetensors body, parsed by hand: its length field, its JSON, where the data starts. */
export function readHeader(body: Uint8Array): {
  n: number;
  json: Record<string, unknown>;
  dataStart: number;
} {
  const dv = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const n = dv.getUint32(0, true) + dv.getUint32(4, true) * 2 ** 32;
  const json = JSON.parse(new TextDecoder().decode(body.subarray(8, 8 + n))) as Record<string, unknown>;
  return { n, json, dataStart: 8 + n };
}
