import { BlobType, ID_BYTES, packObjectName } from '../../repo/format.js';
import { decodeIndex } from '../../repo/index-file.js';
import { Repository } from '../../repo/repository.js';
import { ListingError } from './listing.js';
import { entryOf, entryValue } from './mark.js';
import { BatchWriter, GcWorkspace, PRESENT } from './workspace.js';

export enum Decision {
  Keep = 1,
  Delete = 2,
  Repack = 3,
}

export interface IndexFileInfo {
  name: string;
  settled: boolean;
  entries: number;
}

function u32be(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n);
  return b;
}

/**
 * Reads every listed index file into the workspace, checking that each pack it
 * names was listed (an indexed pack missing from the listing means the listing
 * is short, or the repository is damaged: either way, stop). Packs named by an
 * unsettled index file (a running backup may have written it) are protected.
 */
export async function loadIndex(repo: Repository, ws: GcWorkspace, files: IndexFileInfo[], from = 0): Promise<number> {
  let total = 0;
  const w = new BatchWriter(ws.db, 8192);
  for (let f = from; f < files.length; f++) {
    const info = files[f]!;
    const entries = decodeIndex(await repo.store.get(info.name), repo.sealer, info.name);
    info.entries = entries.length;
    total += entries.length;
    const packs = new Map<string, BlobType>();
    for (const e of entries) {
      packs.set(e.packId.toString('hex'), e.type);
      await w.put(ws.entries, Buffer.concat([e.id, e.packId]), entryValue(e, f));
    }
    for (const [hex, type] of packs) {
      const name = packObjectName(type, hex);
      // files written after the listing (loaded late, never settled) name packs written after it too
      if (info.settled && (await ws.packs.get(Buffer.from(name))) === undefined) {
        throw new ListingError(`index file ${info.name} lists pack ${name}, which the listing of packs did not return (a short listing, or a missing pack: run 'pilotlight verify')`);
      }
      const id = Buffer.from(hex, 'hex');
      if ((await ws.indexed.get(id)) === undefined) await w.put(ws.indexed, id, u32be(f));
      await w.put(ws.filePacks, Buffer.concat([u32be(f), id]), PRESENT);
      if (!info.settled) await w.put(ws.protectedPacks, id, PRESENT);
    }
    await w.flush();
  }
  return total;
}

export interface Accounting {
  liveBlobs: number;
  liveBytes: number;
  indexedBytes: number;
}

/**
 * Merge-joins the index entries with the mark set (both sorted by id): the first
 * location of a marked id counts as live, every other entry as unused. A marked
 * id with no entry at all means a snapshot references a blob no index file
 * holds: stop (damage or a short index listing).
 */
export async function account(ws: GcWorkspace): Promise<Accounting> {
  const acc: Accounting = { liveBlobs: 0, liveBytes: 0, indexedBytes: 0 };
  const marks = ws.marks.keys()[Symbol.asyncIterator]();
  let mark = await marks.next();
  const orphanMark = (id: Buffer) =>
    new ListingError(`a snapshot references blob ${id.toString('hex')}, which no listed index file holds (a short index listing or a damaged repository: run 'pilotlight verify')`);
  const w = new BatchWriter(ws.db, 8192);
  let lastId: Buffer | null = null;
  let groupMarked = false;
  for await (const [k, v] of ws.entries.iterator()) {
    const e = entryOf(k, v);
    const first = !lastId || !lastId.equals(e.id);
    if (first) {
      if (groupMarked) mark = await marks.next(); // the previous id's mark is used up
      while (!mark.done && Buffer.compare(mark.value, e.id) < 0) throw orphanMark(mark.value);
      groupMarked = !mark.done && mark.value.equals(e.id);
      lastId = Buffer.from(e.id);
    }
    const live = groupMarked && first;
    const val = Buffer.allocUnsafe(6);
    val.writeUInt8(live ? 1 : 0, 0);
    val.writeUInt8(e.type, 1);
    val.writeUInt32LE(e.length, 2);
    await w.put(ws.perPack, Buffer.concat([e.packId, e.id]), val);
    acc.indexedBytes += e.length;
    if (live) {
      acc.liveBlobs++;
      acc.liveBytes += e.length;
    }
  }
  if (groupMarked) mark = await marks.next();
  if (!mark.done) throw orphanMark(mark.value);
  await w.flush();
  return acc;
}

export interface PackPlan {
  decisions: { keep: number; delete: number; repack: number; protected: number };
  deleteBytes: number;
  repackBytes: number;
  repackLiveBytes: number;
  orphans: { deleted: number; kept: number; bytes: number };
  condemnedPacks: string[];
}

