/** Shared set-up for the GC tests: real repositories, real images, real backups and restores. */
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { BackupReport, runBackup } from '../../src/engine/backup.js';
import { restoreDisk } from '../../src/engine/restore.js';
import { verifyRepository } from '../../src/engine/verify.js';
import { Repository } from '../../src/repo/repository.js';
import { SnapshotCatalog } from '../../src/snapshot/snapshot-record.js';
import { FileSource } from '../../src/source/file-source.js';
import { BlobStore } from '../../src/store/blob-store.js';
import { FsStore } from '../../src/store/fs-store.js';
import { Rng, fill, makeImage } from '../support/images.js';

export const MiB = 1 << 20;
export const PASSWORD = 'correct horse battery staple';

export async function newRepo(store: BlobStore, cacheRoot: string): Promise<Repository> {
  const repo = await Repository.init(store, { encrypted: true, password: PASSWORD, packSize: MiB });
  await repo.close();
  return Repository.open(await reopen(store), { password: PASSWORD }, cacheRoot);
}

/** A second handle on the same store location (a store is closed with its repository). */
export async function reopen(store: BlobStore): Promise<BlobStore> {
  if (store instanceof FsStore) return new FsStore(store.root);
  return store;
}

export function openAs(store: BlobStore, cacheRoot: string): Promise<Repository> {
  return Repository.open(store, { password: PASSWORD }, cacheRoot);
}

export async function backup(repo: Repository, vm: string, image: string): Promise<BackupReport> {
  const src = await FileSource.open(vm, [image], { full: true });
  try {
    return await runBackup(repo, src, { workers: 1, parent: 'none' });
  } finally {
    await src.close();
  }
}

export async function fileHash(file: string): Promise<string> {
  return createHash('sha256').update(await fsp.readFile(file)).digest('hex');
}

/** Restores every committed snapshot and compares it with the hash recorded at backup time. */
export async function restoresAll(repo: Repository, expected: Map<string, string>, scratchDir: string): Promise<string[]> {
  const problems: string[] = [];
  const list = await new SnapshotCatalog(repo).list();
  for (const r of list) {
    const want = expected.get(r.id);
    if (!want) {
      problems.push(`snapshot ${r.id} is not one the test committed`);
      continue;
    }
    const to = path.join(scratchDir, `restore-${r.id}.img`);
    await restoreDisk(repo, r, 0, to, { force: true, workers: 1 });
    const got = await fileHash(to);
    await fsp.rm(to, { force: true });
    if (got !== want) problems.push(`snapshot ${r.id} restored different bytes`);
  }
  return problems;
}

export async function verifyClean(repo: Repository): Promise<string[]> {
  const r = await verifyRepository(repo, { readData: true, workers: 1 });
  return r.ok ? [] : r.problems;
}

/** A disk image of random, text and zero regions (seeded). */
export async function image(file: string, size: number, seed: number): Promise<void> {
  await makeImage(
    file,
    size,
    [
      { offset: 0, length: size / 4, kind: 'random' },
      { offset: size / 4, length: size / 4, kind: 'text' },
      { offset: size / 2 + size / 8, length: size / 4, kind: 'random' },
    ],
    seed,
  );
}

/** Overwrites `count` random 64 KiB-aligned chunks with new random bytes. */
export async function mutateChunks(file: string, count: number, seed: number): Promise<void> {
  const rng = new Rng(seed);
  const size = (await fsp.stat(file)).size;
  const fh = await fsp.open(file, 'r+');
  try {
    for (let i = 0; i < count; i++) {
      const off = rng.int(Math.floor(size / 65536)) * 65536;
      await fh.write(fill('random', 65536, rng), 0, 65536, off);
    }
  } finally {
    await fh.close();
  }
}

/** Every object name in an FsStore directory, relative, leases/ left out (they come and go). */
export async function objectNames(store: BlobStore): Promise<string[]> {
  const out: string[] = [];
  for (const p of ['data/', 'meta/', 'index/', 'snapshots/', 'gc/', 'fences/', 'keys/']) for await (const b of store.list(p)) out.push(b.name);
  return out.sort();
}
