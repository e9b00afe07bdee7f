/**
 * Object Lock on a real Ceph RGW (16.2): init --immutable-days, retain-until dates on
 * every object a snapshot needs, forget behind a tombstone, retention extension and
 * deletion of what lapsed, and a stolen credential that cannot destroy anything.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
} from '@aws-sdk/client-s3';
import { forgetSnapshots, clearLapsedTombstones } from '../../src/engine/forget.js';
import { prune } from '../../src/engine/prune.js';
import { verifyRepository } from '../../src/engine/verify.js';
import { runBackup } from '../../src/engine/backup.js';
import { deleteLapsed, extendLiveRetention, isLockedName } from '../../src/repo/object-lock.js';
import { Repository } from '../../src/repo/repository.js';
import { SnapshotCatalog } from '../../src/snapshot/snapshot-record.js';
import { FileSource } from '../../src/source/file-source.js';
import { BlobStore, isLocked } from '../../src/store/blob-store.js';
import { openStore } from '../../src/store/open-store.js';
import { storeConformance } from '../store/conformance.js';
import { ok, run, scratch } from '../support/cli.js';
import { makeImage, mutate, sameBytes } from '../support/images.js';
import { dropBucket, freshBucket, rgw } from '../support/rgw.js';

const MiB = 1 << 20;
const buckets: string[] = [];
after(async () => {
  await Promise.all(buckets.map((b) => dropBucket(b)));
  (await rgw()).client.destroy();
});

async function lockBucket(label: string): Promise<string> {
  const r = await rgw();
  const name = `pl-${label}-${Date.now().toString(36)}-${randomBytes(4).toString('hex')}`;
  await r.client.send(new CreateBucketCommand({ Bucket: name, ObjectLockEnabledForBucket: true }));
  buckets.push(name);
  return name;
}

async function keys(bucket: string, prefix = ''): Promise<string[]> {
  const r = await rgw();
  const out: string[] = [];
  let token: string | undefined;
  do {
    const page = await r.client.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
    for (const o of page.Contents ?? []) out.push(o.Key!);
    token = page.NextContinuationToken;
  } while (token);
  return out.sort();
}

async function open(bucket: string, prefix: string): Promise<BlobStore> {
  const r = await rgw();
  return openStore(`s3://${bucket}/${prefix}`, { s3Endpoint: r.endpoint, s3: { credentials: r.credentials } });
}

/** A fresh Object Lock repository (retention `periodMs`) on a new bucket, with a 4 MiB random image and a backup function. */
async function lockedRepo(label: string, periodMs: number, packSize?: number) {
  const s = await scratch(label);
  const b = await lockBucket(label.replace(/[^a-z]/g, ''));
  const store = await open(b, 'repo');
  const img = path.join(s.dir, 'disk.img');
  await makeImage(img, 4 * MiB, [{ offset: 0, length: 4 * MiB, kind: 'random' }]);
  const repo = await Repository.init(store, { encrypted: false, objectLock: { mode: 'COMPLIANCE', days: periodMs / 86_400_000 }, ...(packSize ? { packSize } : {}) });
  const backup = async (full = false) => {
    const src = await FileSource.open('v', [img], { full });
    try {
      return (await runBackup(repo, src, { workers: 1, ...(full ? { parent: 'none' } : {}) })).snapshot;
    } finally {
      await src.close();
    }
  };
  const restoresTo = async (id: string) => {
    const out = path.join(s.dir, 'out.img');
    const { restoreDisk } = await import('../../src/engine/restore.js');
    await restoreDisk(repo, await new SnapshotCatalog(repo).load(id), 0, out, {});
    return sameBytes(out, img);
  };
  return { s, b, store, img, repo, backup, restoresTo, close: async () => (await repo.close(), await s.cleanup()) };
}

/** The store suite on a bucket with Object Lock: the versioned delete path (retention configured, applied to no name). */
storeConformance('s3 on an Object Lock bucket (versioned delete)', {
  async create() {
    const store = await open(await lockBucket('olconf'), `p-${randomBytes(3).toString('hex')}`);
    store.objectLock!.configure({ mode: 'GOVERNANCE', periodMs: 60_000, appliesTo: () => false });
    return store;
  },
  async destroy(store) {
    await store.close();
  },
  appends: true,
});

