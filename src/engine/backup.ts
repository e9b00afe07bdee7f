import { randomInt } from 'node:crypto';
import { UserError } from '../repo/errors.js';
import { BlobType, ID_BYTES, isZeroId } from '../repo/format.js';
import { NewBlob, RepoWriter } from '../repo/repo-writer.js';
import { Repository } from '../repo/repository.js';
import { ManifestBuilder, ManifestReader, chunkCount } from '../snapshot/manifest.js';
import {
  DiskRecord,
  SnapshotCatalog,
  SnapshotRecord,
  SnapshotStats,
  defaultHost,
  newSnapshotId,
} from '../snapshot/snapshot-record.js';
import { DiskSource, Extent, ExtentPlan, SourceDisk } from '../source/disk-source.js';
import { alignExtents, totalLength } from '../source/extents.js';
import { BackupGuard } from './backup-guard.js';
import { ENCODE_HEADROOM } from './chunk-work.js';
import { WorkerPool } from './worker-pool.js';

/**
 * Chunks per batch handed to a worker (4 MiB of 64 KiB chunks): one read, one
 * message each way and one batched index lookup per 64 chunks.
 */
const BATCH_CHUNKS = 64;

export interface ProgressSink {
  start(totalBytes: number): void;
  advance(bytes: number): void;
  stop(): void;
}

export interface BackupOptions {
  /** 'auto' (latest snapshot of the same vm), 'none', or a snapshot id. */
  parent?: 'auto' | 'none' | string;
  progress?: ProgressSink;
  /** Percent of the chunks a change list calls unchanged to read and check against the parent. */
  verifyUnchangedPercent?: number;
  signal?: AbortSignal;
  /** Worker threads (default: one per core). */
  workers?: number;
  /** Batches of 4 MiB in flight (reading, hashing, encoding). Memory: about 4 MiB each plus their blobs. */
  inFlight?: number;
  /** Free-form source name for the record ('file', 'vsphere'). */
  sourceKind?: string;
}

export interface DiskReport {
  name: string;
  capacity: number;
  read: { kind: 'changed' | 'allocated'; reason: string };
  bytesScanned: number;
  verifiedUnchanged?: { sampled: number; mismatches: number };
}

/** What a backup counted as it went: the snapshot record's stats without the duration. */
type Counters = Omit<SnapshotStats, 'durationMs'>;

export interface BackupReport extends SnapshotStats {
  snapshot: string;
  vm: string;
  parent: string | null;
  pagesWritten: number;
  packsWritten: number;
  /** Blobs stored again because a prune condemned the pack this run had reused them from. */
  blobsStoredAgain: number;
  disks: DiskReport[];
}

/**
 * One backup run: reads what the source says changed (or is allocated), stores
 * the new chunks, writes manifests, and commits the snapshot record last.
 * Memory is bounded by the batches in flight (inFlight buffers of 4 MiB + 4 KiB,
 * each holding a batch's reads and then its encoded blobs until they are in a
 * pack), the packs being filled and uploaded (to a store that appends, the local
 * directory and S3 through a spool file, data packs are written as they fill and
 * hold no memory; else maxUploads + 2 packs), and one leaf-id list per disk (32
 * bytes per 64 MiB of disk: 512 KiB per TiB).
 */
