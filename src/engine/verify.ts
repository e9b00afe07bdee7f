import { createHash, randomBytes } from 'node:crypto';
import { UserError } from '../repo/errors.js';
import { listEpochs, readDone, retiredIndexFiles } from '../repo/gc-epoch.js';
import { BlobType, ID_BYTES, INDEX_PREFIX, PAGE_SLOTS, isZeroId, packObjectName } from '../repo/format.js';
import { IndexEntry, decodeIndex, decodeLocation, encodeLocation } from '../repo/index-file.js';
import { LocalCache } from '../repo/local-cache.js';
import { PackEntry } from '../repo/pack.js';
import { Repository } from '../repo/repository.js';
import { ManifestReader, chunkCount, levelSizes } from '../snapshot/manifest.js';
import { SnapshotCatalog, SnapshotRecord } from '../snapshot/snapshot-record.js';
import { ListedPack, listPacks, listedPacks, packKey, readTrailer, trailerOf } from './pack-scan.js';
import { BatchWriter, PRESENT, ScratchDb, ScratchTable } from './scratch-db.js';
import { decodeRecord, encodeRecord, loadVerifiedLog, mergeRecord, writeVerifiedLog } from './verified-log.js';
import { WorkerPool } from './worker-pool.js';

/** Which packs a run reads whole. Absent: none (structure and trailers only). */
export type DataSubset = { kind: 'all' } | { kind: 'percent'; percent: number } | { kind: 'slice'; n: number; m: number };

export interface VerifyOptions {
  /** Read packs whole (every blob decrypted, decompressed, re-hashed): all, a percentage, or slice n of m. */
  readData?: boolean | DataSubset;
  /** With readData: only packs not verified within this many ms (never-verified packs are spread over it). */
  olderThanMs?: number;
  workers?: number;
  /** The time of this run (tests move it). */
  now?: number;
}

export interface VerifyReport {
  ok: boolean;
  snapshots: number;
  packs: number;
  /** Packs chosen to be read whole, and read. */
  packsSelected: number;
  packsRead: number;
  blobsChecked: number;
  /** Index entries compared with their pack's trailer. */
  indexEntriesChecked: number;
  badIndexEntries: number;
  /** Blobs a pack trailer lists that no index file names (an interrupted backup's; garbage for prune). */
  unindexedBlobs: number;
  chunksReferenced: number;
  /** Verified-log objects written by this run (0 when it read no data). */
  verifiedLogObjects: number;
  problems: string[];
  damagedSnapshots: string[];
  /** Set when a prune deleted objects during every attempt: the problems may be its deletions, not damage. */
  pruneDuring?: boolean;
}

/** More problems than this are counted, not listed. */
const MAX_PROBLEMS = 1000;
/** Packs in flight at once (trailers are small); of them, at most FULL_READS read whole. */
const PACKS_IN_FLIGHT = 8;
const FULL_READS = 2;

/** Parses `5%`, `0.5%` or `2/7` (slice 2 of 7). */
export function parseDataSubset(text: string): DataSubset {
  const pct = /^([0-9]+(?:\.[0-9]+)?)%$/.exec(text.trim());
  if (pct) {
    const percent = Number(pct[1]);
    if (!(percent > 0 && percent <= 100)) throw new UserError(`--read-data-subset ${text}: a percentage must be above 0 and at most 100`);
    return { kind: 'percent', percent };
  }
  const sl = /^([0-9]+)\/([0-9]+)$/.exec(text.trim());
  if (sl) {
    const n = Number(sl[1]);
    const m = Number(sl[2]);
    if (!(m >= 1 && n >= 1 && n <= m && m <= 1_000_000)) throw new UserError(`--read-data-subset ${text}: slice n/m needs 1 <= n <= m`);
    return { kind: 'slice', n, m };
  }
  throw new UserError(`--read-data-subset takes a percentage (5%) or a slice n/m (3/30), got ${JSON.stringify(text)}`);
}

