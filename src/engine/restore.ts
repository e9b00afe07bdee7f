import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../repo/errors.js';
import { LocalCache } from '../repo/local-cache.js';
import { Repository } from '../repo/repository.js';
import { SnapshotRecord } from '../snapshot/snapshot-record.js';
import { seekEnd } from '../source/seek-data.js';
import { ProgressSink } from './backup.js';
import { DiskChunk } from './disk-image.js';
import {
  TargetRecord,
  fingerprint,
  fingerprintChange,
  readRecord,
  recordPath,
  syncDir,
  writeRecord,
} from './restore-target.js';
import { SnapshotImage, openDiskImage } from './snapshot-image.js';
import { WorkerPool, defaultWorkers } from './worker-pool.js';
import { nonZeroRuns } from './zero-runs.js';

export interface RestoreOptions {
  /** Replace an existing regular file (atomically: the old one stays until the new one is complete). */
  force?: boolean;
  /** The target already holds this (older) snapshot of the same disk: write only what differs. */
  since?: SnapshotRecord;
  /** Permission bits of a new file target (default 0o600: a disk image is readable by its owner only). */
  mode?: number;
  progress?: ProgressSink;
  workers?: number;
}

export interface RestoreReport {
  snapshot: string;
  vm: string;
  disk: number;
  to: string;
  capacity: number;
  bytesWritten: number;
  chunksWritten: number;
  chunksZero: number;
  since: string | null;
  /** Where the record of what the target holds was written. */
  record: string;
  durationMs: number;
}

/** Writes in flight to the target (each at most JOIN_BYTES). */
const WRITES_IN_FLIGHT = 8;
/** Zeros written at a time where a block device must be cleared. */
const ZERO_BLOCK = 1 << 20;

/**
 * Writes a point-in-time disk to a file or block device.
 *
 * - A file target is written as a temporary file beside it (`.NAME.restore-PID.tmp`,
 *   mode 0600 or `mode`), fsynced and renamed over the target: an existing image
 *   (`force`) stays whole until the new one is complete, whatever kills the restore.
 *   The new file is sparse at 4 KiB granularity: zero chunks and zero 4 KiB blocks
 *   inside chunks are holes; all-zero manifest pages are skipped without visiting
 *   their slots.
 * - A block device gets every chunk written, zeros included (its old content is
 *   not known to be zero).
 * - With `since`, only chunks that differ from that snapshot are written, in place,
 *   into a target whose record (restore-target.ts) says it holds that snapshot and
 *   whose fingerprint has not moved since; the record says 'updating' while the
 *   update runs, so an interrupted one is refused next time.
 * Memory, whatever the disk's size: the snapshot image's window buffers (9 x 2 MiB,
 * which the WRITES_IN_FLIGHT joined writes point into) and read buffers (8 x 1 MiB,
 * snapshot-image.ts), and one worker thread fewer than cores (the main thread
 * decodes too: WorkerPool's mainDecodes), about 30 MB of RSS each; the rest is the
 * process (node and the CLI: ~60 MB) and collector slack. Measured: ~135 MB peak
 * on 2 cores for a 4 GiB disk holding 730 MB.
 */
