import { IntegrityError } from '../repo/errors.js';
import { BlobType, DATA_PREFIX, ID_BYTES, META_PREFIX, packObjectName } from '../repo/format.js';
import { PackEntry, decodePack, trailerBytesNeeded } from '../repo/pack.js';
import { Repository } from '../repo/repository.js';
import { BatchWriter, ScratchTable } from './scratch-db.js';

/** A pack as listed: its type (from its prefix), id and size. Key in scratch tables: type byte + id. */
export interface ListedPack {
  type: BlobType;
  id: Buffer;
  size: number;
  name: string;
}

export function packKey(type: BlobType, id: Buffer): Buffer {
  return Buffer.concat([Buffer.from([type]), id]);
}

export function packFromKey(key: Buffer, value: Buffer): ListedPack {
  const type = key[0] as BlobType;
  const id = Buffer.from(key.subarray(1, 1 + ID_BYTES));
  return { type, id, size: Number(value.readBigUInt64LE(0)), name: packObjectName(type, id.toString('hex')) };
}

const PACK_NAME_RE = /^(data|meta)\/([0-9a-f]{2})\/([0-9a-f]{64})$/;

/**
 * Lists every pack into `table` (key: type byte + pack id, value: u64le size), streamed.
 * Returns the count, and the names of objects under data/ or meta/ that are not packs.
 */
export async function listPacks(repo: Repository, table: ScratchTable): Promise<{ count: number; strays: string[] }> {
  const w = new BatchWriter(table);
  let count = 0;
  const strays: string[] = [];
  for (const prefix of [DATA_PREFIX, META_PREFIX]) {
    for await (const b of repo.store.list(prefix)) {
      const m = PACK_NAME_RE.exec(b.name);
      if (!m || m[2] !== m[3]!.slice(0, 2)) {
        if (strays.length < 100) strays.push(b.name);
        continue;
      }
      const size = Buffer.allocUnsafe(8);
      size.writeBigUInt64LE(BigInt(b.size));
      await w.put(packKey(m[1] === 'data' ? BlobType.Data : BlobType.Page, Buffer.from(m[3]!, 'hex')), size);
      count++;
    }
  }
  await w.flush();
  return { count, strays };
}

/** Iterates the listed packs in key order. */
export async function* listedPacks(table: ScratchTable): AsyncIterable<ListedPack> {
  for await (const [k, v] of table.iterator()) yield packFromKey(k, v);
}

/** Bytes fetched from a pack's end to find its trailer in one request (a 16 MiB pack's trailer is ~20 KiB). */
const TAIL_GUESS = 64 * 1024;

/**
 * Reads and opens a pack's trailer with ranged reads (one request when the trailer is
 * under 64 KiB, two otherwise): the pack's own list of its blobs.
 */
export async function readTrailer(repo: Repository, pack: ListedPack): Promise<PackEntry[]> {
  if (pack.size < 4) throw new IntegrityError(`pack ${pack.name}: truncated (${pack.size} bytes)`);
  const guess = Math.min(pack.size, TAIL_GUESS);
  let tail = await repo.store.get(pack.name, { offset: pack.size - guess, length: guess });
  const need = trailerBytesNeeded(tail, `pack ${pack.name}`);
  if (need > pack.size) throw new IntegrityError(`pack ${pack.name}: trailer length past the start of the pack`);
  if (need > tail.length) tail = await repo.store.get(pack.name, { offset: pack.size - need, length: need });
  return decodePack(tail, repo.sealer, pack.type, `pack ${pack.name}`, pack.size).entries;
}

/** The same, from a pack read whole. */
export function trailerOf(repo: Repository, name: string, bytes: Buffer): PackEntry[] {
  const type = name.startsWith(META_PREFIX) ? BlobType.Page : BlobType.Data;
  return decodePack(bytes, repo.sealer, type, `pack ${name}`).entries;
}