/** Parses `30d`, `12h`, `90m`, `2w` into ms. */
export function parseAge(text: string): number {
  const m = /^([0-9]+)([mhdw])$/.exec(text.trim());
  if (!m) throw new UserError(`--older-than takes a whole number and a unit (m, h, d, w), e.g. 30d; got ${JSON.stringify(text)}`);
  const unit = { m: 60_000, h: 3600_000, d: 86400_000, w: 7 * 86400_000 }[m[2] as 'm' | 'h' | 'd' | 'w'];
  const ms = Number(m[1]) * unit;
  if (ms <= 0) throw new UserError('--older-than must be more than 0');
  return ms;
}

/** Slice n of m holds the packs whose id's first 4 bytes are n-1 mod m: m runs read each pack exactly once. */
export function inSlice(packId: Buffer, n: number, m: number): boolean {
  return packId.readUInt32BE(0) % m === n - 1;
}

/** A never-verified pack's due base: spread over the window by its id, so scheduled runs share the work. */
function firstSeenBase(packId: Buffer, now: number, window: number): number {
  // Spread over the first 90% of the window, not all of it: a pack whose due time fell
  // in the window's last run interval would be read one run after the window closes.
  return now - window + Math.floor((packId.readUInt32BE(4) / 2 ** 32) * window * 0.9);
}

/**
 * Checks a repository.
 *
 * A run that found problems while a prune deleted (the GC epochs changed during it, or
 * one was open: between its intent and its end) is run again, up to VERIFY_ATTEMPTS
 * runs: a pack the prune removed after this run listed the index is no damage. Only a
 * run with no prune deleting reports problems as found; else `pruneDuring` says so.
 *
 * Always: every index file opens, every index entry agrees with the trailer of the pack
 * it points into (type, offset, length, raw length; the trailer is fetched with a ranged
 * read), every indexed pack exists, and every snapshot's manifest pages are readable and
 * each chunk they reference is indexed and not damaged.
 * With readData: the chosen packs are read whole, checked against their name, and every
 * blob in them decrypted, decompressed and re-hashed; a pack that passes is recorded in
 * the verified log with this run's time.
 *
 * Memory is bounded whatever the repository size: packs, index entries, damaged ids,
 * checked pages and the verified log live in a scratch LevelDB on disk. In memory: one
 * index file's entries, PACKS_IN_FLIGHT trailers, FULL_READS whole packs, the leaf ids
 * of one disk (32 bytes per 64 MiB of disk), the snapshot records (from the catalog) and
 * at most MAX_PROBLEMS messages.
 */
export async function verifyRepository(repo: Repository, options: VerifyOptions = {}): Promise<VerifyReport> {
  for (let attempt = 1; ; attempt++) {
    const before = await pruneState(repo);
    const report = await verifyOnce(repo, options);
    if (report.ok) return report;
    const after = await pruneState(repo);
    if (before.stamp === after.stamp && !before.open) return report;
    // A prune published or finished a GC epoch while this run listed and read: a pack or
    // index file it deleted looks missing to a run that listed the index before. Run again
    // (the cache catches up with the epoch first); what a quiet run finds is real.
    if (attempt === VERIFY_ATTEMPTS) {
      const note = `a prune was deleting while each of ${attempt} runs read the repository (GC epoch ${after.last}): some of these problems may be its deletions; run verify again once it has finished`;
      return { ...report, pruneDuring: true, problems: [...report.problems, note] };
    }
    await repo.refreshIndex();
  }
}

/** Runs of verify when a prune deletes during them (each run after the first is one that saw a prune). */
const VERIFY_ATTEMPTS = 3;

/** The GC epochs as one string, and whether one is open (a prune between its intent and its end). */
async function pruneState(repo: Repository): Promise<{ stamp: string; open: boolean; last: number }> {
  const epochs = await listEpochs(repo.store);
  const last = epochs.length ? epochs[epochs.length - 1]!.epoch : 0;
  return { stamp: epochs.map((e) => `${e.epoch}${e.done ? '.done' : ''}${e.end ? '.end' : ''}`).join(' '), open: epochs.some((e) => !e.end), last };
}

