import { ID_BYTES, PAGE_SLOTS, isZeroId } from '../../repo/format.js';
import { IndexEntry } from '../../repo/index-file.js';
import { Repository } from '../../repo/repository.js';
import { chunkCount, levelSizes } from '../../snapshot/manifest.js';
import { SnapshotRecord } from '../../snapshot/snapshot-record.js';
import { ListingError } from './listing.js';
import { BatchWriter, GcWorkspace, PRESENT } from './workspace.js';

/** Decodes a workspace entry (key id|packId, value type/offset/length/rawLength/file/seal). */
export function entryOf(key: Buffer, value: Buffer): IndexEntry & { file: number } {
  return {
    id: key.subarray(0, ID_BYTES),
    packId: key.subarray(ID_BYTES, 2 * ID_BYTES),
    type: value.readUInt8(0),
    offset: value.readUInt32LE(1),
    length: value.readUInt32LE(5),
    rawLength: value.readUInt32LE(9),
    file: value.readUInt32LE(13),
    seal: (value.length > 17 ? value.readUInt8(17) : 1) as 1 | 2,
  };
}

export function entryValue(e: Omit<IndexEntry, 'id' | 'packId'>, file: number): Buffer {
  const v = Buffer.allocUnsafe(18);
  v.writeUInt8(e.type, 0);
  v.writeUInt32LE(e.offset, 1);
  v.writeUInt32LE(e.length, 5);
  v.writeUInt32LE(e.rawLength, 9);
  v.writeUInt32LE(file, 13);
  v.writeUInt8(e.seal, 17);
  return v;
}

/** The first index entry for an id, from the workspace (not the local cache). */
export async function firstEntry(ws: GcWorkspace, id: Buffer): Promise<(IndexEntry & { file: number }) | null> {
  const hi = Buffer.concat([id, Buffer.alloc(ID_BYTES, 0xff)]);
  for await (const [k, v] of ws.entries.iterator({ gte: id, lte: hi, limit: 1 })) return entryOf(k, v);
  return null;
}

/**
 * Marks everything a snapshot references: its manifest pages and chunk ids go
 * into the on-disk mark set. A page already marked is not read again (its whole
 * subtree is marked), so a history of incremental snapshots costs the pages
 * that differ, not snapshots x pages. Pages are located through the prune's
 * own reading of the index files, and verified against their ids.
 */
export class Marker {
  pagesRead = 0;
  private readonly w: BatchWriter;
  /** Loads index files written since the listing (a record committed meanwhile); true if it found any. */
  onMissing: (() => Promise<boolean>) | null = null;

  constructor(
    private readonly repo: Repository,
    private readonly ws: GcWorkspace,
  ) {
    this.w = new BatchWriter(ws.db, 8192);
  }

  async markRecord(r: SnapshotRecord): Promise<void> {
    for (const d of r.disks) {
      const root = Buffer.from(d.root, 'hex');
      const sizes = levelSizes(chunkCount(d.capacity, d.chunkSize));
      await this.walk(r, root, sizes.length - 1, 0, sizes, chunkCount(d.capacity, d.chunkSize));
    }
    await this.w.flush();
  }

  private async walk(r: SnapshotRecord, id: Buffer, level: number, p: number, sizes: number[], chunks: number): Promise<void> {
    if (isZeroId(id)) return;
    await this.w.flush(); // marks so far must be visible to the lookup below
    if ((await this.ws.marks.get(id)) !== undefined) return;
    let e = await firstEntry(this.ws, id);
    if (!e && this.onMissing && (await this.onMissing())) e = await firstEntry(this.ws, id);
    if (!e) {
      throw new ListingError(
        `snapshot ${r.id} (${r.vm}) references manifest page ${id.toString('hex')}, which no listed index file holds: the index listing is incomplete or the repository is damaged (run 'pilotlight verify')`,
      );
    }
    const total = level === 0 ? chunks : sizes[level - 1]!;
    const slots = Math.min(PAGE_SLOTS, total - p * PAGE_SLOTS);
    const page = await this.repo.readIndexed(e, 'manifest page');
    this.pagesRead++;
    if (page.length !== slots * ID_BYTES) throw new Error(`manifest page ${id.toString('hex')} of snapshot ${r.id} has ${page.length / ID_BYTES} ids, expected ${slots}`);
    for (let s = 0; s < slots; s++) {
      const child = page.subarray(s * ID_BYTES, (s + 1) * ID_BYTES);
      if (level === 0) {
        if (!isZeroId(child)) await this.w.put(this.ws.marks, Buffer.from(child), PRESENT);
      } else {
        await this.walk(r, Buffer.from(child), level - 1, p * PAGE_SLOTS + s, sizes, chunks);
      }
    }
    await this.w.put(this.ws.marks, Buffer.from(id), PRESENT);
  }
}
