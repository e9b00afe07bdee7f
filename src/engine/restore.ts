import { promises as fsp } from 'node:fs';
import { UserError } from '../repo/errors.js';
import { Repository } from '../repo/repository.js';
import { SnapshotRecord } from '../snapshot/snapshot-record.js';
import { seekEnd } from '../source/seek-data.js';
import { ProgressSink } from './backup.js';
import { SnapshotImage, openDiskImage } from './snapshot-image.js';
import { WorkerPool } from './worker-pool.js';

export interface RestoreOptions {
  /** Overwrite an existing regular file. */
  force?: boolean;
  /** The target already holds this (older) snapshot of the same disk: write only what differs. */
  since?: SnapshotRecord;
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
  durationMs: number;
}

/**
 * Writes a point-in-time disk to a file or block device. A new file is sparse:
 * all-zero chunks become holes. A block device gets zeros written (its old content
 * is not known to be zero). With `since`, only chunks that differ from that
 * snapshot are written, into a target that must already hold it.
 */
export async function restoreDisk(
  repo: Repository,
  record: SnapshotRecord,
  diskIndex: number,
  to: string,
  options: RestoreOptions = {},
): Promise<RestoreReport> {
  const started = Date.now();
  const pool = new WorkerPool(repo, options.workers);
  try {
    const image = openDiskImage(repo, pool, record, diskIndex);
    const st = await fsp.stat(to).catch(() => null);
    const isDevice = st?.isBlockDevice() ?? false;
    let base: SnapshotImage | undefined;
    if (options.since) {
      if (!st) throw new UserError(`--since needs ${to} to exist and hold snapshot ${options.since.id}`);
      base = openDiskImage(repo, pool, options.since, diskIndex);
      if (base.capacity !== image.capacity) {
        throw new UserError(`snapshot ${options.since.id} disk ${diskIndex} is ${base.capacity} bytes, ${record.id}'s is ${image.capacity}: not an incremental restore`);
      }
      const size = isDevice ? await deviceSize(to) : st.size;
      if (size !== image.capacity) {
        throw new UserError(`${to} is ${size} bytes but the disk is ${image.capacity}: it does not hold snapshot ${options.since.id}`);
      }
    } else if (st && st.isFile() && !options.force) {
      throw new UserError(`${to} exists; pass --force to overwrite it, or --since SNAP to update it in place`);
    } else if (st && !st.isFile() && !isDevice) {
      throw new UserError(`${to} is neither a regular file nor a block device`);
    }
    if (isDevice && !options.since) {
      const size = await deviceSize(to);
      if (size < image.capacity) throw new UserError(`block device ${to} is ${size} bytes, smaller than the disk (${image.capacity})`);
    }

    const fh = await fsp.open(to, options.since || isDevice ? 'r+' : 'w');
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
      durationMs: 0,
    };
    try {
      if (!options.since && !isDevice) await fh.truncate(image.capacity);
      options.progress?.start(image.capacity);
      const zero = Buffer.alloc(image.chunkSize);
      const only = base ? image.changedChunks(base) : undefined;
      const writes = new Set<Promise<void>>();
      for await (const c of image.chunks({ only })) {
        let data = c.data;
        if (!data) {
          report.chunksZero++;
          if (!isDevice && !options.since) {
            // a new sparse file: the hole is already there
            options.progress?.advance(c.length);
            continue;
          }
          data = zero.subarray(0, c.length);
        }
        const w = fh.write(data, 0, c.length, c.offset).then(() => {
          report.bytesWritten += c.length;
          report.chunksWritten++;
          options.progress?.advance(c.length);
        });
        writes.add(w);
        w.finally(() => writes.delete(w)).catch(() => {});
        if (writes.size >= 16) await Promise.race(writes);
      }
      await Promise.all(writes);
      await fh.sync();
    } finally {
      options.progress?.stop();
      await fh.close();
    }
    report.durationMs = Date.now() - started;
    return report;
  } finally {
    await pool.close();
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