async function verifyOnce(repo: Repository, options: VerifyOptions): Promise<VerifyReport> {
  const subset: DataSubset | null = options.readData === true ? { kind: 'all' } : options.readData ? options.readData : null;
  if (options.olderThanMs !== undefined && !subset) throw new UserError('--older-than needs --read-data or --read-data-subset');
  const now = options.now ?? Date.now();
  const scratch = await ScratchDb.open('verify');
  const problems = new Problems();
  try {
    const t = {
      packs: scratch.table('p'),
      entries: scratch.table('e'),
      files: scratch.table('n'),
      damaged: scratch.table('d'),
      pages: scratch.table('g'),
      log: scratch.table('v'),
      selected: scratch.table('s'),
    };
    const cache = await repo.cache();
    // index files first, then packs: an index file is written only after its packs, so each one listed names listed packs
    await loadIndexFiles(repo, t.entries, t.files, problems);
    const { count: packCount, strays } = await listPacks(repo, t.packs);
    for (const s of strays) problems.push(`${s}: not a pack name (stray object under data/ or meta/)`);
    await checkMissingPacks(t.entries, t.packs, t.files, t.damaged, cache, problems);

    let logLoaded: string[] = [];
    let packsSelected = 0;
    if (subset) {
      logLoaded = await loadVerifiedLog(repo, t.log);
      packsSelected = await selectPacks(t, subset, options.olderThanMs, now);
    }

    const pool = subset ? new WorkerPool(repo, options.workers) : null;
    const tally = { packsRead: 0, blobsChecked: 0, indexEntriesChecked: 0, badIndexEntries: 0, unindexedBlobs: 0 };
    try {
      const fullReads = new Semaphore(FULL_READS);
      const inFlight = new Set<Promise<void>>();
      for await (const pack of listedPacks(t.packs)) {
        const whole = (await t.selected.get(packKey(pack.type, pack.id))) !== undefined;
        const job = (async () => {
          const r = whole ? await fullReads.run(() => readWhole(repo, pool!, pack)) : await trailerOnly(repo, pack);
          for (const p of r.problems) problems.push(p);
          if (whole && !r.unreadable) tally.packsRead++;
          tally.blobsChecked += r.blobsChecked;
          const x = await crossCheck(pack, r.trailer, r.damagedIds, t, cache, problems);
          tally.indexEntriesChecked += x.checked;
          tally.badIndexEntries += x.bad;
          tally.unindexedBlobs += x.unindexed;
          if (whole && r.problems.length === 0 && x.bad === 0) await t.log.put(packKey(pack.type, pack.id), encodeRecord({ verified: true, time: now }));
        })();
        const tracked = job.finally(() => inFlight.delete(tracked));
        inFlight.add(tracked);
        if (inFlight.size >= PACKS_IN_FLIGHT) await Promise.race(inFlight);
      }
      await Promise.all(inFlight);
    } finally {
      await pool?.close();
    }

    const snap = await checkSnapshots(repo, t.damaged, t.pages, cache, problems);
    const verifiedLogObjects = subset ? await writeVerifiedLog(repo, t.log, t.packs, logLoaded) : 0;
    return {
      ok: problems.count === 0,
      snapshots: snap.snapshots,
      packs: packCount,
      packsSelected,
      ...tally,
      chunksReferenced: snap.chunksReferenced,
      verifiedLogObjects,
      problems: problems.list(),
      damagedSnapshots: snap.damaged,
    };
  } finally {
    await scratch.close();
  }
}

class Problems {
  private readonly items: string[] = [];
  count = 0;
  push(p: string): void {
    this.count++;
    if (this.items.length < MAX_PROBLEMS) this.items.push(p);
  }
  list(): string[] {
    return this.count > this.items.length ? [...this.items, `... and ${this.count - this.items.length} more problem(s)`] : this.items;
  }
}

