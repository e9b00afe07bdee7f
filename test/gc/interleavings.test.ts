/**
 * Backups running while a prune runs, with the interleaving forced at each step
 * of the protocol (the pausing store double holds one operation until the test
 * lets it go). In every case the backup deduplicates against exactly the blobs
 * the prune condemns (it backs up again the image of a forgotten snapshot),
 * and afterwards every committed snapshot restores byte-identical and
 * `verify --read-data` finds nothing wrong.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FencedError } from '../../src/engine/backup-guard.js';
import { PruneReport, PruneStep, prune } from '../../src/engine/prune.js';
import { Repository } from '../../src/repo/repository.js';
import { SnapshotCatalog } from '../../src/snapshot/snapshot-record.js';
import { FsStore } from '../../src/store/fs-store.js';
import { Gate, PausingStoreDouble } from '../support/pausing-store-double.js';
import { MiB, backup, fileHash, image, newRepo, openAs, restoresAll, verifyClean } from './harness.js';

process.env.PILOTLIGHT_LEASE_EXPIRY_MS = '1500';

const STEPS: PruneStep[] = ['listed', 'marked', 'published', 'reread', 'waited', 'final-reread', 'rewritten', 'done', 'deleted'];

interface Case {
  dir: string;
  repoDir: string;
  expected: Map<string, string>;
  imageX: string;
  hashX: string;
}

/** A prune that stops at `step` until released. */
function pausedPrune(repo: Repository, step: PruneStep): { reached: Promise<void>; release: () => void; done: Promise<PruneReport> } {
  let reached!: () => void;
  let release!: () => void;
  const r = new Promise<void>((res) => (reached = res));
  const gate = new Promise<void>((res) => (release = res));
  const done = prune(repo, {
    pollMs: 20,
    onStep: async (s) => {
      if (s === step) {
        reached();
        await gate;
      }
    },
  });
  done.catch(() => reached()); // a failure must not leave the test waiting
  return { reached: r, release, done };
}

