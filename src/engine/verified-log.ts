import { IntegrityError } from '../repo/errors.js';
import { AD, ID_BYTES } from '../repo/format.js';
import { Repository } from '../repo/repository.js';
import { ScratchTable } from './scratch-db.js';

/**
 * The verified log (`verified/<64 hex>`, see docs/FORMAT.md): when each pack was last
 * read whole and every blob in it verified, kept in the repository so that any host's
 * `verify --read-data --older-than D` knows what is due.
 *
 *   verified := seal( "PLV1" u32le(count) entry{count} )
 *   entry    := u8(pack type) packId[32] u8(flags) u64le(time, ms since 1970)   (42 bytes)
 *   flags    := bit 0 set: the pack was verified at `time`;
 *               clear: first seen by a scheduled run; `time` is its spread due base
 *
 * A run that read data loads every log object, merges them with what it verified
 * (per pack the latest time wins), writes the merged log for the packs that still
 * exist as new objects of at most 65,536 entries, and only then deletes the objects it
 * loaded. Two runs at once each write a superset of what they loaded and delete only
 * that, so no record is lost; the log holds about one entry per pack whatever the number
 * of runs.
 */
export const VERIFIED_PREFIX = 'verified/';
const MAGIC = Buffer.from('PLV1');
const ENTRY_BYTES = 1 + ID_BYTES + 1 + 8;
export const LOG_ENTRIES_PER_OBJECT = 65536;

export interface LogRecord {
  verified: boolean;
  time: number;
}

export function encodeRecord(r: LogRecord): Buffer {
  const v = Buffer.allocUnsafe(9);
  v.writeUInt8(r.verified ? 1 : 0, 0);
  v.writeBigUInt64LE(BigInt(Math.max(0, Math.floor(r.time))), 1);
  return v;
}

export function decodeRecord(v: Buffer): LogRecord {
  return { verified: (v.readUInt8(0) & 1) === 1, time: Number(v.readBigUInt64LE(1)) };
}

/** The later record wins; at the same time, a verification beats a first sighting. */
function newer(a: LogRecord, b: LogRecord | undefined): boolean {
  return !b || a.time > b.time || (a.time === b.time && a.verified && !b.verified);
}

/** Puts `r` for `key` (type byte + pack id) unless the table holds a newer record. */
export async function mergeRecord(table: ScratchTable, key: Buffer, r: LogRecord): Promise<void> {
  const old = await table.get(key);
  if (newer(r, old ? decodeRecord(old) : undefined)) await table.put(key, encodeRecord(r));
}

/** Loads every log object into `table` (key: type byte + pack id). Returns the names loaded. */
export async function loadVerifiedLog(repo: Repository, table: ScratchTable): Promise<string[]> {
  const names: string[] = [];
  for await (const b of repo.store.list(VERIFIED_PREFIX)) {
    const { plain } = repo.sealer.openEither(await repo.store.get(b.name), AD.verified(b.name), b.name);
    if (plain.length < 8 || !plain.subarray(0, 4).equals(MAGIC)) throw new IntegrityError(`${b.name}: not a verified log object`);
    const count = plain.readUInt32LE(4);
    if (plain.length !== 8 + count * ENTRY_BYTES) throw new IntegrityError(`${b.name}: length does not match count`);
    for (let i = 0, o = 8; i < count; i++, o += ENTRY_BYTES) {
      const key = Buffer.from(plain.subarray(o, o + 1 + ID_BYTES));
      await mergeRecord(table, key, decodeRecord(plain.subarray(o + 1 + ID_BYTES, o + ENTRY_BYTES)));
    }
    names.push(b.name);
  }
  return names;
}

/**
 * Writes the log for the packs in `packs` (records of packs that are gone are dropped),
 * then deletes `previous`. Memory: one object's entries (65,536 x 42 bytes = 2.6 MiB).
 */
export async function writeVerifiedLog(repo: Repository, log: ScratchTable, packs: ScratchTable, previous: string[]): Promise<number> {
  const written = new Set<string>();
  let batch: Buffer[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const part = batch.slice(0, LOG_ENTRIES_PER_OBJECT);
    const head = Buffer.allocUnsafe(8);
    MAGIC.copy(head, 0);
    head.writeUInt32LE(part.length, 4);
    const plain = Buffer.concat([head, ...part]);
    const name = `${VERIFIED_PREFIX}${repo.hasher.hash(plain).toString('hex')}`;
    await repo.store.put(name, repo.sealer.seal([plain], AD.verified(name)), { kind: 'metadata' });
    written.add(name);
    batch = batch.slice(part.length);
  };
  let keys: Buffer[] = [];
  let values: Buffer[] = [];
  const drain = async () => {
    const present = await packs.getMany(keys);
    keys.forEach((k, i) => {
      if (present[i] !== undefined) batch.push(Buffer.concat([k, values[i]!]));
    });
    keys = [];
    values = [];
    while (batch.length >= LOG_ENTRIES_PER_OBJECT) await flush();
  };
  for await (const [k, v] of log.iterator()) {
    keys.push(k);
    values.push(v);
    if (keys.length >= 1024) await drain();
  }
  await drain();
  while (batch.length > 0) await flush();
  for (const name of previous) if (!written.has(name)) await repo.store.delete(name);
  return written.size;
}