class Semaphore {
  private waiting: (() => void)[] = [];
  constructor(private free: number) {}
  async run<T>(f: () => Promise<T>): Promise<T> {
    while (this.free === 0) await new Promise<void>((r) => this.waiting.push(r));
    this.free--;
    try {
      return await f();
    } finally {
      this.free++;
      this.waiting.shift()?.();
    }
  }
}

/**
 * Every entry of every index file, into `entries` keyed by pack (type + pack id), blob id
 * and the index file's number, so that one pack's entries are one key range.
 */
async function loadIndexFiles(repo: Repository, entries: ScratchTable, files: ScratchTable, problems: Problems): Promise<void> {
  const superseded = await supersededIndexFiles(repo);
  const w = new BatchWriter(entries);
  let seq = 0;
  for await (const b of repo.store.list(INDEX_PREFIX)) {
    if (superseded.has(b.name)) continue;
    let list: IndexEntry[];
    try {
      list = decodeIndex(await repo.store.get(b.name), repo.sealer, b.name);
    } catch (err) {
      problems.push(`${b.name}: ${(err as Error).message}`);
      continue;
    }
    const s = Buffer.allocUnsafe(4);
    s.writeUInt32BE(seq++);
    await files.put(s, Buffer.from(b.name));
    for (const e of list) await w.put(Buffer.concat([packKey(e.type, e.packId), e.id, s]), encodeLocation(e));
  }
  await w.flush();
}

/**
 * Index files replaced by a done GC epoch whose deletions have not ended (a prune deleting
 * now, or one killed while deleting: the next prune finishes it). They are no longer part
 * of the index (docs/FORMAT.md §14, §18: caches skip them too), and the packs they name
 * may be gone already: their entries are neither checked nor counted.
 */
async function supersededIndexFiles(repo: Repository): Promise<Set<string>> {
  const out = new Set<string>();
  for (const e of await listEpochs(repo.store)) {
    if (!e.done || e.end) continue;
    const done = await readDone(repo.store, repo.sealer, e.epoch);
    for (const name of done ? retiredIndexFiles(done) : []) out.add(name);
  }
  return out;
}

interface EntryRow {
  id: Buffer;
  file: Buffer;
  entry: IndexEntry;
}

function rowOf(k: Buffer, v: Buffer): EntryRow {
  const id = Buffer.from(k.subarray(1 + ID_BYTES, 1 + 2 * ID_BYTES));
  return { id, file: Buffer.from(k.subarray(1 + 2 * ID_BYTES)), entry: { id, ...decodeLocation(v) } };
}

/** The index entries naming one pack, in blob id order. */
async function* entriesOf(entries: ScratchTable, key: Buffer): AsyncIterable<EntryRow> {
  const upper = Buffer.concat([key, Buffer.alloc(ID_BYTES + 4, 0xff), Buffer.from([0xff])]);
  for await (const [k, v] of entries.iterator({ gte: key, lt: upper })) yield rowOf(k, v);
}

async function fileName(files: ScratchTable, seq: Buffer): Promise<string> {
  return (await files.get(seq))?.toString() ?? 'an index file';
}

function sameLocation(a: IndexEntry, b: IndexEntry): boolean {
  return a.type === b.type && a.packId.equals(b.packId) && a.offset === b.offset && a.length === b.length && a.rawLength === b.rawLength && a.seal === b.seal;
}

/**
 * Marks ids damaged when the local cache (what restores read through) resolves them to
 * these exact bad locations; a bad entry shadowed by a good one for the same id is a
 * problem of the index, not a damaged chunk.
 */
async function markDamaged(rows: { row: EntryRow; why: string }[], cache: LocalCache, damaged: ScratchTable): Promise<void> {
  if (rows.length === 0) return;
  const current = await cache.getMany(rows.map((r) => r.row.id));
  const ops = rows
    .filter((r, i) => current[i] && sameLocation(current[i]!, r.row.entry))
    .map((r) => ({ type: 'put' as const, key: r.row.id, value: Buffer.from(r.why) }));
  if (ops.length) await damaged.batch(ops);
}

