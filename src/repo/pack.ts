import { SealFormat } from './crypto.js';
import { IntegrityError } from './errors.js';
import { AD, BlobType, ID_BYTES } from './format.js';
import { RepoSealer } from './repo-sealer.js';

/**
 * Pack objects: many blobs appended, then a sealed trailer that lists them.
 *
 *   version 1: pack := blob* seal1(trailer1) u32le(len(seal1(trailer1)))
 *              trailer1 := "PLT1" u32le(count) entry*
 *   version 2: pack := blob* seal2(trailer2, AD) u32le(len(seal2(trailer2))) "PLP2"
 *              trailer2 := "PLT2" u32le(count) entry*,  AD = "pilotlight v2 trailer\0" u8(type)
 *   entry := u8(type) id[32] u32le(offset) u32le(length) u32le(rawLength)   (45 bytes)
 *
 * Every blob of a pack has the pack's seal format. offset/length locate the stored
 * (sealed, compressed) blob in the pack; rawLength is the plaintext length. A pack
 * is named by the keyed BLAKE3 of all its bytes, so a pack can be checked against
 * its name without any index.
 */
export interface PackEntry {
  type: BlobType;
  id: Buffer;
  offset: number;
  length: number;
  rawLength: number;
  /** Seal format of the blob (the pack's), set when read from a trailer. */
  seal?: SealFormat;
}

const TRAILER1 = Buffer.from('PLT1');
const TRAILER2 = Buffer.from('PLT2');
/** The last 4 bytes of a version 2 pack. */
export const PACK2_MAGIC = Buffer.from('PLP2');
const ENTRY_BYTES = 1 + ID_BYTES + 12;

/** The bytes that follow the blobs: sealed trailer, its length, and (format 2) the magic. */
export function encodeTrailer(entries: PackEntry[], sealer: RepoSealer, type: BlobType): Buffer {
  const v2 = sealer.format === 2;
  const plain = Buffer.allocUnsafe(8 + entries.length * ENTRY_BYTES);
  (v2 ? TRAILER2 : TRAILER1).copy(plain, 0);
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
  const sealed = sealer.seal([plain], AD.trailer(type));
  const len = Buffer.allocUnsafe(4);
  len.writeUInt32LE(sealed.length, 0);
  return Buffer.concat(v2 ? [sealed, len, PACK2_MAGIC] : [sealed, len]);
}

/** Bytes after the sealed trailer: 4 (format 1) or 8 (format 2), from the pack's last 4 bytes. */
export function packFormat(tail4: Buffer): SealFormat {
  return tail4.equals(PACK2_MAGIC) ? 2 : 1;
}

/**
 * How many bytes from the end of a pack hold its trailer (sealed trailer, length,
 * magic), from a tail of at least 8 bytes (or the whole pack when shorter).
 */
export function trailerBytesNeeded(tail: Buffer, what: string): number {
  if (tail.length < 4) throw new IntegrityError(`${what}: too short to be a pack`);
  const after = packFormat(tail.subarray(tail.length - 4)) === 2 ? 8 : 4;
  if (tail.length < after) throw new IntegrityError(`${what}: too short to be a pack`);
  return after + tail.readUInt32LE(tail.length - after);
}

/**
 * Reads the trailer of a pack from its last bytes (`tail`, at least
 * trailerBytesNeeded of them; the whole pack will do): its entries, each with the
 * pack's seal format. `type` is the pack's kind from its name (data/ or meta/),
 * bound to a format 2 trailer.
 */
export function decodePack(
  tail: Buffer,
  sealer: RepoSealer,
  type: BlobType,
  what: string,
  packSize = tail.length,
): { entries: PackEntry[]; seal: SealFormat } {
  const need = trailerBytesNeeded(tail, what);
  if (need > packSize) throw new IntegrityError(`${what}: trailer length past the start of the pack`);
  if (need > tail.length) throw new Error(`${what}: ${need} bytes of tail needed, ${tail.length} given`);
  const seal = packFormat(tail.subarray(tail.length - 4));
  const after = seal === 2 ? 8 : 4;
  const tl = need - after;
  const sealed = tail.subarray(tail.length - need, tail.length - after);
  const plain = sealer.openFormat(seal, sealed, AD.trailer(type), `${what} trailer`);
  const magic = seal === 2 ? TRAILER2 : TRAILER1;
  if (plain.length < 8 || !plain.subarray(0, 4).equals(magic)) throw new IntegrityError(`${what}: bad trailer`);
  const count = plain.readUInt32LE(4);
  if (plain.length !== 8 + count * ENTRY_BYTES) throw new IntegrityError(`${what}: trailer length does not match its count`);
  const entries: PackEntry[] = [];
  const dataEnd = packSize - after - tl;
  for (let i = 0, o = 8; i < count; i++, o += ENTRY_BYTES) {
    const e: PackEntry = {
      type: plain.readUInt8(o) as BlobType,
      id: Buffer.from(plain.subarray(o + 1, o + 1 + ID_BYTES)),
      offset: plain.readUInt32LE(o + 1 + ID_BYTES),
      length: plain.readUInt32LE(o + 5 + ID_BYTES),
      rawLength: plain.readUInt32LE(o + 9 + ID_BYTES),
      seal,
    };
    if (e.offset + e.length > dataEnd) throw new IntegrityError(`${what}: trailer entry ${i} points past the blobs`);
    if (e.type !== type) throw new IntegrityError(`${what}: trailer entry ${i} has blob type ${e.type} in a pack of type ${type}`);
    entries.push(e);
  }
  return { entries, seal };
}