export interface PlanOptions {
  maxUnused: number;
  maxRepackBytes: number;
  /** Whether an unindexed (orphan) pack may be deleted. */
  orphanDeletable: (name: string) => boolean;
}

/** Decides, per pack: keep, delete (nothing live) or repack (too much unused). */
export async function decide(ws: GcWorkspace, opts: PlanOptions): Promise<PackPlan> {
  const plan: PackPlan = {
    decisions: { keep: 0, delete: 0, repack: 0, protected: 0 },
    deleteBytes: 0,
    repackBytes: 0,
    repackLiveBytes: 0,
    orphans: { deleted: 0, kept: 0, bytes: 0 },
    condemnedPacks: [],
  };
  const w = new BatchWriter(ws.db);
  let cur: Buffer | null = null;
  let type = 0;
  let total = 0;
  let live = 0;
  const close = async () => {
    if (!cur) return;
    const name = packObjectName(type, cur.toString('hex'));
    const sizeBuf = await ws.packs.get(Buffer.from(name));
    const size = sizeBuf ? Number(sizeBuf.readBigUInt64LE(0)) : 0;
    let d = Decision.Keep;
    if ((await ws.protectedPacks.get(cur)) !== undefined) plan.decisions.protected++;
    else if (live === 0) d = Decision.Delete;
    else if ((total - live) / total > opts.maxUnused && plan.repackLiveBytes + live <= opts.maxRepackBytes) d = Decision.Repack;
    if (d === Decision.Keep) plan.decisions.keep++;
    else if (d === Decision.Delete) {
      plan.decisions.delete++;
      plan.deleteBytes += size;
      plan.condemnedPacks.push(name);
    } else {
      plan.decisions.repack++;
      plan.repackBytes += size;
      plan.repackLiveBytes += live;
      plan.condemnedPacks.push(name);
    }
    await w.put(ws.decisions, cur, Buffer.from([d, type]));
  };
  for await (const [k, v] of ws.perPack.iterator()) {
    const packId = k.subarray(0, ID_BYTES);
    if (!cur || !cur.equals(packId)) {
      await close();
      cur = Buffer.from(packId);
      type = v.readUInt8(1);
      total = 0;
      live = 0;
    }
    const len = v.readUInt32LE(2);
    total += len;
    if (v.readUInt8(0) === 1) live += len;
  }
  await close();
  await w.flush();
  // orphans: listed packs that no index file names
  for await (const [k, v] of ws.packs.iterator()) {
    const name = k.toString();
    const id = Buffer.from(name.slice(name.lastIndexOf('/') + 1), 'hex');
    if ((await ws.indexed.get(id)) !== undefined) continue;
    if (opts.orphanDeletable(name)) {
      plan.orphans.deleted++;
      plan.orphans.bytes += Number(v.readBigUInt64LE(0));
      plan.condemnedPacks.push(name);
    } else plan.orphans.kept++;
  }
  return plan;
}

/** Condemned ids: unmarked blobs in packs to be deleted or repacked. */
export async function* condemnedBlobIds(ws: GcWorkspace): AsyncIterable<Buffer> {
  let cur: Buffer | null = null;
  let d = Decision.Keep;
  for await (const [k, v] of ws.perPack.iterator()) {
    const packId = k.subarray(0, ID_BYTES);
    if (!cur || !cur.equals(packId)) {
      cur = Buffer.from(packId);
      d = ((await ws.decisions.get(cur)) ?? Buffer.from([Decision.Keep]))[0]!;
    }
    if (d !== Decision.Keep && v.readUInt8(0) === 0) yield Buffer.from(k.subarray(ID_BYTES));
  }
}

/** Index files to replace: settled ones naming a condemned pack, and small settled ones (merged). */
export async function supersededFiles(ws: GcWorkspace, files: IndexFileInfo[], mergeBelow: number): Promise<Set<number>> {
  const out = new Set<number>();
  for await (const k of ws.filePacks.keys()) {
    const f = k.readUInt32BE(0);
    if (out.has(f) || !files[f]!.settled) continue;
    const d = await ws.decisions.get(k.subarray(4));
    if (d && d[0] !== Decision.Keep) out.add(f);
  }
  const small = files.map((f, i) => (f.settled && f.entries < mergeBelow && !out.has(i) ? i : -1)).filter((i) => i >= 0);
  if (small.length + (out.size > 0 ? 1 : 0) >= 2) for (const i of small) out.add(i);
  return out;
}
