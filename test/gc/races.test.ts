/**
 * Two prunes racing for one epoch; backups whose clocks are a day off while a
 * prune waits for them (nothing is judged by timestamps: they are not fenced);
 * a host's local cache catching up after a prune instead of rebuilding.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { prune } from '../../src/engine/prune.js';
import { UserError } from '../../src/repo/errors.js';
import { LocalCache } from '../../src/repo/local-cache.js';
import { SnapshotCatalog } from '../../src/snapshot/snapshot-record.js';
import { FsStore } from '../../src/store/fs-store.js';
import { PausingStoreDouble } from '../support/pausing-store-double.js';
import { MiB, backup, fileHash, image, mutateChunks, newRepo, openAs, restoresAll, verifyClean } from './harness.js';

process.env.PILOTLIGHT_LEASE_EXPIRY_MS = '1000';

describe('prune races, skewed clocks, cache catch-up', () => {
  let root: string;
  let template: string;
  let ySnap: string;
  let hashY: string;
  let n = 0;

  before(async () => {
    root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-gc-race-'));
    template = path.join(root, 'template');
    await fsp.mkdir(template);
    const repo = await newRepo(new FsStore(path.join(template, 'repo')), path.join(template, 'cache'));
    await image(path.join(template, 'x.img'), 4 * MiB, 41);
    await image(path.join(template, 'y.img'), 4 * MiB, 42);
    hashY = await fileHash(path.join(template, 'y.img'));
    const sx = await backup(repo, 'x', path.join(template, 'x.img'));
    ySnap = (await backup(repo, 'y', path.join(template, 'y.img'))).snapshot;
    await prune(repo, { pollMs: 20 });
    await new SnapshotCatalog(repo).delete(sx.snapshot);
    await repo.close();
  });
  after(async () => fsp.rm(root, { recursive: true, force: true }));

  async function fresh(): Promise<string> {
    const dir = path.join(root, `case-${n++}`);
    await fsp.cp(template, dir, { recursive: true });
    return dir;
  }

  it('two prunes racing: one publishes the epoch, the other stops with a clear message and deletes nothing', async () => {
    const dir = await fresh();
    const a = await openAs(new FsStore(path.join(dir, 'repo')), path.join(dir, 'cache-a'));
    const b = await openAs(new FsStore(path.join(dir, 'repo')), path.join(dir, 'cache-b'));
    try {
      let release!: () => void;
      let reached!: () => void;
      const atMarked = new Promise<void>((r) => (reached = r));
      const gate = new Promise<void>((r) => (release = r));
      const pa = prune(a, { pollMs: 20, onStep: async (s) => (s === 'marked' ? (reached(), gate) : undefined) });
      await atMarked; // a has decided and is about to publish the same epoch number b will take
      const rb = await prune(b, { pollMs: 20 });
      assert.ok(rb.epoch !== null && rb.deleted.packs > 0);
      release();
      await assert.rejects(pa, (err: Error) => err instanceof UserError && /another prune published GC epoch \d+ first/.test(err.message));
      const expected = new Map([[ySnap, hashY]]);
      assert.deepEqual(await restoresAll(b, expected, dir), []);
      assert.deepEqual(await verifyClean(b), []);
    } finally {
      await a.close();
      await b.close();
    }
  });

  for (const [label, offset] of [
    ['a day behind', -86_400_000],
    ['a day ahead', 86_400_000],
  ] as const) {
    it(`a live backup whose clock is ${label} is waited for, not fenced, while the prune outlasts the lease expiry`, async () => {
      const dir = await fresh();
      process.env.PILOTLIGHT_TEST_CLOCK_OFFSET_MS = String(offset);
      const bStore = new PausingStoreDouble(new FsStore(path.join(dir, 'repo')));
      const bRepo = await openAs(bStore, path.join(dir, 'cache'));
      const pRepo = await openAs(new FsStore(path.join(dir, 'repo')), path.join(dir, 'cache-p'));
      try {
        const mid = bStore.pause((op, name) => op === 'head' && name.startsWith('data/'));
        const b = backup(bRepo, 'x', path.join(dir, 'x.img'));
        await mid.reached;
        // the backup keeps refreshing its lease but cannot read the new epoch yet: it cannot acknowledge
        const noEpochs = bStore.pause((op, name) => op === 'get' && name.startsWith('gc/'));
        mid.release();
        const started = Date.now();
        let stepWaited = false;
        const p = prune(pRepo, { pollMs: 20, onStep: (s) => void (s === 'waited' && (stepWaited = true)) });
        await new Promise((r) => setTimeout(r, 3000)); // three lease expiries
        assert.equal(stepWaited, false, 'the prune is still waiting for the live backup');
        noEpochs.release();
        const report = await b;
        const pr = await p;
        assert.ok(Date.now() - started >= 3000);
        assert.deepEqual(pr.leases.fenced, [], 'a refreshing lease is never fenced, whatever its timestamps say');
        assert.equal(pr.leases.acknowledged + pr.leases.ended, 1);
        const hashX = await fileHash(path.join(dir, 'x.img'));
        assert.deepEqual(await restoresAll(pRepo, new Map([[ySnap, hashY], [report.snapshot, hashX]]), dir), []);
        assert.deepEqual(await verifyClean(pRepo), []);
      } finally {
        delete process.env.PILOTLIGHT_TEST_CLOCK_OFFSET_MS;
        await bRepo.close();
        await pRepo.close();
      }
    });
  }

  it("another host's cache catches up after a prune: condemned entries dropped, replacements loaded, no rebuild", async () => {
    const dir = await fresh();
    const hostB = path.join(dir, 'cache'); // synced before the prune
    const img = path.join(dir, 'y.img');
    const p = await openAs(new FsStore(path.join(dir, 'repo')), path.join(dir, 'cache-p'));
    // more index files for the prune to compact
    for (let i = 0; i < 3; i++) {
      await mutateChunks(img, 4, 50 + i);
      await backup(p, 'y', img);
    }
    const pr = await prune(p, { pollMs: 20 });
    await p.close();
    assert.ok(pr.indexFiles.superseded > 0 && pr.indexFiles.written > 0 && pr.blobs.condemned > 0, JSON.stringify(pr));

    const repo = await openAs(new FsStore(path.join(dir, 'repo')), hostB);
    try {
      const cache: LocalCache = await repo.cache(); // sync() ran
      const files = (await cache.indexFiles()).sort();
      const listed: string[] = [];
      for await (const b of repo.store.list('index/')) listed.push(b.name);
      assert.deepEqual(files, listed.sort(), 'the cache holds exactly the index files that exist');
      assert.equal(await cache.appliedEpoch(), pr.epoch);
      let entries = 0;
      for await (const e of cache.entries()) {
        entries++;
        const name = `${e.type === 0 ? 'data' : 'meta'}/${e.packId.toString('hex').slice(0, 2)}/${e.packId.toString('hex')}`;
        assert.ok(await repo.store.head(name), `cache entry ${e.id.toString('hex')} points at an existing pack`);
      }
      assert.ok(entries > 0);
      assert.deepEqual(await verifyClean(repo), []);
    } finally {
      await repo.close();
    }
  });
});
