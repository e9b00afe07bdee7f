import { Sealer } from './crypto.js';
import { IntegrityError } from './errors.js';
import { BlobType, ID_BYTES } from './format.js';

/**
 * Index files (`index/<id>`): which pack holds which blob.
 *
 *   sealed( "PLI1" u32le(count) entry* )
 *   entry := id[32] u8(type) packId[32] u32le(offset) u32le(length) u32le(rawLength)
 *
 * The object is named by the keyed BLAKE3 of its sealed bytes' plaintext. Index
 * files are only added (and replaced by prune); they can always be rebuilt from
 * the pack trailers.
 */
export interface IndexEntry {
  id: Buffer;
  type: BlobType;
  packId: Buffer;
  offset: number;
  length: number;
  rawLength: number;
}

const MAGIC = Buffer.from('PLI1');
export const INDEX_ENTRY_BYTES = ID_BYTES + 1 + ID_BYTES + 12;

export function encodeIndexPlain(entries: IndexEntry[]): Buffer {
  const buf = Buffer.allocUnsafe(8 + entries.length * INDEX_ENTRY_BYTES);
  MAGIC.copy(buf, 0);
  buf.writeUInt32LE(entries.length, 4);
  let o = 8;
  for (const e of entries) {
    e.id.copy(buf, o);
    encodeLocation(e, buf, o + ID_BYTES);
    o += INDEX_ENTRY_BYTES;
  }
  return buf;
}

export function decodeIndex(sealed: Buffer, sealer: Sealer, what: string): IndexEntry[] {
  const plain = sealer.open(sealed, what);
  if (plain.length < 8 || !plain.subarray(0, 4).equals(MAGIC)) throw new IntegrityError(`${what}: not an index file`);
  const count = plain.readUInt32LE(4);
  if (plain.length !== 8 + count * INDEX_ENTRY_BYTES) throw new IntegrityError(`${what}: length does not match count`);
  const out: IndexEntry[] = [];
  for (let i = 0, o = 8; i < count; i++, o += INDEX_ENTRY_BYTES) {
    out.push({ id: Buffer.from(plain.subarray(o, o + ID_BYTES)), ...decodeLocation(plain, o + ID_BYTES) });
  }
  return out;
}

/** The part of an entry after its id (45 bytes): also the value format of the local cache. */
export const LOCATION_BYTES = 1 + ID_BYTES + 12;

export function encodeLocation(e: Omit<IndexEntry, 'id'>, buf = Buffer.allocUnsafe(LOCATION_BYTES), o = 0): Buffer {
  buf.writeUInt8(e.type, o);
  e.packId.copy(buf, o + 1);
  buf.writeUInt32LE(e.offset, o + 1 + ID_BYTES);
  buf.writeUInt32LE(e.length, o + 5 + ID_BYTES);
  buf.writeUInt32LE(e.rawLength, o + 9 + ID_BYTES);
  return buf;
}

export function decodeLocation(buf: Buffer, o = 0): Omit<IndexEntry, 'id'> {
  return {
    type: buf.readUInt8(o) as BlobType,
    packId: Buffer.from(buf.subarray(o + 1, o + 1 + ID_BYTES)),
    offset: buf.readUInt32LE(o + 1 + ID_BYTES),
    length: buf.readUInt32LE(o + 5 + ID_BYTES),
    rawLength: buf.readUInt32LE(o + 9 + ID_BYTES),
  };
}