describe('prune and backups interleaved at each protocol step', () => {
  let root: string;
  let template: string;
  let hashX: string;
  let hashY: string;
  let ySnap: string;

  before(async () => {
    root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-gc-inter-'));
    template = path.join(root, 'template');
    await fsp.mkdir(template);
    const repo = await newRepo(new FsStore(path.join(template, 'repo')), path.join(template, 'cache'));
    await image(path.join(template, 'x.img'), 4 * MiB, 11);
    await image(path.join(template, 'y.img'), 4 * MiB, 12);
    hashX = await fileHash(path.join(template, 'x.img'));
    hashY = await fileHash(path.join(template, 'y.img'));
    const sx = await backup(repo, 'x', path.join(template, 'x.img'));
    ySnap = (await backup(repo, 'y', path.join(template, 'y.img'))).snapshot;
    await prune(repo, { pollMs: 20 }); // epoch 1: the index files as listed now are "settled" for later prunes
    await new SnapshotCatalog(repo).delete(sx.snapshot); // x's blobs are now garbage the prune condemns
    await repo.close();
  });

  after(async () => fsp.rm(root, { recursive: true, force: true }));

  let n = 0;
  async function freshCase(): Promise<Case> {
    const dir = path.join(root, `case-${n++}`);
    await fsp.cp(template, dir, { recursive: true });
    return { dir, repoDir: path.join(dir, 'repo'), expected: new Map([[ySnap, hashY]]), imageX: path.join(dir, 'x.img'), hashX };
  }

  async function check(c: Case): Promise<void> {
    const repo = await openAs(new FsStore(c.repoDir), path.join(c.dir, 'cache-check'));
    try {
      assert.deepEqual(await restoresAll(repo, c.expected, c.dir), []);
      assert.deepEqual(await verifyClean(repo), []);
      // and a second prune afterwards finds a consistent repository
      await prune(repo, { pollMs: 20 });
      assert.deepEqual(await restoresAll(repo, c.expected, c.dir), []);
      assert.deepEqual(await verifyClean(repo), []);
    } finally {
      await repo.close();
    }
  }

  const hosts = (c: Case) => ({
    backupHost: path.join(c.dir, 'cache'), // has the index loaded, x's blobs included
    pruneHost: path.join(c.dir, 'cache-prune'),
  });

  for (const step of ['listed', 'marked', 'published', 'reread'] as PruneStep[]) {
    it(`a backup that looked everything up before the epoch commits while the prune is at '${step}'`, async () => {
      const c = await freshCase();
      const bStore = new PausingStoreDouble(new FsStore(c.repoDir));
      const commit = bStore.pause((op, name) => op === 'put' && name.startsWith('snapshots/'));
      const bRepo = await openAs(bStore, hosts(c).backupHost);
      const pRepo = await openAs(new FsStore(c.repoDir), hosts(c).pruneHost);
      try {
        const b = backup(bRepo, 'x', c.imageX);
        await commit.reached;
        const p = pausedPrune(pRepo, step);
        await p.reached;
        commit.release();
        const report = await b;
        c.expected.set(report.snapshot, c.hashX);
        p.release();
        await p.done;
      } finally {
        await bRepo.close();
        await pRepo.close();
      }
      await check(c);
    });
  }

  for (const step of ['published', 'reread', 'waited', 'final-reread'] as PruneStep[]) {
    it(`a backup in mid-run when the epoch is published (prune held at '${step}') stores condemned blobs again`, async () => {
      const c = await freshCase();
      const bStore = new PausingStoreDouble(new FsStore(c.repoDir));
      const firstReuse = bStore.pause((op, name) => op === 'head' && name.startsWith('data/'));
      const bRepo = await openAs(bStore, hosts(c).backupHost);
      const pRepo = await openAs(new FsStore(c.repoDir), hosts(c).pruneHost);
      try {
        const b = backup(bRepo, 'x', c.imageX);
        await firstReuse.reached;
        const p = pausedPrune(pRepo, step);
        await p.reached;
        firstReuse.release();
        const report = await b;
        c.expected.set(report.snapshot, c.hashX);
        if (step === 'published' || step === 'reread') assert.ok(report.blobsStoredAgain > 0, 'reused blobs of condemned packs were stored again');
        else assert.ok(report.chunksNew > 0, 'lookups after the acknowledgement missed the condemned packs');
        p.release();
        const pr = await p.done;
        assert.equal(pr.leases.fenced.length, 0, 'a live backup is never fenced');
        assert.ok(pr.blobs.condemned > 0, 'the prune condemned the blobs the backup reused');
      } finally {
        await bRepo.close();
        await pRepo.close();
      }
      await check(c);
    });
  }

  for (const step of STEPS) {
    it(`a backup that starts while the prune is at '${step}' commits a complete snapshot`, async () => {
      const c = await freshCase();
      const bRepo = await openAs(new FsStore(c.repoDir), hosts(c).backupHost);
      const pRepo = await openAs(new FsStore(c.repoDir), hosts(c).pruneHost);
      try {
        const p = pausedPrune(pRepo, step);
        await p.reached;
        const report = await backup(bRepo, 'x', c.imageX);
        c.expected.set(report.snapshot, c.hashX);
        p.release();
        await p.done;
      } finally {
        await bRepo.close();
        await pRepo.close();
      }
      await check(c);
    });
  }

  it('a backup suspended longer than the lease expiry is fenced: it fails and commits nothing, the prune goes on', async () => {
    const c = await freshCase();
    const bStore = new PausingStoreDouble(new FsStore(c.repoDir));
    const firstReuse = bStore.pause((op, name) => op === 'head' && name.startsWith('data/'));
    const bRepo = await openAs(bStore, hosts(c).backupHost);
    const pRepo = await openAs(new FsStore(c.repoDir), hosts(c).pruneHost);
    try {
      const b = backup(bRepo, 'x', c.imageX);
      b.catch(() => {});
      await firstReuse.reached;
      const frozen: Gate = bStore.pause(() => true); // every request of the backup now hangs: a suspended host
      firstReuse.release();
      const pr = await prune(pRepo, { pollMs: 20 });
      assert.equal(pr.leases.fenced.length, 1, `the suspended backup was fenced: ${JSON.stringify(pr)}`);
      assert.ok(pr.blobs.condemned > 0 && pr.deleted.packs > 0, 'and the prune deleted what it condemned');
      frozen.release();
      await assert.rejects(b, (err: Error) => err instanceof FencedError);
    } finally {
      await bRepo.close();
      await pRepo.close();
    }
    await check(c);
  });

  it('a fenced backup killed right after putting its record: the record does not count', async () => {
    const c = await freshCase();
    const bStore = new PausingStoreDouble(new FsStore(c.repoDir));
    const atCommit = bStore.pause((op, name) => op === 'put' && name.startsWith('snapshots/'));
    const bRepo = await openAs(bStore, hosts(c).backupHost);
    const pRepo = await openAs(new FsStore(c.repoDir), hosts(c).pruneHost);
    let b: Promise<unknown> | null = null;
    let killed: Gate | null = null;
    try {
      b = backup(bRepo, 'x', c.imageX);
      b.catch(() => {});
      const recordName = await atCommit.reached;
      const frozen = bStore.pause((_op, name) => name !== recordName); // suspended at its commit
      const pr = await prune(pRepo, { pollMs: 20 });
      assert.equal(pr.leases.fenced.length, 1);
      // the record put goes through; the process dies before its fence check ("killed")
      killed = bStore.pause((_op, name) => name !== recordName);
      frozen.release();
      atCommit.release();
      await new Promise((r) => setTimeout(r, 300));
      assert.ok(await new FsStore(c.repoDir).head(recordName), 'the record was put');
      const check1 = await openAs(new FsStore(c.repoDir), path.join(c.dir, 'cache-reader'));
      try {
        const ids = (await new SnapshotCatalog(check1).list()).map((r) => r.id);
        assert.deepEqual(ids, [ySnap], 'the fenced record is not committed');
      } finally {
        await check1.close();
      }
    } finally {
      killed?.release();
      await b?.catch(() => {});
      await bRepo.close();
      await pRepo.close();
    }
    await check(c);
  });
});
