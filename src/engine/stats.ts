import { BlobType } from '../repo/format.js';
import { Repository } from '../repo/repository.js';
import { SnapshotCatalog } from '../snapshot/snapshot-record.js';
import { WorkerPool } from './worker-pool.js';
import { openDiskImage } from './snapshot-image.js';

export interface RepoStats {
  snapshots: number;
  vms: number;
  /** Non-zero bytes protected, summed over every snapshot and disk. */
  logicalBytes: number;
  /** Bytes of every object in the repository. */
  storedBytes: number;
  uniqueChunks: number;
  /** Plaintext bytes of the unique chunks. */
  uniqueBytes: number;
  /** logicalBytes / uniqueBytes. */
  dedupRatio: number;
  /** uniqueBytes / bytes the unique chunks take in packs. */
  compressionRatio: number;
  objects: number;
}

export async function repositoryStats(repo: Repository): Promise<RepoStats> {
  const catalog = new SnapshotCatalog(repo);
  const snaps = await catalog.list();
  const logicalBytes = snaps.reduce((s, r) => s + r.disks.reduce((t, d) => t + d.nonZeroBytes, 0), 0);
  let storedBytes = 0;
  let objects = 0;
  for await (const b of repo.store.list('')) {
    storedBytes += b.size;
    objects++;
  }
  let uniqueChunks = 0;
  let uniqueBytes = 0;
  let packedBytes = 0;
  for await (const e of (await repo.cache()).entries()) {
    if (e.type !== BlobType.Data) continue;
    uniqueChunks++;
    uniqueBytes += e.rawLength;
    packedBytes += e.length;
  }
  return {
    snapshots: snaps.length,
    vms: new Set(snaps.map((s) => s.vm)).size,
    logicalBytes,
    storedBytes,
    uniqueChunks,
    uniqueBytes,
    dedupRatio: uniqueBytes ? logicalBytes / uniqueBytes : 0,
    compressionRatio: packedBytes ? uniqueBytes / packedBytes : 0,
    objects,
  };
}

export interface DiskDiff {
  disk: string;
  status: 'changed' | 'added' | 'removed' | 'resized';
  changedChunks: number;
  changedBytes: number;
}

/** Chunks that differ between two snapshots, per disk, from the manifests alone. */
export async function diffSnapshots(repo: Repository, refA: string, refB: string, vm?: string): Promise<{ a: string; b: string; disks: DiskDiff[] }> {
  const catalog = new SnapshotCatalog(repo);
  const a = await catalog.resolve(refA, vm);
  const b = await catalog.resolve(refB, vm);
  const pool = new WorkerPool(repo, 1);
  try {
    const out: DiskDiff[] = [];
    for (let j = 0; j < b.disks.length; j++) {
      const db = b.disks[j]!;
      const ia = a.disks.findIndex((d) => d.name === db.name);
      if (ia < 0) {
        out.push({ disk: db.name, status: 'added', changedChunks: 0, changedBytes: db.nonZeroBytes });
        continue;
      }
      const da = a.disks[ia]!;
      if (da.capacity !== db.capacity) {
        out.push({ disk: db.name, status: 'resized', changedChunks: 0, changedBytes: db.nonZeroBytes });
        continue;
      }
      const imgA = openDiskImage(repo, pool, a, ia);
      const imgB = openDiskImage(repo, pool, b, j);
      let chunks = 0;
      let bytes = 0;
      for await (const i of imgB.changedChunks(imgA)) {
        chunks++;
        bytes += Math.min(db.chunkSize, db.capacity - i * db.chunkSize);
      }
      out.push({ disk: db.name, status: 'changed', changedChunks: chunks, changedBytes: bytes });
    }
    for (const da of a.disks) {
      if (!b.disks.some((d) => d.name === da.name)) out.push({ disk: da.name, status: 'removed', changedChunks: 0, changedBytes: da.nonZeroBytes });
    }
    return { a: a.id, b: b.id, disks: out };
  } finally {
    await pool.close();
  }
}
