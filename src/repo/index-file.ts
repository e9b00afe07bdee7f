import { SealFormat } from './crypto.js';
import { IntegrityError } from './errors.js';
import { AD, BlobType, ID_BYTES } from './format.js';
import { RepoSealer } from './repo-sealer.js';

/**
 * Index files (`index/<id>`): which pack holds which blob.
 *
 *   version 1: seal1( "PLI1" u32le(count) entry1* )
 *     entry1 := id[32] u8(type) packId[32] u32le(offset) u32le(length) u32le(rawLength)   (77 bytes)
 *   version 2: seal2( "PLI2" u32le(count) entry2*, AD = "pilotlight v2 index\0" + name )
 *     entry2 := entry1 u8(seal format of the blob: 1 or 2)                                 (78 bytes)
 *
 * The name is `index/` + hex of the keyed BLAKE3 of the plaintext; readers check it,
 * so an index file copied or moved to another name is an integrity error naming it.
 * Index files are only added (and replaced by prune); they can always be rebuilt
 * from the pack trailers.
 */
export interface IndexEntry {
  id: Buffer;
  type: BlobType;
  packId: Buffer;
  offset: number;
  length: number;
  rawLength: number;
  /** Seal format of the stored blob (1 in version 1 packs, 2 in version 2 packs). */
  seal: SealFormat;
}

const MAGIC1 = Buffer.from('PLI1');
const MAGIC2 = Buffer.from('PLI2');
/** Version 1 entry (no seal byte). */
export const INDEX_ENTRY_BYTES_V1 = ID_BYTES + 1 + ID_BYTES + 12;
export const INDEX_ENTRY_BYTES = INDEX_ENTRY_BYTES_V1 + 1;

export function encodeIndexPlain(entries: IndexEntry[], version: number): Buffer {
  const v2 = version >= 2;
  const stride = v2 ? INDEX_ENTRY_BYTES : INDEX_ENTRY_BYTES_V1;
  const buf = Buffer.allocUnsafe(8 + entries.length * stride);
  (v2 ? MAGIC2 : MAGIC1).copy(buf, 0);
  buf.writeUInt32LE(entries.length, 4);
  let o = 8;
  for (const e of entries) {
    if (!v2 && e.seal !== 1) throw new Error('a version 1 index file can only list seal format 1 blobs');
    e.id.copy(buf, o);
    encodeLocation(e, buf, o + ID_BYTES, v2);
    o += stride;
  }
  return buf;
}

/** The sealed object and its name for a list of entries. */
export function encodeIndexFile(entries: IndexEntry[], sealer: RepoSealer, prefix: string): { name: string; bytes: Buffer } {
  const plain = encodeIndexPlain(entries, sealer.version);
  const name = `${prefix}${sealer.hasher.hash(plain).toString('hex')}`;
  return { name, bytes: sealer.seal([plain], AD.index(name)) };
}

/** Opens, parses and checks an index file against its name (`what` is the object name). */
export function decodeIndex(sealed: Buffer, sealer: RepoSealer, what: string): IndexEntry[] {
  const { plain, format } = sealer.openEither(sealed, AD.index(what), what);
  const magic = plain.subarray(0, 4);
  const v2 = format === 2 && magic.equals(MAGIC2);
  if (plain.length < 8 || !(v2 || (format === 1 && magic.equals(MAGIC1)) || (!sealer.encrypted && magic.equals(MAGIC1)))) {
    throw new IntegrityError(`${what}: not an index file`);
  }
  const expected = what.slice(what.lastIndexOf('/') + 1);
  if (sealer.hasher.hash(plain).toString('hex') !== expected) {
    throw new IntegrityError(`${what}: content does not match its name (an index file was copied or moved here)`);
  }
  const stride = v2 ? INDEX_ENTRY_BYTES : INDEX_ENTRY_BYTES_V1;
  const count = plain.readUInt32LE(4);
  if (plain.length !== 8 + count * stride) throw new IntegrityError(`${what}: length does not match count`);
  const out: IndexEntry[] = [];
  for (let i = 0, o = 8; i < count; i++, o += stride) {
    const loc = decodeLocation(plain, o + ID_BYTES, v2 ? undefined : 1);
    if (loc.seal !== 1 && loc.seal !== 2) throw new IntegrityError(`${what}: entry ${i} has unknown seal format ${loc.seal}`);
    out.push({ id: Buffer.from(plain.subarray(o, o + ID_BYTES)), ...loc });
  }
  return out;
}

/** The part of an entry after its id (46 bytes with the seal byte): also the value format of the local cache. */
export const LOCATION_BYTES = 1 + ID_BYTES + 12 + 1;

export function encodeLocation(e: Omit<IndexEntry, 'id'>, buf = Buffer.allocUnsafe(LOCATION_BYTES), o = 0, withSeal = true): Buffer {
  buf.writeUInt8(e.type, o);
  e.packId.copy(buf, o + 1);
  buf.writeUInt32LE(e.offset, o + 1 + ID_BYTES);
  buf.writeUInt32LE(e.length, o + 5 + ID_BYTES);
  buf.writeUInt32LE(e.rawLength, o + 9 + ID_BYTES);
  if (withSeal) buf.writeUInt8(e.seal, o + 13 + ID_BYTES);
  return buf;
}

/**
 * Decodes a location. `seal` given: the entry has no seal byte (version 1). Not
 * given: the seal byte follows when the buffer holds it, else format 1 (a local
 * cache written before format 2 holds 45-byte values, all of version 1 packs).
 */
export function decodeLocation(buf: Buffer, o = 0, seal?: SealFormat): Omit<IndexEntry, 'id'> {
  return {
    type: buf.readUInt8(o) as BlobType,
    packId: Buffer.from(buf.subarray(o + 1, o + 1 + ID_BYTES)),
    offset: buf.readUInt32LE(o + 1 + ID_BYTES),
    length: buf.readUInt32LE(o + 5 + ID_BYTES),
    rawLength: buf.readUInt32LE(o + 9 + ID_BYTES),
    seal: seal ?? (buf.length >= o + LOCATION_BYTES ? (buf.readUInt8(o + 13 + ID_BYTES) as SealFormat) : 1),
  };
}
