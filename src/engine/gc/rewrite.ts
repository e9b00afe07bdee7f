import { BlobType, ID_BYTES, packObjectName } from '../../repo/format.js';
import { IndexEntry, LOCATION_BYTES, decodeLocation, encodeLocation } from '../../repo/index-file.js';
import { RepoWriter, writeIndexFile } from '../../repo/repo-writer.js';
import { Repository } from '../../repo/repository.js';
import { Decision, IndexFileInfo } from './plan.js';
import { entryOf } from './mark.js';
import { BatchWriter, GcWorkspace } from './workspace.js';

/** Entries per compacted index file (77 bytes each: about 7 MiB). */
export const ENTRIES_PER_INDEX = 100_000;

export interface RewriteReport {
  blobsCopied: number;
  bytesCopied: number;
  packsWritten: number;
  packBytesWritten: number;
  replacement: string[];
}

async function decisionOf(ws: GcWorkspace, packId: Buffer, memo: Map<string, number>): Promise<number> {
  const k = packId.toString('hex');
  let d = memo.get(k);
  if (d === undefined) {
    d = ((await ws.decisions.get(packId)) ?? Buffer.from([Decision.Keep]))[0]!;
    if (memo.size > 4096) memo.clear();
    memo.set(k, d);
  }
  return d;
}

/**
 * Copies every live blob that would not survive (all its locations are in
 * condemned packs) into new packs, read and verified against its id and
 * re-encoded, then writes compacted index files holding the entries of the
 * superseded files that point into kept packs plus the copies. Nothing is
 * deleted here: deletion comes after the epoch's .done object.
 */
export async function rewrite(repo: Repository, ws: GcWorkspace, files: IndexFileInfo[], superseded: Set<number>): Promise<RewriteReport> {
  const report: RewriteReport = { blobsCopied: 0, bytesCopied: 0, packsWritten: 0, packBytesWritten: 0, replacement: [] };
  const memo = new Map<string, number>();
  const w = new BatchWriter(ws.db, 8192);

  // 1. which live blobs need a copy, grouped by source pack
  const marks = ws.marks.keys()[Symbol.asyncIterator]();
  let mark = await marks.next();
  let group: (IndexEntry & { file: number })[] = [];
  const flushGroup = async () => {
    if (group.length === 0) return;
    const id = group[0]!.id;
    while (!mark.done && Buffer.compare(mark.value, id) < 0) mark = await marks.next();
    const live = !mark.done && mark.value.equals(id);
    if (live) {
      let survives = false;
      for (const e of group) if ((await decisionOf(ws, e.packId, memo)) === Decision.Keep) survives = true;
      if (!survives) {
        const src = group[0]!;
        const off = Buffer.allocUnsafe(4);
        off.writeUInt32BE(src.offset);
        await w.put(ws.copies, Buffer.concat([src.packId, off]), Buffer.concat([src.id, encodeLocation(src)]));
      }
    }
    group = [];
  };
  for await (const [k, v] of ws.entries.iterator()) {
    const e = entryOf(Buffer.from(k), Buffer.from(v));
    if (group.length && !group[0]!.id.equals(e.id)) await flushGroup();
    group.push(e);
  }
  await flushGroup();
  await w.flush();

  // 2. copy them, one source pack at a time (read whole, verified per blob)
  const writer = new RepoWriter(repo, {
    onPackStored: async (entries) => {
      const bw = new BatchWriter(ws.db, 8192);
      for (const e of entries) await bw.put(ws.newIndex, Buffer.from(e.id), encodeLocation(e));
      await bw.flush();
    },
  });
  let srcPack: Buffer | null = null;
  let bytes: Buffer | null = null;
  for await (const [k, v] of ws.copies.iterator()) {
    const id = Buffer.from(v.subarray(0, ID_BYTES));
    const loc = decodeLocation(v, ID_BYTES);
    if (!srcPack || !srcPack.equals(loc.packId)) {
      srcPack = Buffer.from(loc.packId);
      bytes = await repo.store.get(packObjectName(loc.type, srcPack.toString('hex')));
    }
    void k;
    const stored = bytes!.subarray(loc.offset, loc.offset + loc.length);
    const what = `blob ${id.toString('hex')} in ${packObjectName(loc.type, srcPack.toString('hex'))}`;
    const plain = repo.codec.decode(Buffer.from(stored), id, what, loc.type, loc.seal);
    writer.claim(id);
    await writer.add(loc.type as BlobType, id, repo.codec.encode(repo.defaultCodec, plain, loc.type, id), plain.length);
    report.blobsCopied++;
    report.bytesCopied += plain.length;
  }
  await writer.finish();
  report.packsWritten = writer.stats.packsWritten;
  report.packBytesWritten = writer.stats.packBytes;

  // 3. entries of superseded files that point into kept packs
  for await (const [k, v] of ws.entries.iterator()) {
    const e = entryOf(k, v);
    if (!superseded.has(e.file)) continue;
    if ((await decisionOf(ws, e.packId, memo)) !== Decision.Keep) continue;
    await w.put(ws.newIndex, Buffer.from(e.id), encodeLocation(e));
  }
  await w.flush();

  // 4. compacted index files, in id order
  let batch: IndexEntry[] = [];
  const emit = async () => {
    if (batch.length === 0) return;
    report.replacement.push(await writeIndexFile(repo, batch));
    batch = [];
  };
  for await (const [k, v] of ws.newIndex.iterator()) {
    if (v.length !== LOCATION_BYTES) continue;
    batch.push({ id: Buffer.from(k), ...decodeLocation(v) });
    if (batch.length >= ENTRIES_PER_INDEX) await emit();
  }
  await emit();
  void files;
  return report;
}