export async function restoreDisk(
  repo: Repository,
  record: SnapshotRecord,
  diskIndex: number,
  to: string,
  options: RestoreOptions = {},
): Promise<RestoreReport> {
  const started = Date.now();
  // the main thread decodes beside the workers: one worker fewer than cores
  const pool = new WorkerPool(repo, options.workers ?? Math.max(1, defaultWorkers() - 1), true);
  try {
    const image = openDiskImage(repo, pool, record, diskIndex);
    if (!options.since) pool.plan(image.disk.nonZeroBytes);
    const st = await fsp.stat(to).catch(() => null);
    const isDevice = st?.isBlockDevice() ?? false;
    const recFile = recordPath(to, isDevice, repo.cacheRoot ?? LocalCache.defaultRoot());
    const report: RestoreReport = {
      snapshot: record.id,
      vm: record.vm,
      disk: diskIndex,
      to,
      capacity: image.capacity,
      bytesWritten: 0,
      chunksWritten: 0,
      chunksZero: 0,
      since: options.since?.id ?? null,
      record: recFile,
      durationMs: 0,
    };
    const newRecord = (): TargetRecord => ({
      version: 1,
      repository: repo.config.id,
      vm: record.vm,
      snapshot: record.id,
      disk: diskIndex,
      diskName: image.disk.name,
      capacity: image.capacity,
      state: 'complete',
      time: new Date().toISOString(),
    });

    if (options.since) {
      if (!st) throw new UserError(`--since needs ${to} to exist and hold snapshot ${options.since.id}`);
      if (!st.isFile() && !isDevice) throw new UserError(`${to} is neither a regular file nor a block device`);
      const base = openDiskImage(repo, pool, options.since, diskIndex);
      if (base.capacity !== image.capacity) {
        throw new UserError(`snapshot ${options.since.id} disk ${diskIndex} is ${base.capacity} bytes, ${record.id}'s is ${image.capacity}: not an incremental restore`);
      }
      const fh = await fsp.open(to, 'r+');
      try {
        await checkHoldsBase(repo, fh, to, recFile, isDevice, options.since, diskIndex, image.capacity);
        await writeRecord(recFile, { ...newRecord(), snapshot: options.since.id, state: 'updating', updatingTo: record.id });
        await writeImage(fh, image, { only: image.changedChunks(base), holes: false }, report, options.progress);
        await fh.sync();
        await writeRecord(recFile, { ...newRecord(), fingerprint: await fingerprint(fh, image.capacity, isDevice) });
      } finally {
        await fh.close();
      }
    } else if (isDevice) {
      const size = await deviceSize(to);
      if (size < image.capacity) throw new UserError(`block device ${to} is ${size} bytes, smaller than the disk (${image.capacity})`);
      const fh = await fsp.open(to, 'r+');
      try {
        // Whatever the device held is gone from the first write on: no record until this finishes.
        await fsp.rm(recFile, { force: true });
        await writeImage(fh, image, { only: image.changedChunks(), holes: false, fillZeros: true }, report, options.progress);
        await fh.sync();
        await writeRecord(recFile, { ...newRecord(), fingerprint: await fingerprint(fh, image.capacity, true) });
      } finally {
        await fh.close();
      }
    } else {
      if (st && !st.isFile()) throw new UserError(`${to} is neither a regular file nor a block device`);
      if (st && !options.force) throw new UserError(`${to} exists; pass --force to replace it, or --since SNAP to update it in place`);
      await restoreFileAtomically(to, options.mode ?? 0o600, async (fh) => {
        await fh.truncate(image.capacity);
        await writeImage(fh, image, { only: image.changedChunks(), holes: true }, report, options.progress);
      });
      const fh = await fsp.open(to, 'r');
      try {
        await writeRecord(recFile, { ...newRecord(), fingerprint: await fingerprint(fh, image.capacity, false) });
      } finally {
        await fh.close();
      }
    }
    // A full restore visits only the non-zero chunks; every other chunk is zero.
    if (!options.since) report.chunksZero = image.chunkTotal - report.chunksWritten;
    report.durationMs = Date.now() - started;
    return report;
  } finally {
    await pool.close();
  }
}

/**
 * Runs `fill` on a new temporary file beside `to`, then fsyncs it, renames it over
 * `to` and fsyncs the directory. On any error the temporary file is removed and
 * `to` is untouched; temporary files of killed restores of `to` are swept first.
 */
async function restoreFileAtomically(to: string, mode: number, fill: (fh: fsp.FileHandle) => Promise<void>): Promise<void> {
  const dir = path.dirname(path.resolve(to));
  const prefix = `.${path.basename(to)}.restore-`;
  await sweepTemps(dir, prefix);
  const tmp = path.join(dir, `${prefix}${process.pid}.tmp`);
  const fh = await fsp.open(tmp, 'wx', mode);
  let renamed = false;
  try {
    await fh.chmod(mode); // open's mode is filtered by the umask
    await fill(fh);
    await fh.sync();
    await fh.close();
    await fsp.rename(tmp, to);
    renamed = true;
    await syncDir(dir);
  } finally {
    if (!renamed) {
      await fh.close().catch(() => {});
      await fsp.rm(tmp, { force: true });
    }
  }
}