/** Index entries that name a pack which is not in the repository. */
async function checkMissingPacks(
  entries: ScratchTable,
  packs: ScratchTable,
  files: ScratchTable,
  damaged: ScratchTable,
  cache: LocalCache,
  problems: Problems,
): Promise<void> {
  let current: Buffer | null = null;
  let missing = false;
  let rows: { row: EntryRow; why: string }[] = [];
  const flush = async () => {
    await markDamaged(rows, cache, damaged);
    rows = [];
  };
  for await (const [k, v] of entries.iterator()) {
    const key = k.subarray(0, 1 + ID_BYTES);
    if (!current || !current.equals(key)) {
      await flush();
      current = Buffer.from(key);
      missing = (await packs.get(current)) === undefined;
      if (missing) {
        const row = rowOf(k, v);
        const name = packObjectName(row.entry.type, row.entry.packId.toString('hex'));
        problems.push(`pack ${name} is in the index (${await fileName(files, row.file)}) but missing from the repository`);
      }
    }
    if (missing) {
      const row = rowOf(k, v);
      rows.push({ row, why: `its pack ${packObjectName(row.entry.type, row.entry.packId.toString('hex'))} is missing` });
      if (rows.length >= 1024) await flush();
    }
  }
  await flush();
}

/**
 * Chooses the packs to read whole into `selected`: those due (with olderThanMs: not
 * verified within it; a pack never seen before gets a due base spread over the window
 * by its id, recorded in the log), then the slice, then the percentage (the packs with
 * the smallest hash under a random key of this run: a fresh random sample each run).
 */
async function selectPacks(
  t: { packs: ScratchTable; log: ScratchTable; selected: ScratchTable },
  subset: DataSubset,
  olderThanMs: number | undefined,
  now: number,
): Promise<number> {
  const candidates: ScratchTable = t.selected; // filled with sample-order keys first when sampling
  const order = subset.kind === 'percent' ? randomBytes(16) : null;
  let count = 0;
  const w = new BatchWriter(order ? candidates : t.selected);
  for await (const pack of listedPacks(t.packs)) {
    const key = packKey(pack.type, pack.id);
    if (olderThanMs !== undefined) {
      const rec = await t.log.get(key);
      let last: number;
      if (rec) last = decodeRecord(rec).time;
      else {
        last = firstSeenBase(pack.id, now, olderThanMs);
        await mergeRecord(t.log, key, { verified: false, time: last });
      }
      if (last + olderThanMs > now) continue;
    }
    if (subset.kind === 'slice' && !inSlice(pack.id, subset.n, subset.m)) continue;
    count++;
    await w.put(order ? Buffer.concat([Buffer.from('r'), createHash('sha256').update(order).update(key).digest().subarray(0, 8), key]) : key, PRESENT);
  }
  await w.flush();
  if (subset.kind !== 'percent') return count;
  // keep the first k in sample order; every other candidate (and the sample keys) goes
  const k = Math.ceil((count * subset.percent) / 100);
  let i = 0;
  const ops: { type: 'put' | 'del'; key: Buffer; value?: Buffer }[] = [];
  for await (const key of candidates.keys({ gte: Buffer.from('r'), lt: Buffer.from('s') })) {
    ops.push({ type: 'del', key });
    if (i++ < k) ops.push({ type: 'put', key: Buffer.from(key.subarray(9)), value: PRESENT });
    if (ops.length >= 4096) await candidates.batch(ops.splice(0) as never);
  }
  if (ops.length) await candidates.batch(ops as never);
  return k;
}

interface PackResult {
  trailer: PackEntry[] | null;
  problems: string[];
  blobsChecked: number;
  /** Ids whose blob failed its check. */
  damagedIds: Buffer[];
  unreadable: boolean;
}

async function trailerOnly(repo: Repository, pack: ListedPack): Promise<PackResult> {
  try {
    return { trailer: await readTrailer(repo, pack), problems: [], blobsChecked: 0, damagedIds: [], unreadable: false };
  } catch (err) {
    return { trailer: null, problems: [`pack ${pack.name}: trailer unreadable: ${(err as Error).message}`], blobsChecked: 0, damagedIds: [], unreadable: true };
  }
}

