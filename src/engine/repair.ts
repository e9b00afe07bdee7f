import { UserError } from '../repo/errors.js';
import { DATA_PREFIX, INDEX_PREFIX, META_PREFIX } from '../repo/format.js';
import { listEpochs } from '../repo/gc-epoch.js';
import { IndexEntry, encodeIndexFile } from '../repo/index-file.js';
import { Lease, LeaseOperation } from '../repo/lease.js';
import { Repository } from '../repo/repository.js';
import { BlobStore } from '../store/blob-store.js';
import { SnapshotCatalog } from '../snapshot/snapshot-record.js';
import { ListedPack, listPacks, listedPacks, readTrailer } from './pack-scan.js';
import { ScratchDb } from './scratch-db.js';
import { verifyRepository } from './verify.js';

export interface RepairIndexReport {
  ok: boolean;
  packs: number;
  packsIndexed: number;
  entries: number;
  indexFilesWritten: number;
  indexFilesRemoved: number;
  /** Temporary files of killed writers removed (directory repositories). */
  tempFilesRemoved: number;
  problems: string[];
}

/** Packs per new index file, as backups write them; and a cap on entries per file. */
const PACKS_PER_INDEX = 8;
const ENTRIES_PER_INDEX = 65536;
const TRAILERS_IN_FLIGHT = 8;

/**
 * Rebuilds the index from pack trailers alone: reads every pack's trailer (ranged
 * reads), writes new index files for what they list, and then removes the index files
 * that existed when it started. When some trailer cannot be read, the old index files
 * are kept (they may be the only record of that pack's blobs) and the run reports it.
 *
 * Index files are listed before packs: a backup writes an index file only after its
 * packs, so every pack an old index file names is in the pack listing, and an index
 * file a concurrent backup adds later is never removed. Refuses while a GC epoch is
 * open, and holds a lease while it runs, so that a prune waits for it. Never deletes a pack.
 * Memory: the old index files' names (about 70 bytes each, one per 8 packs), one index
 * file's entries and TRAILERS_IN_FLIGHT trailers; the pack list is in a scratch LevelDB.
 */
export function repairIndex(repo: Repository): Promise<RepairIndexReport> {
  return underLease(repo, 'other', () => rebuildIndex(repo));
}

/**
 * Runs `f` holding a lease (so a prune that starts meanwhile waits for it to end before
 * deleting anything), after checking that no prune is running or was left unfinished:
 * a GC epoch that has not ended may still delete packs and index files this run reads.
 */
async function underLease<T>(repo: Repository, operation: LeaseOperation, f: () => Promise<T>): Promise<T> {
  const open = (await listEpochs(repo.store)).find((e) => !e.end);
  if (open) {
    throw new UserError(`a prune is running or was interrupted (GC epoch ${open.epoch} has not ended): let it finish ('pilotlight prune') and run repair again; nothing was changed`);
  }
  const lease = await Lease.acquire(repo.store, operation);
  try {
    return await f();
  } finally {
    await lease.release();
  }
}