export async function runBackup(repo: Repository, source: DiskSource, options: BackupOptions = {}): Promise<BackupReport> {
  const started = Date.now();
  // The record's time is the source's consistency point, taken before anything is read.
  const consistency = source.consistencyTime ?? new Date(started);
  const catalog = new SnapshotCatalog(repo);
  // the lease comes first: before the run reads the index or any snapshot (docs/FORMAT.md, "Leases")
  const guard = await BackupGuard.start(repo, source.vm);
  let parent: SnapshotRecord | null;
  let writer: RepoWriter;
  try {
    parent = await findParent(catalog, source.vm, options.parent ?? 'auto');
    writer = new RepoWriter(repo, { maxUploads: packUploads(repo), reuse: guard });
    await guard.begin(parent?.id ?? null, writer);
  } catch (err) {
    await guard.close();
    throw err;
  }
  const pool = new WorkerPool(repo, options.workers);
  const counters: Counters = { bytesScanned: 0, bytesNew: 0, bytesStored: 0, chunksNew: 0, chunksReused: 0, chunksZero: 0 };
  let pagesWritten = 0;
  let committed = false;
  try {
    const disks = await source.disks();
    const names = new Set(disks.map((d) => d.name));
    if (names.size !== disks.length) throw new Error('the source gave two disks the same name');
    const plans: { disk: SourceDisk; parentDisk?: DiskRecord; plan: ExtentPlan; extents: Extent[] }[] = [];
    for (const disk of disks) {
      const parentDisk = parent?.disks.find((d) => d.name === disk.name && d.capacity === disk.capacity);
      let plan = await disk.extents(parentDisk?.changeToken, parentDisk !== undefined);
      if (plan.kind === 'changed' && !parentDisk) throw new Error(`source gave a change list for ${disk.name} without a parent`);
      if (!parentDisk && parent?.disks.some((d) => d.name === disk.name)) {
        plan = { ...plan, reason: `disk size changed; ${plan.reason}` };
      }
      plans.push({ disk, parentDisk, plan, extents: alignExtents(plan.extents, repo.config.chunkSize, disk.capacity) });
    }
    const toRead = plans.reduce((s, p) => s + totalLength(p.extents), 0);
    pool.plan(toRead);
    options.progress?.start(toRead);

    const diskRecords: DiskRecord[] = [];
    const diskReports: DiskReport[] = [];
    for (const p of plans) {
      throwIfAborted(options.signal);
      let { plan, extents } = p;
      let verified: DiskReport['verifiedUnchanged'];
      if (plan.kind === 'changed' && options.verifyUnchangedPercent && options.verifyUnchangedPercent > 0) {
        verified = await verifyUnchanged(repo, pool, p.disk, p.parentDisk!, extents, options.verifyUnchangedPercent);
        if (verified.mismatches > 0) {
          plan = await p.disk.extents(undefined, false);
          plan = { ...plan, reason: `change tracking missed changes (${verified.mismatches} of ${verified.sampled} sampled unchanged chunks differ); ${plan.reason}` };
          extents = alignExtents(plan.extents, repo.config.chunkSize, p.disk.capacity);
        }
      }
      const base = plan.kind === 'changed' ? { root: Buffer.from(p.parentDisk!.root, 'hex'), nonZeroBytes: p.parentDisk!.nonZeroBytes } : null;
      const builder = await ManifestBuilder.create(repo, writer, p.disk.capacity, base);
      const before = counters.bytesScanned;
      await backupDisk(repo, pool, writer, p.disk, extents, builder, counters, options);
      const m = await builder.finish();
      pagesWritten += m.pagesWritten;
      diskRecords.push({
        name: p.disk.name,
        capacity: p.disk.capacity,
        chunkSize: repo.config.chunkSize,
        root: m.root.toString('hex'),
        depth: m.depth,
        nonZeroBytes: m.nonZeroBytes,
        ...(p.disk.changeToken !== undefined ? { changeToken: p.disk.changeToken } : {}),
        read: { kind: plan.kind, reason: plan.reason },
      });
      diskReports.push({
        name: p.disk.name,
        capacity: p.disk.capacity,
        read: { kind: plan.kind, reason: plan.reason },
        bytesScanned: counters.bytesScanned - before,
        ...(verified ? { verifiedUnchanged: verified } : {}),
      });
    }
    throwIfAborted(options.signal);
    await writer.finish();
    await guard.beforeCommit();
    const record: SnapshotRecord = {
      version: 1,
      id: newSnapshotId(consistency),
      vm: source.vm,
      time: consistency.toISOString(),
      committed: new Date().toISOString(),
      parent: parent?.id ?? null,
      host: defaultHost(),
      source: options.sourceKind ?? 'file',
      disks: diskRecords,
      stats: { ...counters, durationMs: Date.now() - started },
      lease: guard.leaseId,
    };
    await catalog.save(record);
    await guard.afterCommit(record.id);
    committed = true;
    return {
      snapshot: record.id,
      vm: record.vm,
      parent: record.parent,
      ...counters,
      pagesWritten,
      packsWritten: writer.stats.packsWritten,
      blobsStoredAgain: guard.restored,
      durationMs: Date.now() - started,
      disks: diskReports,
    };
  } finally {
    options.progress?.stop();
    if (!committed) await writer.abandon().catch(() => {});
    await pool.close();
    await guard.close();
  }
}

/**
 * Pack uploads in flight: one for a local directory (a commit is an fsync and a
 * rename, shorter than filling the next pack), two for S3, whose round trips are
 * longer. A data pack in flight holds no memory where the store appends (both do);
 * a buffered one (metadata, or a store without openAppend) holds its buffer.
 */
function packUploads(repo: Repository): number {
  return repo.store.location.startsWith('s3://') ? 2 : 1;
}