async function readWhole(repo: Repository, pool: WorkerPool, pack: ListedPack): Promise<PackResult> {
  const problems: string[] = [];
  let bytes: Buffer;
  try {
    bytes = await repo.store.get(pack.name);
  } catch (err) {
    return { trailer: null, problems: [`pack ${pack.name}: cannot read: ${(err as Error).message}`], blobsChecked: 0, damagedIds: [], unreadable: true };
  }
  if (repo.hasher.hash(bytes).toString('hex') !== pack.id.toString('hex')) problems.push(`pack ${pack.name}: content does not match its name`);
  if (bytes.length !== pack.size) {
    return { trailer: null, problems: [...problems, `pack ${pack.name}: truncated`], blobsChecked: 0, damagedIds: [], unreadable: true };
  }
  let trailer: PackEntry[];
  try {
    trailer = trailerOf(repo, pack.name, bytes);
  } catch (err) {
    return { trailer: null, problems: [...problems, `pack ${pack.name}: ${(err as Error).message}`], blobsChecked: 0, damagedIds: [], unreadable: true };
  }
  const plains = await pool.decode(
    bytes,
    trailer.map((e) => ({ offset: e.offset, length: e.length, id: e.id, type: e.type, seal: e.seal, what: `${e.type === BlobType.Data ? 'chunk' : 'page'} ${e.id.toString('hex')} in ${pack.name}` })),
  );
  const damagedIds: Buffer[] = [];
  plains.forEach((p, j) => {
    if ('error' in p) {
      problems.push(p.error);
      damagedIds.push(trailer[j]!.id);
    }
  });
  return { trailer, problems, blobsChecked: trailer.length, damagedIds, unreadable: false };
}

/**
 * Compares every index entry naming this pack with the pack's trailer. Damaged: the ids
 * of blobs that failed their check, and, when the trailer could not be read, every
 * indexed blob of the pack.
 */
async function crossCheck(
  pack: ListedPack,
  trailer: PackEntry[] | null,
  failed: Buffer[],
  t: { entries: ScratchTable; files: ScratchTable; damaged: ScratchTable },
  cache: LocalCache,
  problems: Problems,
): Promise<{ checked: number; bad: number; unindexed: number }> {
  const byId = new Map<string, PackEntry>();
  for (const e of trailer ?? []) byId.set(e.id.toString('hex'), e);
  const failedHex = new Set(failed.map((id) => id.toString('hex')));
  const indexed = new Set<string>();
  let checked = 0;
  let bad = 0;
  let toMark: { row: EntryRow; why: string }[] = [];
  for await (const row of entriesOf(t.entries, packKey(pack.type, pack.id))) {
    checked++;
    const hex = row.id.toString('hex');
    indexed.add(hex);
    if (!trailer) {
      toMark.push({ row, why: `the trailer of its pack ${pack.name} is unreadable` });
    } else if (failedHex.has(hex)) {
      toMark.push({ row, why: `its blob in ${pack.name} fails its check` });
    } else {
      const p = byId.get(hex);
      const e = row.entry;
      if (!p) {
        bad++;
        problems.push(`${await fileName(t.files, row.file)}: bad index entry: blob ${hex} is not in pack ${pack.name} (its trailer does not list it)`);
        toMark.push({ row, why: 'its index entry is bad' });
      } else if (p.type !== e.type || p.offset !== e.offset || p.length !== e.length || p.rawLength !== e.rawLength || (p.seal !== undefined && p.seal !== e.seal)) {
        bad++;
        problems.push(
          `${await fileName(t.files, row.file)}: bad index entry: blob ${hex} in pack ${pack.name} is indexed at ` +
            `type ${e.type} offset ${e.offset} length ${e.length} raw ${e.rawLength} seal ${e.seal}, the pack trailer says ` +
            `type ${p.type} offset ${p.offset} length ${p.length} raw ${p.rawLength} seal ${p.seal}; 'pilotlight repair index' rebuilds the index`,
        );
        toMark.push({ row, why: 'its index entry is bad' });
      }
    }
    if (toMark.length >= 1024) {
      await markDamaged(toMark, cache, t.damaged);
      toMark = [];
    }
  }
  await markDamaged(toMark, cache, t.damaged);
  let unindexed = 0;
  for (const hex of byId.keys()) if (!indexed.has(hex)) unindexed++;
  return { checked, bad, unindexed };
}