describe('Object Lock on RGW', () => {
  it('init --immutable-days on a bucket without Object Lock: one line, nothing written', async () => {
    const r = await rgw();
    const s = await scratch('ol-plain');
    try {
      const b = await freshBucket('olplain');
      buckets.push(b);
      const res = await run(['init', '--repo', `s3://${b}/repo`, '--immutable-days', '7'], { ...s.env, ...r.env });
      assert.notEqual(res.code, 0);
      assert.equal(res.stderr.trim().split('\n').length, 1, res.stderr);
      assert.match(res.stderr, /^pilotlight: the bucket of s3:\/\/.* has no Object Lock: it can only be enabled when a bucket is created/);
      assert.deepEqual(await keys(b), []);
      const fsRes = await run(['init', '--repo', path.join(s.dir, 'r'), '--immutable-days', '7'], s.env);
      assert.match(fsRes.stderr, /^pilotlight: --immutable-days needs an s3:\/\/ repository on a bucket with Object Lock enabled/);
    } finally {
      await s.cleanup();
    }
  });

  it('CLI: every object a snapshot needs is locked; forget of a locked record leaves a tombstone; a stolen credential destroys nothing', async () => {
    const r = await rgw();
    const s = await scratch('ol-cli');
    try {
      const b = await lockBucket('olcli');
      const repo = `s3://${b}/repo`;
      const env = { ...s.env, ...r.env };
      const img = path.join(s.dir, 'disk.img');
      await makeImage(img, 8 * MiB, [{ offset: 0, length: 6 * MiB, kind: 'random' }]);
      const init = await ok(['init', '--repo', repo, '--immutable-days', '1', '--json'], env);
      assert.deepEqual(init.json.objectLock, { mode: 'COMPLIANCE', days: 1 });
      const t0 = Date.now();
      const first = (await ok(['backup', 'file', img, '--repo', repo, '--vm', 'v', '--json'], env)).json.snapshot;
      await mutate(img, [{ offset: 0, length: MiB }], 3);
      const second = (await ok(['backup', 'file', img, '--repo', repo, '--vm', 'v', '--json'], env)).json.snapshot;

      const all = await keys(b, 'repo/');
      const locked = all.filter((k) => isLockedName(k.slice('repo/'.length)));
      assert.ok(locked.some((k) => k.startsWith('repo/data/')) && locked.some((k) => k.startsWith('repo/index/')) && locked.some((k) => k.startsWith('repo/snapshots/')));
      assert.ok(locked.includes('repo/config') && locked.some((k) => k.startsWith('repo/keys/')));
      for (const k of locked) {
        const h = await r.client.send(new HeadObjectCommand({ Bucket: b, Key: k }));
        assert.equal(h.ObjectLockMode, 'COMPLIANCE', k);
        const until = new Date(h.ObjectLockRetainUntilDate!).getTime();
        assert.ok(until > t0 + 86_400_000 - 120_000 && until < Date.now() + 86_400_000 + 60_000, `${k}: ${h.ObjectLockRetainUntilDate}`);
      }

      // forget the first snapshot: its record is retained for a day, so it is tombstoned
      const f = await ok(['forget', first, '--repo', repo, '--json'], env);
      assert.deepEqual(f.json.removed, []);
      assert.equal(f.json.tombstoned.length, 1);
      assert.equal(f.json.tombstoned[0].id, first);
      assert.ok(Date.parse(f.json.tombstoned[0].retainUntil) > Date.now() + 86_000_000);
      const text = await ok(['forget', '--repo', repo, '--keep-last', '5', '--dry-run'], env);
      assert.doesNotMatch(text.stdout, new RegExp(first), 'a tombstoned snapshot stays forgotten');
      const list = (await ok(['snapshots', '--repo', repo, '--json'], env)).json.map((x: { id: string }) => x.id);
      assert.deepEqual(list, [second]);
      assert.ok((await keys(b, 'repo/snapshots/')).some((k) => k.endsWith(first)), 'the record itself is still there');

      // A stolen credential: try to destroy every version of every object.
      const before = new Map<string, string>();
      const versions = await r.client.send(new ListObjectVersionsCommand({ Bucket: b, Prefix: 'repo/' }));
      for (const v of versions.Versions ?? []) {
        if (!isLockedName(v.Key!.slice('repo/'.length))) continue;
        const body = await (await r.client.send(new GetObjectCommand({ Bucket: b, Key: v.Key!, VersionId: v.VersionId }))).Body!.transformToByteArray();
        before.set(`${v.Key}@${v.VersionId}`, createHash('sha256').update(body).digest('hex'));
        await assert.rejects(
          r.client.send(new DeleteObjectCommand({ Bucket: b, Key: v.Key!, VersionId: v.VersionId })),
          (e: { $metadata?: { httpStatusCode?: number }; name?: string }) => e.$metadata?.httpStatusCode === 403 || e.name === 'AccessDenied',
          `DeleteObject of locked version ${v.Key} was allowed`,
        );
        await r.client.send(new DeleteObjectCommand({ Bucket: b, Key: v.Key! })); // only a delete marker
      }
      assert.ok(before.size >= locked.length);
      for (const [kv, sha] of before) {
        const [Key, VersionId] = kv.split('@');
        const body = await (await r.client.send(new GetObjectCommand({ Bucket: b, Key, VersionId }))).Body!.transformToByteArray();
        assert.equal(createHash('sha256').update(body).digest('hex'), sha, `${kv} changed`);
      }
    } finally {
      await s.cleanup();
    }
  });

  it('library: prune-side hooks extend what is live and delete only what lapsed; a lapsed tombstoned record goes', async () => {
    const period = 8_000;
    const { b, store, img, repo, backup, restoresTo, close } = await lockedRepo('ol-lib', period);
    try {
      const a = await backup();
      const written = Date.now();
      await mutate(img, [{ offset: 0, length: 64 * 1024 }], 5);
      const bSnap = await backup();
      const f = await forgetSnapshots(repo, { snapshots: [a] });
      assert.deepEqual(f.tombstoned.map((t) => t.id), [a]);
      assert.deepEqual((await new SnapshotCatalog(repo).list()).map((x) => x.id), [bSnap]);
      const aName = new SnapshotCatalog(repo).objectName('v', a);
      await assert.rejects(store.delete(aName), (e) => isLocked(e));

      // Everything but a's record is live (b reuses a's chunks). Halfway through the period, extend.
      const live: string[] = [];
      for await (const o of store.list('')) if (isLockedName(o.name) && o.name !== aName) live.push(o.name);
      await new Promise((r) => setTimeout(r, Math.max(0, written + period * 0.6 - Date.now())));
      const ext = await extendLiveRetention(repo, live);
      assert.ok(ext.extended >= 1 && ext.checked >= live.length, `extended ${ext.extended}, checked ${ext.checked} of ${live.length}`);
      assert.deepEqual(ext.missing, []);
      // every live object now has at least half a period left (written later ones were not due yet)
      let extendedPack = '';
      let latest = 0;
      for (const n of live) {
        const until = (await store.objectLock!.retainUntil(n))!.getTime();
        if (n.startsWith('data/') && until > latest) [extendedPack, latest] = [n, until];
        assert.ok(until >= Date.now() + period / 2 - 2000, `${n} retained only until ${new Date(until).toISOString()}`);
      }

      // After a's record lapsed: deleting it works, deleting a live (extended) pack is deferred.
      await new Promise((r) => setTimeout(r, Math.max(0, written + period + 1500 - Date.now())));
      const pack = extendedPack;
      assert.ok(latest >= Date.parse(ext.retainUntil!) - 1000, 'the latest-retained pack is one the extension set');
      assert.ok(Date.now() < latest, 'the test ran too slowly to check a deferral');
      const del = await deleteLapsed(repo, [pack]);
      assert.deepEqual(del.deleted, []);
      assert.equal(del.deferred[0]!.name, pack);
      assert.ok(Date.parse(del.deferred[0]!.retainUntil!) > Date.now());
      assert.deepEqual(await clearLapsedTombstones(repo), [a]);
      assert.equal(await store.head(aName), null);
      assert.equal(await store.head(`forgotten/${a}`), null);
      const versions = await (await rgw()).client.send(new ListObjectVersionsCommand({ Bucket: b, Prefix: `repo/${aName}` }));
      assert.equal((versions.Versions ?? []).length + (versions.DeleteMarkers ?? []).length, 0, 'every version is gone, not hidden');

      assert.ok(await restoresTo(bSnap));
    } finally {
      await close();
    }
  });

  it('prune on an Object Lock repository: retained condemned objects are deferred (epoch left open), live ones extended; a later prune finishes', async () => {
    const period = 10_000;
    const { b, img, repo, backup, restoresTo, close } = await lockedRepo('ol-prune', period, MiB);
    try {
      const a = await backup(true);
      await mutate(img, [{ offset: 0, length: 4 * MiB }], 9); // b shares nothing with a
      const bSnap = await backup(true);
      // a's record is retained: tombstoned; a plain forget of it cannot free anything yet
      await forgetSnapshots(repo, { snapshots: [a] });
      const first = await prune(repo, { pollMs: 50 });
      assert.ok(first.objectLock, 'the prune reports Object Lock figures');
      assert.ok(first.objectLock!.extended > 0 || first.objectLock!.checked > 0);
      // after a's record lapsed: forget clears its tombstone, the prune condemns a's packs; they lapse soon after
      await new Promise((r) => setTimeout(r, period + 1500));
      const f = await forgetSnapshots(repo, { policy: { last: 1 }, prune: (r) => prune(r, { pollMs: 50 }) });
      assert.deepEqual(f.tombstonesCleared, [a]);
      const second = f.prune as Awaited<ReturnType<typeof prune>>;
      assert.ok(second.deleted.packs > 0, 'a\'s packs are condemned');
      // the first prune extended a's packs (a tombstoned record still counts as a root): now they are deferred
      assert.ok((second.objectLock?.deferred ?? 0) > 0, JSON.stringify(second.objectLock));
      assert.ok(Date.parse(second.objectLock!.deferredUntil!) > Date.now());
      const lingering = (await keys(b, 'repo/data/')).length;
      await new Promise((r) => setTimeout(r, period + 1500));
      const third = await prune(repo, { pollMs: 50 });
      assert.equal(third.objectLock?.deferred ?? 0, 0, JSON.stringify(third.objectLock));
      assert.equal(third.rolledForward.length, 1, 'the open epoch was finished');
      assert.ok((await keys(b, 'repo/data/')).length < lingering, 'the deferred packs are gone now');
      assert.deepEqual((await new SnapshotCatalog(repo).list()).map((x) => x.id), [bSnap]);
      const v = await verifyRepository(repo, { readData: true });
      assert.ok(v.ok, v.problems.join('; '));
      assert.ok(await restoresTo(bSnap));
    } finally {
      await close();
    }
  });
});