async function findParent(catalog: SnapshotCatalog, vm: string, parent: string): Promise<SnapshotRecord | null> {
  if (parent === 'none') return null;
  if (parent === 'auto') return catalog.latest(vm);
  const r = await catalog.resolve(parent, vm);
  return r;
}

function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new UserError('backup interrupted; nothing was committed, and the next backup reuses what was uploaded', 130);
}

/**
 * Up to BATCH_CHUNKS chunks handed to a worker together. They need not be
 * contiguous: a scattered change list (many single-chunk extents) still fills
 * whole batches. `runs` are the contiguous stretches to read, in buffer order.
 */
interface Batch {
  indexes: number[];
  lengths: number[];
  runs: { offset: number; length: number; at: number }[];
  length: number;
}

function* batches(extents: Extent[], chunkSize: number, capacity: number): Generator<Batch> {
  let b: Batch = { indexes: [], lengths: [], runs: [], length: 0 };
  for (const e of extents) {
    for (let pos = e.offset; pos < e.offset + e.length; pos += chunkSize) {
      const len = Math.min(chunkSize, capacity - pos);
      const last = b.runs[b.runs.length - 1];
      if (last && last.offset + last.length === pos) last.length += len;
      else b.runs.push({ offset: pos, length: len, at: b.length });
      b.indexes.push(pos / chunkSize);
      b.lengths.push(len);
      b.length += len;
      if (b.indexes.length === BATCH_CHUNKS) {
        yield b;
        b = { indexes: [], lengths: [], runs: [], length: 0 };
      }
    }
  }
  if (b.indexes.length) yield b;
}

interface BatchResult {
  batch: Batch;
  ids: Buffer;
  isZero: boolean[];
  /** Chunk positions in the batch that this batch must store, with their blobs (views into `buf`). */
  newBlobs: Map<number, Buffer>;
  /** The batch buffer, back from the worker with the blobs in it: released once they are in a pack. */
  buf: ArrayBuffer;
}

/** A fixed set of batch buffers moved between the reader and the workers (transferred, never copied). */
class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  private readonly waiters: ((b: ArrayBuffer) => void)[] = [];
  constructor(count: number, size: number) {
    for (let i = 0; i < count; i++) this.free.push(new ArrayBuffer(size));
  }
  acquire(): Promise<ArrayBuffer> {
    const b = this.free.pop();
    return b ? Promise.resolve(b) : new Promise((resolve) => this.waiters.push(resolve));
  }
  release(b: ArrayBuffer): void {
    const w = this.waiters.shift();
    if (w) w(b);
    else this.free.push(b);
  }
}

async function backupDisk(
  repo: Repository,
  pool: WorkerPool,
  writer: RepoWriter,
  disk: SourceDisk,
  extents: Extent[],
  builder: ManifestBuilder,
  counters: Counters,
  options: BackupOptions,
): Promise<void> {
  const cs = repo.config.chunkSize;
  const inFlight = options.inFlight ?? Math.max(4, pool.size * 2);
  // Each batch buffer holds the plaintexts after `head` bytes of room; the worker
  // writes the encoded blobs over them from the start (chunk-work.ts, encode). A
  // buffer is held from the read until its blobs are copied into a pack.
  const head = ENCODE_HEADROOM * BATCH_CHUNKS;
  const bufSize = head + cs * BATCH_CHUNKS;
  const buffers = new BufferPool(inFlight, bufSize);

  const process1 = async (batch: Batch): Promise<BatchResult> => {
    const buf = await buffers.acquire();
    let handedBack = false;
    try {
      await Promise.all(batch.runs.map((r) => disk.read(new Uint8Array(buf, head + r.at, r.length), r.offset, r.length)));
      const w = pool.pick();
      const hashed = await pool.hash(w, buf, head, batch.lengths);
      const ids = hashed.ids;
      const candidates: number[] = [];
      const candidateIds: Buffer[] = [];
      hashed.isZero.forEach((z, i) => {
        if (!z) {
          candidates.push(i);
          candidateIds.push(ids.subarray(i * ID_BYTES, (i + 1) * ID_BYTES));
        }
      });
      const known = candidateIds.length ? await writer.knownMany(candidateIds) : [];
      const which: number[] = [];
      candidates.forEach((i, k) => {
        if (!known[k] && writer.claim(candidateIds[k]!)) which.push(i);
      });
      const encoded = await pool.encode(w, hashed.seq, which, repo.defaultCodec);
      handedBack = true;
      const newBlobs = new Map<number, Buffer>();
      which.forEach((i, k) => newBlobs.set(i, encoded.blobs[k]!));
      return { batch, ids, isZero: hashed.isZero, newBlobs, buf: encoded.buf };
    } catch (err) {
      // The buffer may be stuck in a failed worker; replace it so the pool keeps its size.
      if (!handedBack) buffers.release(new ArrayBuffer(bufSize));
      throw err;
    }
  };

  const commit = async (r: BatchResult): Promise<void> => {
    const { batch, ids, isZero, newBlobs } = r;
    const blobs: NewBlob[] = [];
    for (let i = 0; i < batch.lengths.length; i++) {
      const id = ids.subarray(i * ID_BYTES, (i + 1) * ID_BYTES);
      const len = batch.lengths[i]!;
      await builder.set(batch.indexes[i]!, id); // set() copies the id into its page
      if (isZero[i]) {
        counters.chunksZero++;
        continue;
      }
      const stored = newBlobs.get(i);
      if (stored) {
        blobs.push({ id: Buffer.from(id), stored, rawLength: len });
        counters.chunksNew++;
        counters.bytesNew += len;
        counters.bytesStored += stored.length;
      } else {
        counters.chunksReused++;
      }
    }
    await writer.addMany(BlobType.Data, blobs);
    counters.bytesScanned += batch.length;
    options.progress?.advance(batch.length);
    // addMany copied or wrote every blob into a pack: the buffer is free for the next read
    buffers.release(r.buf);
  };

  const queue: Promise<BatchResult>[] = [];
  try {
    for (const batch of batches(extents, cs, disk.capacity)) {
      throwIfAborted(options.signal);
      const p = process1(batch);
      p.catch(() => {}); // observed when it reaches the head of the queue
      queue.push(p);
      while (queue.length >= inFlight) await commit(await queue.shift()!);
    }
    while (queue.length) await commit(await queue.shift()!);
  } finally {
    await Promise.allSettled(queue);
  }
}

