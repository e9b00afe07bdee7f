/**
 * Readers that hold no lease, while a prune deletes. verify: a run that listed the
 * index before the prune removed packs would report them missing (and `repair
 * snapshots --forget` would then forget live snapshots); it sees the GC epochs move
 * and runs again, and a pack deleted by hand with no prune running is still reported.
 * restore: a pack repacked away under it is looked up again after catching up with
 * the epoch, and the restore completes byte-identical.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { prune } from '../../src/engine/prune.js';
import { restoreDisk } from '../../src/engine/restore.js';
import { verifyRepository } from '../../src/engine/verify.js';
import { SnapshotCatalog } from '../../src/snapshot/snapshot-record.js';
import { FsStore } from '../../src/store/fs-store.js';
import { PausingStoreDouble } from '../support/pausing-store-double.js';
import { MiB, backup, fileHash, image, mutateChunks, newRepo, openAs, restoresAll } from './harness.js';

process.env.PILOTLIGHT_LEASE_EXPIRY_MS = '1000';

describe('verify and restore during a prune', () => {
  const roots: string[] = [];
  after(async () => {
    for (const r of roots) await fsp.rm(r, { recursive: true, force: true });
  });

  /** A repository with two snapshots of x, the first forgotten: a prune has packs to delete and blobs to repack. */
  async function setUp(): Promise<{ dir: string; keep: string; hash: string }> {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-verify-prune-'));
    roots.push(dir);
    const img = path.join(dir, 'x.img');
    await image(img, 4 * MiB, 7);
    const repo = await newRepo(new FsStore(path.join(dir, 'repo')), path.join(dir, 'cache-w'));
    try {
      const first = await backup(repo, 'x', img);
      await mutateChunks(img, 40, 8);
      const keep = (await backup(repo, 'x', img)).snapshot;
      await new SnapshotCatalog(repo).delete(first.snapshot);
      return { dir, keep, hash: await fileHash(img) };
    } finally {
      await repo.close();
    }
  }

  it('packs a prune deletes after verify listed the index are not reported missing; verify runs again', async () => {
    const { dir, keep, hash } = await setUp();
    const vStore = new PausingStoreDouble(new FsStore(path.join(dir, 'repo')));
    const vRepo = await openAs(vStore, path.join(dir, 'cache-v'));
    const pRepo = await openAs(new FsStore(path.join(dir, 'repo')), path.join(dir, 'cache-p'));
    try {
      await vRepo.cache(); // the verifying host's cache is from before the prune
      let indexListings = 0;
      vStore.pause((op, name) => op === 'list' && name.startsWith('index') && (indexListings++, false));
      // held after it loaded the index files, before it lists the packs
      const atPacks = vStore.pause((op, name) => op === 'list' && name.startsWith('data'));
      const v = verifyRepository(vRepo, { readData: true, workers: 1 });
      await atPacks.reached;
      const pr = await prune(pRepo, { pollMs: 20 });
      assert.ok(pr.deleted.packs > 0, `the prune deleted packs the verify had indexed: ${JSON.stringify(pr.deleted)}`);
      atPacks.release();
      const report = await v;
      assert.deepEqual(report.problems, []);
      assert.equal(report.ok, true);
      assert.equal(report.pruneDuring, undefined);
      assert.ok(indexListings >= 2, `verify ran again after the prune (${indexListings} index listings)`);
      assert.deepEqual(await restoresAll(pRepo, new Map([[keep, hash]]), dir), []);
    } finally {
      await vRepo.close();
      await pRepo.close();
    }
  });

  it('a pack deleted by hand with no prune running is still reported', async () => {
    const { dir } = await setUp();
    const store = new FsStore(path.join(dir, 'repo'));
    const repo = await openAs(store, path.join(dir, 'cache-v'));
    try {
      const packs: string[] = [];
      for await (const b of store.list('data/')) packs.push(b.name);
      await fsp.rm(path.join(dir, 'repo', packs.sort()[0]!));
      const report = await verifyRepository(repo);
      assert.equal(report.ok, false);
      assert.ok(report.problems.some((p) => /missing from the repository/.test(p)), report.problems.join('\n'));
      assert.equal(report.pruneDuring, undefined);
    } finally {
      await repo.close();
    }
  });

  it('a restore whose packs a prune repacks away mid-restore reads the blobs from their new packs', async () => {
    const { dir, keep, hash } = await setUp();
    const rStore = new PausingStoreDouble(new FsStore(path.join(dir, 'repo')));
    const rRepo = await openAs(rStore, path.join(dir, 'cache-r'));
    const pRepo = await openAs(new FsStore(path.join(dir, 'repo')), path.join(dir, 'cache-p'));
    try {
      const record = await new SnapshotCatalog(rRepo).load(keep);
      const atFirstPack = rStore.pause((op, name) => op === 'get' && name.startsWith('data/'));
      const to = path.join(dir, 'restored.img');
      const r = restoreDisk(rRepo, record, 0, to, { workers: 1 });
      await atFirstPack.reached; // the restore looked its chunks up in its cache, from before the prune
      const pr = await prune(pRepo, { pollMs: 20 });
      assert.ok(pr.repacked.packs > 0 && pr.repacked.blobsCopied > 0, `the prune repacked live blobs: ${JSON.stringify(pr.repacked)}`);
      atFirstPack.release();
      await r;
      assert.equal(await fileHash(to), hash);
    } finally {
      await rRepo.close();
      await pRepo.close();
    }
  });
});