async function rebuildIndex(repo: Repository): Promise<RepairIndexReport> {
  const old: string[] = [];
  for await (const b of repo.store.list(INDEX_PREFIX)) old.push(b.name);
  const tempFilesRemoved = await sweepTemps(repo.store);
  const scratch = await ScratchDb.open('repair');
  const problems: string[] = [];
  const written = new Set<string>();
  let packs = 0;
  let packsIndexed = 0;
  let entries = 0;
  try {
    const table = scratch.table('p');
    packs = (await listPacks(repo, table)).count;
    let pending: IndexEntry[] = [];
    let pendingPacks = 0;
    const writeIndex = async () => {
      if (pending.length === 0) return;
      const { name, bytes } = encodeIndexFile(pending, repo.sealer, INDEX_PREFIX);
      await repo.store.put(name, bytes, { kind: 'metadata' });
      written.add(name);
      pending = [];
      pendingPacks = 0;
    };
    const one = async (pack: ListedPack) => {
      try {
        const trailer = await readTrailer(repo, pack);
        for (const e of trailer) pending.push({ ...e, packId: pack.id, seal: e.seal ?? repo.blobSeal });
        entries += trailer.length;
        packsIndexed++;
        pendingPacks++;
      } catch (err) {
        problems.push(`pack ${pack.name}: trailer unreadable, its blobs are not indexed: ${(err as Error).message}`);
      }
    };
    let batch: ListedPack[] = [];
    const drain = async () => {
      await Promise.all(batch.map(one));
      batch = [];
      if (pendingPacks >= PACKS_PER_INDEX || pending.length >= ENTRIES_PER_INDEX) await writeIndex();
    };
    for await (const pack of listedPacks(table)) {
      batch.push(pack);
      if (batch.length >= TRAILERS_IN_FLIGHT) await drain();
    }
    await drain();
    await writeIndex();
  } finally {
    await scratch.close();
  }
  let removed = 0;
  if (problems.length === 0) {
    for (const name of old) {
      if (written.has(name)) continue;
      await deleteNonPack(repo.store, name);
      removed++;
    }
  }
  return { ok: problems.length === 0, packs, packsIndexed, entries, indexFilesWritten: written.size, indexFilesRemoved: removed, tempFilesRemoved, problems };
}

export interface DamagedSnapshot {
  id: string;
  vm: string;
  why: string[];
}

export interface RepairSnapshotsReport {
  snapshots: number;
  damaged: DamagedSnapshot[];
  forgotten: string[];
}

/**
 * Names the snapshots whose blobs are missing (a chunk or manifest page not in the
 * index, or in a pack that is gone: the structural checks of verify) and, with forget,
 * removes their records. Their packs stay (prune decides what is garbage). Refuses to
 * forget while the index itself has bad entries: `repair index` first, for the
 * snapshots may be whole.
 */
export async function repairSnapshots(repo: Repository, options: { forget?: boolean } = {}): Promise<RepairSnapshotsReport> {
  const v = await verifyRepository(repo);
  const damaged: DamagedSnapshot[] = [];
  const catalog = new SnapshotCatalog(repo);
  for (const id of v.damagedSnapshots) {
    const record = await catalog.load(id);
    const tag = `snapshot ${id} (${record.vm}): `;
    damaged.push({ id, vm: record.vm, why: v.problems.filter((p) => p.startsWith(tag)).map((p) => p.slice(tag.length)) });
  }
  const forgotten: string[] = [];
  if (options.forget && damaged.length > 0) {
    if (v.pruneDuring) throw new UserError('a prune was deleting while the snapshots were checked, so a missing pack may be its doing: run repair snapshots again once it has finished; nothing was forgotten');
    if (v.badIndexEntries > 0) {
      throw new UserError(
        `the index has ${v.badIndexEntries} bad entr${v.badIndexEntries === 1 ? 'y' : 'ies'}: run 'pilotlight repair index' first (the snapshots may be whole); nothing was forgotten`,
      );
    }
    await underLease(repo, 'forget', async () => {
      const cache = await repo.cache();
      for (const d of damaged) {
        const name = catalog.objectName(d.vm, d.id);
        await deleteNonPack(repo.store, name);
        await cache.deleteRecord(name);
        forgotten.push(d.id);
      }
    });
  }
  return { snapshots: v.snapshots, damaged, forgotten };
}

/** Repair's only delete: refuses pack names, so no repair path can ever remove data. */
async function deleteNonPack(store: BlobStore, name: string): Promise<void> {
  if (name.startsWith(DATA_PREFIX) || name.startsWith(META_PREFIX)) throw new Error(`repair must never delete a pack (${name})`);
  await store.delete(name);
}

/** Directory repositories: removes killed writers' temporary files (FsStore.sweepTemp), through any decorators. */
async function sweepTemps(store: BlobStore): Promise<number> {
  for (let s: unknown = store; s; s = (s as { inner?: unknown }).inner) {
    const sweep = (s as { sweepTemp?: () => Promise<number> }).sweepTemp;
    if (typeof sweep === 'function') return sweep.call(s);
  }
  return 0;
}