/**
 * Reads a random sample of the chunks a change list calls unchanged and compares
 * their ids with the parent's manifest: change tracking has had bugs that lost
 * changes, and this catches them before a bad snapshot is committed.
 */
async function verifyUnchanged(
  repo: Repository,
  pool: WorkerPool,
  disk: SourceDisk,
  parentDisk: DiskRecord,
  changed: Extent[],
  percent: number,
): Promise<{ sampled: number; mismatches: number }> {
  const cs = repo.config.chunkSize;
  const n = chunkCount(disk.capacity, cs);
  const changedSet = (i: number): boolean => {
    const off = i * cs;
    let lo = 0;
    let hi = changed.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      const e = changed[mid]!;
      if (off < e.offset) hi = mid - 1;
      else if (off >= e.offset + e.length) lo = mid + 1;
      else return true;
    }
    return false;
  };
  const unchangedCount = n - changed.reduce((s, e) => s + Math.ceil(e.length / cs), 0);
  const want = Math.min(unchangedCount, Math.max(1, Math.ceil((unchangedCount * Math.min(percent, 100)) / 100)));
  const picked = new Set<number>();
  let guard = 0;
  while (picked.size < want && guard++ < want * 20) {
    const i = randomInt(0, n);
    if (!changedSet(i)) picked.add(i);
  }
  const sample = [...picked].sort((a, b) => a - b);
  const reader = new ManifestReader(repo);
  const leaves = await reader.leafIds(Buffer.from(parentDisk.root, 'hex'), n);
  let mismatches = 0;
  let leafNo = -1;
  let leaf: Buffer | null = null;
  for (let k = 0; k < sample.length; k += 16) {
    const group = sample.slice(k, k + 16);
    const datas = await Promise.all(
      group.map(async (i) => {
        const len = Math.min(cs, disk.capacity - i * cs);
        const b = new Uint8Array(len);
        await disk.read(b, i * cs, len);
        return b;
      }),
    );
    const hashedIds = await pool.hashPlain(datas);
    for (let j = 0; j < group.length; j++) {
      const i = group[j]!;
      const p = Math.floor(i / 1024);
      if (p !== leafNo) {
        leaf = await reader.leaf(leaves[p]!, p, n);
        leafNo = p;
      }
      const expected = leaf!.subarray((i - p * 1024) * ID_BYTES, (i - p * 1024 + 1) * ID_BYTES);
      const isZero = datas[j]!.every((b) => b === 0);
      const same = isZero ? isZeroId(expected) : hashedIds[j]!.equals(expected);
      if (!same) mismatches++;
    }
  }
  return { sampled: sample.length, mismatches };
}
