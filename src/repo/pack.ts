import { Sealer } from './crypto.js';
import { IntegrityError } from './errors.js';
import { BlobType, ID_BYTES } from './format.js';

/**
 * Pack objects: many blobs appended, then a sealed trailer that lists them, then
 * the sealed trailer's length as a little-endian u32.
 *
 *   pack    := blob* sealed(trailer) u32le(len(sealed(trailer)))
 *   trailer := "PLT1" u32le(count) entry*
 *   entry   := u8(type) id[32] u32le(offset) u32le(length) u32le(rawLength)
 *
 * offset/length locate the stored (sealed, compressed) blob in the pack;
 * rawLength is the plaintext length. A pack is named by the keyed BLAKE3 of all
 * its bytes, so a pack can be checked against its name without any index.
 */
export interface PackEntry {
  type: BlobType;
  id: Buffer;
  offset: number;
  length: number;
  rawLength: number;
}

const TRAILER_MAGIC = Buffer.from('PLT1');
const ENTRY_BYTES = 1 + ID_BYTES + 12;

export function encodeTrailer(entries: PackEntry[], sealer: Sealer): Buffer {
  const plain = Buffer.allocUnsafe(8 + entries.length * ENTRY_BYTES);
  TRAILER_MAGIC.copy(plain, 0);
  plain.writeUInt32LE(entries.length, 4);
  let o = 8;
  for (const e of entries) {
    plain.writeUInt8(e.type, o);
    e.id.copy(plain, o + 1);
    plain.writeUInt32LE(e.offset, o + 1 + ID_BYTES);
    plain.writeUInt32LE(e.length, o + 5 + ID_BYTES);
    plain.writeUInt32LE(e.rawLength, o + 9 + ID_BYTES);
    o += ENTRY_BYTES;
  }
  const sealed = sealer.seal([plain]);
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32LE(sealed.length, 0);
  return Buffer.concat([sealed, len]);
}

/** Length of the sealed trailer, from the pack's last 4 bytes. */
export function trailerLength(tail4: Buffer): number {
  return tail4.readUInt32LE(0);
}

export function decodeTrailer(sealed: Buffer, sealer: Sealer, packSize: number, what: string): PackEntry[] {
  const plain = sealer.open(sealed, `${what} trailer`);
  if (plain.length < 8 || !plain.subarray(0, 4).equals(TRAILER_MAGIC)) throw new IntegrityError(`${what}: bad trailer`);
  const count = plain.readUInt32LE(4);
  if (plain.length !== 8 + count * ENTRY_BYTES) throw new IntegrityError(`${what}: trailer length does not match its count`);
  const out: PackEntry[] = [];
  const dataEnd = packSize - sealed.length - 4;
  for (let i = 0, o = 8; i < count; i++, o += ENTRY_BYTES) {
    const e: PackEntry = {
      type: plain.readUInt8(o) as BlobType,
      id: Buffer.from(plain.subarray(o + 1, o + 1 + ID_BYTES)),
      offset: plain.readUInt32LE(o + 1 + ID_BYTES),
      length: plain.readUInt32LE(o + 5 + ID_BYTES),
      rawLength: plain.readUInt32LE(o + 9 + ID_BYTES),
    };
    if (e.offset + e.length > dataEnd) throw new IntegrityError(`${what}: trailer entry ${i} points past the blobs`);
    out.push(e);
  }
  return out;
}