async function checkSnapshots(
  repo: Repository,
  damaged: ScratchTable,
  pages: ScratchTable,
  cache: LocalCache,
  problems: Problems,
): Promise<{ snapshots: number; damaged: string[]; chunksReferenced: number }> {
  const snapshots = await new SnapshotCatalog(repo).list();
  const reader = new ManifestReader(repo);
  const out: string[] = [];
  let chunksReferenced = 0;
  for (const s of snapshots) {
    const why = await checkSnapshot(reader, s, damaged, pages, cache, (n) => (chunksReferenced += n));
    if (why.length) {
      out.push(s.id);
      for (const w of why.slice(0, 5)) problems.push(`snapshot ${s.id} (${s.vm}): ${w}`);
      if (why.length > 5) problems.push(`snapshot ${s.id} (${s.vm}): ... and ${why.length - 5} more`);
    }
  }
  return { snapshots: snapshots.length, damaged: out, chunksReferenced };
}

async function checkSnapshot(
  reader: ManifestReader,
  s: SnapshotRecord,
  damaged: ScratchTable,
  goodPages: ScratchTable,
  cache: LocalCache,
  count: (n: number) => void,
): Promise<string[]> {
  const why: string[] = [];
  for (const d of s.disks) {
    const n = chunkCount(d.capacity, d.chunkSize);
    if (levelSizes(n).length !== d.depth) why.push(`disk ${d.name}: manifest depth ${d.depth} does not fit its capacity`);
    let leaves: Buffer[];
    try {
      leaves = await reader.leafIds(Buffer.from(d.root, 'hex'), n);
    } catch (err) {
      why.push(`disk ${d.name}: manifest unreadable: ${(err as Error).message}`);
      continue;
    }
    for (let p = 0; p < leaves.length; p++) {
      const leafId = leaves[p]!;
      if (isZeroId(leafId)) continue;
      const pageDamage = await damaged.get(leafId);
      if (pageDamage !== undefined) {
        why.push(`disk ${d.name}: manifest page ${leafId.toString('hex')} is damaged: ${pageDamage.toString()}`);
        continue;
      }
      if ((await goodPages.get(leafId)) !== undefined) continue;
      let page: Buffer;
      try {
        page = await reader.leaf(leafId, p, n);
      } catch (err) {
        why.push(`disk ${d.name}: ${(err as Error).message}`);
        continue;
      }
      const ids: Buffer[] = [];
      for (let o = 0; o < page.length; o += ID_BYTES) {
        const id = page.subarray(o, o + ID_BYTES);
        if (!isZeroId(id)) ids.push(id);
      }
      count(ids.length);
      const found = await cache.getMany(ids);
      const bad = await damaged.getMany(ids);
      let nbad = 0;
      ids.forEach((id, j) => {
        const hex = id.toString('hex');
        if (!found[j]) {
          nbad++;
          if (nbad <= 3) why.push(`disk ${d.name}: chunk ${hex} (offset ~${p * PAGE_SLOTS * d.chunkSize}) is not in the index`);
        } else if (bad[j] !== undefined) {
          nbad++;
          if (nbad <= 3) why.push(`disk ${d.name}: chunk ${hex} is damaged: ${bad[j]!.toString()}`);
        }
      });
      if (nbad === 0) await goodPages.put(Buffer.from(leafId), PRESENT);
      else if (nbad > 3) why.push(`disk ${d.name}: ${nbad - 3} more bad chunk(s) in page ${p}`);
    }
  }
  return why;
}
