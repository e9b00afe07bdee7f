/**
 * Listings are not trusted blindly: a listing of packs, index files or snapshot
 * records that fails, comes back empty, is cut short or repeats names makes the
 * prune stop with nothing deleted (restic #4612/#4619, duplicacy PR 655).
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { prune } from '../../src/engine/prune.js';
import { UserError } from '../../src/repo/errors.js';
import { SnapshotCatalog } from '../../src/snapshot/snapshot-record.js';
import { FsStore } from '../../src/store/fs-store.js';
import { ListingFault, ListingFaultsDouble } from '../support/listing-faults-double.js';
import { MiB, backup, fileHash, image, mutateChunks, newRepo, objectNames, openAs, restoresAll, verifyClean } from './harness.js';

describe('prune: untrusted listings', () => {
  let dir: string;
  let repoDir: string;
  const expected = new Map<string, string>();

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-gc-list-'));
    repoDir = path.join(dir, 'repo');
    const repo = await newRepo(new FsStore(repoDir), path.join(dir, 'cache'));
    const img = path.join(dir, 'a.img');
    await image(img, 4 * MiB, 1);
    const first = await backup(repo, 'a', img);
    await mutateChunks(img, 20, 2);
    const second = await backup(repo, 'a', img);
    expected.set(second.snapshot, await fileHash(img));
    await mutateChunks(img, 10, 3);
    const third = await backup(repo, 'b', img);
    expected.set(third.snapshot, await fileHash(img));
    await new SnapshotCatalog(repo).delete(first.snapshot); // garbage for the prune to find
    await new SnapshotCatalog(repo).list(); // this host has seen the records (as a host that pruned before has)
    await repo.close();
  });

  after(async () => fsp.rm(dir, { recursive: true, force: true }));

  const cases: [string, ListingFault][] = [];
  for (const prefix of ['data/', 'meta/', 'index/', 'snapshots/']) for (const f of ['fail', 'empty', 'short', 'duplicate'] as ListingFault[]) cases.push([prefix, f]);

  for (const [prefix, fault] of cases) {
    it(`a ${fault} listing of ${prefix} aborts with nothing deleted`, async () => {
      const before = await objectNames(new FsStore(repoDir));
      const store = new ListingFaultsDouble(new FsStore(repoDir));
      store.faults.set(prefix, fault);
      const repo = await openAs(store, path.join(dir, 'cache'));
      try {
        await assert.rejects(prune(repo, { pollMs: 20 }), (err: Error) => {
          assert.ok(err instanceof UserError, `a clear error, got ${err.stack}`);
          assert.match(err.message, /prune stopped, nothing deleted|listing|short|twice|failed/);
          return true;
        });
      } finally {
        await repo.close();
      }
      assert.deepEqual(await objectNames(new FsStore(repoDir)), before, 'nothing deleted or added');
    });
  }

  it('with honest listings the same repository prunes, restores and verifies', async () => {
    const repo = await openAs(new FsStore(repoDir), path.join(dir, 'cache'));
    try {
      const r = await prune(repo, { pollMs: 20 });
      assert.ok(r.deleted.packs + r.repacked.packs > 0, 'the forgotten snapshot left garbage to collect');
      assert.deepEqual(await restoresAll(repo, expected, dir), []);
      assert.deepEqual(await verifyClean(repo), []);
    } finally {
      await repo.close();
    }
  });
});