/** Removes `PREFIX<pid>.tmp` files in `dir` whose process is gone (a restore that was killed). */
async function sweepTemps(dir: string, prefix: string): Promise<void> {
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue;
    const pid = Number(name.slice(prefix.length, -'.tmp'.length));
    if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || alive(pid)) continue;
    await fsp.rm(path.join(dir, name), { force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Refuses (UserError saying what to do) unless the target's record says it holds `base` and the target has not changed since. */
async function checkHoldsBase(
  repo: Repository,
  fh: fsp.FileHandle,
  to: string,
  recFile: string,
  isDevice: boolean,
  base: SnapshotRecord,
  diskIndex: number,
  capacity: number,
): Promise<void> {
  const full = `restore in full instead (without --since${isDevice ? '' : ', with --force'})`;
  const rec = await readRecord(recFile);
  if (!rec) throw new UserError(`${to} has no record of what it holds (${recFile} is missing): --since cannot trust it; ${full}`);
  if (rec.state === 'updating') {
    throw new UserError(`the last --since update of ${to} (from ${rec.snapshot} to ${rec.updatingTo}) did not finish: it holds a mix of both; ${full}`);
  }
  if (rec.repository !== repo.config.id || rec.snapshot !== base.id || rec.disk !== diskIndex) {
    const what = rec.repository !== repo.config.id ? `a snapshot of another repository (${rec.repository})` : `snapshot ${rec.snapshot} disk ${rec.disk}`;
    throw new UserError(`${to} holds ${what}, not snapshot ${base.id} disk ${diskIndex}: pass --since ${rec.snapshot} if that is the older one, or ${full}`);
  }
  const size = isDevice ? await deviceSize(to) : (await fh.stat()).size;
  if (size !== capacity) throw new UserError(`${to} is ${size} bytes but the disk is ${capacity}: it does not hold snapshot ${base.id}; ${full}`);
  if (!rec.fingerprint) throw new UserError(`${recFile} has no fingerprint of ${to}; ${full}`);
  const change = fingerprintChange(rec.fingerprint, await fingerprint(fh, capacity, isDevice));
  if (change) throw new UserError(`${to} no longer holds snapshot ${base.id} as restored: ${change} (was it booted or written?); ${full}`);
}

interface WritePlan {
  /** Ascending indexes of the chunks to write. */
  only: AsyncIterable<number>;
  /** The target's unwritten ranges read as zeros (a new sparse file): zero 4 KiB blocks are left as holes. */
  holes: boolean;
  /** Write zeros over the chunks `only` skips (a block device). */
  fillZeros?: boolean;
}

/** Contiguous writes are joined into one pwritev of up to this many bytes. */
const JOIN_BYTES = 1 << 20;
/** Bytes written between the write-behind datasyncs of a restore (WriteQueue.writeBehind). */
const SYNC_BEHIND_BYTES = 64 << 20;

/**
 * Positioned writes to the target: contiguous ones are joined into one pwritev
 * (up to JOIN_BYTES: one system call per MiB instead of one per chunk or run), up
 * to `limit` in flight; the first failure is thrown by the next call or `drain`.
 */
class WriteQueue {
  private readonly inFlight = new Set<Promise<unknown>>();
  private failed: unknown = null;
  private pending: { offset: number; end: number; bufs: Buffer[]; done: (() => void)[] } | null = null;
  /** Bytes written since the last write-behind datasync started, and that datasync while it runs. */
  private unsynced = 0;
  private syncing: Promise<void> | null = null;

  constructor(
    private readonly fh: fsp.FileHandle,
    private readonly limit: number,
  ) {}

  /** Queues a write (waiting while `limit` are in flight); `onDone` runs when it has succeeded. */
  async write(buf: Buffer, offset: number, onDone?: () => void): Promise<void> {
    if (this.failed) throw this.failed;
    const p = this.pending;
    if (p && p.end === offset && p.end - p.offset + buf.length <= JOIN_BYTES) {
      p.bufs.push(buf);
      p.end += buf.length;
      if (onDone) p.done.push(onDone);
      return;
    }
    await this.flush();
    this.pending = { offset, end: offset + buf.length, bufs: [buf], done: onDone ? [onDone] : [] };
  }

  private async flush(): Promise<void> {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    const w = this.fh.writev(p.bufs, p.offset).then(
      (r) => {
        this.inFlight.delete(w);
        if (r.bytesWritten !== p.end - p.offset) throw new Error(`short write at ${p.offset}: ${r.bytesWritten} of ${p.end - p.offset} bytes`);
        for (const d of p.done) d();
        this.writeBehind(r.bytesWritten);
      },
    ).catch((err) => {
      this.inFlight.delete(w);
      this.failed ??= err;
    });
    this.inFlight.add(w);
    if (this.inFlight.size >= this.limit) await Promise.race(this.inFlight);
    if (this.failed) throw this.failed;
  }

  /**
   * Starts a datasync, not waited for, after every SYNC_BEHIND_BYTES written: the
   * page cache would otherwise hold the whole image until the final fsync (the
   * kernel starts writing back only at 10% of memory), and the disk would sit idle
   * while the chunks are decoded, then alone while that fsync runs.
   */
  private writeBehind(bytes: number): void {
    this.unsynced += bytes;
    if (this.syncing || this.unsynced < SYNC_BEHIND_BYTES) return;
    this.unsynced = 0;
    this.syncing = this.fh.datasync().then(
      () => {
        this.syncing = null;
      },
      (err) => {
        this.syncing = null;
        this.failed ??= err;
      },
    );
  }

  async drain(): Promise<void> {
    await this.flush();
    await Promise.all(this.inFlight);
    await this.syncing;
    if (this.failed) throw this.failed;
  }
}

/** Writes the chunks of `plan` to `fh`, several writes in flight. */
async function writeImage(fh: fsp.FileHandle, image: SnapshotImage, plan: WritePlan, report: RestoreReport, progress?: ProgressSink): Promise<void> {
  progress?.start(image.capacity);
  const q = new WriteQueue(fh, WRITES_IN_FLIGHT);
  const zeros = Buffer.alloc(plan.fillZeros ? ZERO_BLOCK : image.chunkSize);
  let next = 0; // first byte not yet accounted for
  const fillTo = async (end: number) => {
    if (plan.fillZeros) {
      for (let o = next; o < end; o += ZERO_BLOCK) {
        const n = Math.min(ZERO_BLOCK, end - o);
        await q.write(zeros.subarray(0, n), o);
        report.bytesWritten += n;
      }
    }
    progress?.advance(end - next);
    next = end;
  };
  // No GcPacer here: a chunk's data is a view into a reused window buffer, not garbage
  // (the decoders pace their own: chunk-work.ts). Counting every chunk forced a
  // main-thread scavenge per 4 MiB written, 0.35 s of a 730 MB restore's profile.
  try {
    for await (const c of image.chunks({ only: plan.only, lease: true })) {
      await fillTo(c.offset);
      await writeChunk(c, plan.holes, q, zeros, report);
      progress?.advance(c.length);
      next = c.offset + c.length;
    }
    await fillTo(image.capacity);
    await q.drain();
  } finally {
    progress?.stop();
  }
}

/** Writes one chunk: its non-zero 4 KiB runs only when the target reads as zeros there, else all of it. */
async function writeChunk(c: DiskChunk, holes: boolean, q: WriteQueue, zeros: Buffer, report: RestoreReport): Promise<void> {
  if (!c.data) {
    report.chunksZero++;
    if (holes) return;
    report.chunksWritten++;
    await q.write(zeros.subarray(0, c.length), c.offset);
    report.bytesWritten += c.length;
    return;
  }
  report.chunksWritten++;
  const runs = holes ? (c.runs ?? nonZeroRuns(c.data)) : [0, c.length];
  let left = runs.length / 2;
  const done = () => {
    if (--left === 0) c.release?.();
  };
  if (left === 0) c.release?.();
  for (let r = 0; r < runs.length; r += 2) {
    const start = runs[r]!;
    const len = runs[r + 1]!;
    await q.write(c.data.subarray(start, start + len), c.offset + start, done);
    report.bytesWritten += len;
  }
}

async function deviceSize(dev: string): Promise<number> {
  const fh = await fsp.open(dev, 'r');
  try {
    const size = seekEnd(fh.fd);
    if (size === null) throw new UserError(`cannot find the size of ${dev}`);
    return size;
  } finally {
    await fh.close();
  }
}
