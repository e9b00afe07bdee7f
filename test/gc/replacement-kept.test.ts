/**
 * Index files are named by their content. When a prune's compaction keeps exactly the
 * entries of a file it supersedes (an earlier prune's merged replacement, merged again with
 * a file all of whose packs are condemned), the replacement it writes has that file's name:
 * the prune must not delete it as superseded (it did, and left the repository without an
 * index: "manifest page ... is not in the index").
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { prune } from '../../src/engine/prune.js';
import { INDEX_PREFIX } from '../../src/repo/format.js';
import { SnapshotCatalog } from '../../src/snapshot/snapshot-record.js';
import { FsStore } from '../../src/store/fs-store.js';
import { MiB, backup, fileHash, image, newRepo, openAs, restoresAll, verifyClean } from './harness.js';

describe('a compaction that rewrites an index file unchanged', () => {
  let root = '';
  after(async () => root && fsp.rm(root, { recursive: true, force: true }));

  it('keeps it: the index survives, every snapshot restores, verify is clean', async () => {
    root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-gc-same-name-'));
    const repoDir = path.join(root, 'repo');
    const repo = await newRepo(new FsStore(repoDir), path.join(root, 'cache'));
    try {
      for (const [vm, seed] of [['x', 61], ['y', 62], ['z', 63]] as const) await image(path.join(root, `${vm}.img`), 2 * MiB, seed);
      const x = await backup(repo, 'x', path.join(root, 'x.img'));
      const y = await backup(repo, 'y', path.join(root, 'y.img'));
      const first = await prune(repo, { pollMs: 20 }); // merges x's and y's index files into one replacement
      assert.equal(first.indexFiles.written, 1, JSON.stringify(first.indexFiles));
      const z = await backup(repo, 'z', path.join(root, 'z.img'));
      await new SnapshotCatalog(repo).delete(z.snapshot, 'z'); // every pack of z's is garbage now
      const second = await prune(repo, { pollMs: 20 });
      assert.ok(second.deleted.packs > 0 && second.indexFiles.superseded === 2, JSON.stringify(second));
      const names: string[] = [];
      for await (const b of repo.store.list(INDEX_PREFIX)) names.push(b.name);
      assert.equal(names.length, 1, `one index file remains: ${names.join(', ')}`);
      const fresh = await openAs(new FsStore(repoDir), path.join(root, 'cache-fresh'));
      try {
        const expected = new Map([
          [x.snapshot, await fileHash(path.join(root, 'x.img'))],
          [y.snapshot, await fileHash(path.join(root, 'y.img'))],
        ]);
        assert.deepEqual(await restoresAll(fresh, expected, root), []);
        assert.deepEqual(await verifyClean(fresh), []);
      } finally {
        await fresh.close();
      }
    } finally {
      await repo.close();
    }
  });
});
