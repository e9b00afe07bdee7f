/**
 * forget / protect / unprotect through the real CLI on a local repository:
 * dry runs, protection, guards (parent of a running backup, EBS base), bad input.
 * Every refused command leaves the repository byte-for-byte as it was.
 */
import assert from 'node:assert/strict';
import { ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { putEbsMap } from '../../src/cloud/ebs-map.js';
import { FsStore } from '../../src/store/fs-store.js';
import { assertCleanFailure, ok, run, scratch, start } from '../support/cli.js';
import { fingerprint } from '../support/files.js';
import { makeImage, mutate, sameBytes } from '../support/images.js';

const MiB = 1 << 20;

/** Six snapshots of vm a at chosen consistency times (Berlin's autumn change among them), one of vm b. */
const TIMES = ['2026-10-20T10:00:00Z', '2026-10-24T09:00:00Z', '2026-10-24T20:00:00Z', '2026-10-25T00:30:00Z', '2026-10-25T01:30:00Z', '2026-10-25T08:00:00Z'];

describe('forget CLI', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let img: string;
  const ids: string[] = [];
  let bId = '';
  const g = () => ['--repo', repo];

  before(async () => {
    s = await scratch('forget');
    repo = path.join(s.dir, 'repo');
    img = path.join(s.dir, 'disk.img');
    await makeImage(img, 4 * MiB, [{ offset: 0, length: 2 * MiB, kind: 'random' }]);
    await ok(['init', ...g()], s.env);
    for (const [i, t] of TIMES.entries()) {
      await mutate(img, [{ offset: i * 64 * 1024, length: 64 * 1024 }], 10 + i);
      const r = await ok(['backup', 'file', img, ...g(), '--vm', 'a', '--taken-at', t, '--json'], s.env);
      ids.push(r.json.snapshot);
    }
    bId = (await ok(['backup', 'file', img, ...g(), '--vm', 'b', '--taken-at', '2026-10-01T00:00:00Z', '--json'], s.env)).json.snapshot;
  });
  after(async () => s.cleanup());

  it('records the consistency time and the commit time', async () => {
    const list = (await ok(['snapshots', ...g(), '--vm', 'a', '--json'], s.env)).json as { id: string; time: string; committed: string }[];
    assert.deepEqual(list.map((x) => x.time), TIMES.map((t) => new Date(t).toISOString()));
    for (const x of list) assert.ok(Date.parse(x.committed) > Date.parse('2026-11-01T00:00:00Z') || Date.parse(x.committed) > Date.parse(x.time));
    // ids follow the consistency time
    assert.ok(list.every((x, i) => x.id.startsWith(TIMES[i]!.replace(/[-:]/g, '').replace('.000', ''))));
  });

  it('dry run: every snapshot with keep/remove and its reasons, nothing deleted', async () => {
    const before = await fingerprint(repo);
    const r = await ok(['forget', ...g(), '--vm', 'a', '--keep-hourly', '2', '--keep-daily', '2', '--tz', 'Europe/Berlin', '--dry-run', '--json'], s.env);
    assert.deepEqual(await fingerprint(repo), before);
    const v = r.json.vms[0];
    assert.equal(v.vm, 'a');
    const byId = Object.fromEntries(v.snapshots.map((d: { id: string }) => [d.id, d]));
    // newest first; the two 02:xx local hours of 2026-10-25 are two hourly periods
    assert.deepEqual(byId[ids[5]!].reasons, ['hourly 2026-10-25T09+01:00', 'daily 2026-10-25']);
    assert.deepEqual(byId[ids[4]!].reasons, ['hourly 2026-10-25T02+01:00']);
    assert.equal(byId[ids[3]!].outcome, 'remove');
    assert.deepEqual(byId[ids[2]!].reasons, ['daily 2026-10-24']); // 22:00 CEST on the 24th
    assert.equal(byId[ids[1]!].outcome, 'remove');
    assert.equal(byId[ids[0]!].outcome, 'remove');
    const text = await ok(['forget', ...g(), '--vm', 'a', '--keep-hourly', '2', '--keep-daily', '2', '--tz', 'Europe/Berlin', '--dry-run'], s.env);
    assert.match(text.stdout, /vm a: keep 3, would remove 3/);
    assert.match(text.stdout, /dry run: nothing was deleted/);
    for (const id of ids) assert.match(text.stdout, new RegExp(`(keep|remove) +${id}`));
    assert.deepEqual(await fingerprint(repo), before);
  });

  it('bad input: one line, nothing deleted', async () => {
    const before = await fingerprint(repo);
    const cases: [string[], RegExp][] = [
      [['forget', '20990101T000000Z-deadbeef'], /no snapshot 20990101T000000Z-deadbeef/],
      [['forget', ids[0]!, '--keep-last', '1'], /either snapshot ids or --keep-\* options, not both/],
      [['forget', '--keep-last', '1', '--prune', '--dry-run'], /--prune and --dry-run conflict/],
      [['forget', '--keep-within', '3 days'], /bad duration "3 days"/],
      [['forget', '--keep-within', '0d'], /bad duration "0d"/],
      [['forget', '--keep-daily', 'seven'], /--keep-daily takes a whole number/],
      [['forget', '--keep-last', '1', '--tz', 'Europe/Atlantis'], /unknown time zone "Europe\/Atlantis"/],
      [['forget'], /forget needs a policy/],
      [['forget', '--vm', 'a', '--keep-last', '0'], /keeps none of the 6 snapshot\(s\) of vm "a"; pass --allow-empty/],
      [['forget', '--keep-within', '1h', '--vm', 'b', '--keep-daily', '0'], /./], // within keeps b's only snapshot: not an error
      [['protect', 'nosuch'], /no snapshot nosuch/],
      [['unprotect', 'nosuch'], /no snapshot nosuch/],
    ];
    for (const [args, pattern] of cases) {
      if (args.includes('b')) {
        const r = await ok([...args, ...g(), '--dry-run'], s.env);
        assert.match(r.stdout, /vm b: keep 1, would remove 0/);
        continue;
      }
      assertCleanFailure(await run([...args, ...g()], s.env), pattern);
      assert.deepEqual(await fingerprint(repo), before, `${args.join(' ')} changed the repository`);
    }
  });

  it('protect: a protected snapshot survives any policy and names its reason; explicit forget of it is refused', async () => {
    const p = await ok(['protect', ids[0]!, ...g(), '--note', 'audit 2026'], s.env);
    assert.match(p.stdout, /is now protected/);
    assert.match((await ok(['protect', ids[0]!, ...g()], s.env)).stdout, /was already protected/);
    const before = await fingerprint(repo);
    assertCleanFailure(await run(['forget', ids[0]!, ...g()], s.env), /cannot be forgotten: protected \(pilotlight unprotect/);
    assert.deepEqual(await fingerprint(repo), before);
    const dry = await ok(['forget', ...g(), '--vm', 'a', '--keep-last', '1', '--dry-run', '--json'], s.env);
    const d0 = dry.json.vms[0].snapshots.find((d: { id: string }) => d.id === ids[0]);
    assert.deepEqual(d0.reasons, ['protected']);
    assert.equal(d0.outcome, 'keep');
  });

  it('EBS guard: the snapshot a chain was last pushed from is kept until a newer one is pushed', async () => {
    const store = new FsStore(repo);
    const rec = (snapshot: string, time: string) => ({
      format: 'pilotlight-ebs-map' as const,
      version: 1 as const,
      vm: 'a',
      diskIndex: 0,
      diskName: 'disk0',
      snapshot,
      snapshotTime: time,
      capacity: 4 * MiB,
      region: 'eu-west-1',
      ebsSnapshotId: `snap-${snapshot.slice(-8)}`,
      volumeSizeGiB: 1,
      blockSize: 524288,
      blocksSent: 1,
      bytesSent: 1,
      completedAt: new Date().toISOString(),
    });
    await putEbsMap(store, rec(ids[1]!, new Date(TIMES[1]!).toISOString()));
    let dry = await ok(['forget', ...g(), '--vm', 'a', '--keep-last', '1', '--dry-run', '--json'], s.env);
    let d1 = dry.json.vms[0].snapshots.find((d: { id: string }) => d.id === ids[1]);
    assert.equal(d1.outcome, 'keep');
    assert.match(d1.reasons.join(), /last pushed to EBS \(disk 0, eu-west-1, snap-.*\): the next ebs push diffs against it/);
    await putEbsMap(store, rec(ids[3]!, new Date(TIMES[3]!).toISOString()));
    dry = await ok(['forget', ...g(), '--vm', 'a', '--keep-last', '1', '--dry-run', '--json'], s.env);
    d1 = dry.json.vms[0].snapshots.find((d: { id: string }) => d.id === ids[1]);
    assert.equal(d1.outcome, 'remove');
    assert.match(dry.json.vms[0].snapshots.find((d: { id: string }) => d.id === ids[3]).reasons.join(), /last pushed to EBS/);
    await store.close();
  });

  it('forget removes what the policy does not keep; kept snapshots still restore; unprotect lets it go', async () => {
    const r = await ok(['forget', ...g(), '--vm', 'a', '--keep-last', '1', '--json'], s.env);
    // kept: newest (last), ids[0] (protected), ids[3] (EBS base)
    assert.deepEqual([...r.json.removed].sort(), [ids[1], ids[2], ids[4]].sort());
    const left = (await ok(['snapshots', ...g(), '--json'], s.env)).json.map((x: { id: string }) => x.id).sort();
    assert.deepEqual(left, [ids[0], ids[3], ids[5], bId].sort());
    const out = path.join(s.dir, 'restored.img');
    await ok(['restore', ids[5]!, ...g(), '--to', out], s.env);
    assert.ok(await sameBytes(out, img));
    await ok(['verify', ...g()], s.env);
    assert.match((await ok(['unprotect', ids[0]!, ...g()], s.env)).stdout, /no longer protected/);
    const r2 = await ok(['forget', ...g(), '--vm', 'a', '--keep-last', '1', '--json'], s.env);
    assert.deepEqual(r2.json.removed, [ids[0]]);
    // vm b was never touched by --vm a
    assert.ok((await ok(['snapshots', ...g(), '--vm', 'b', '--json'], s.env)).json.some((x: { id: string }) => x.id === bId));
  });
});

describe('forget while a backup runs', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let child: ChildProcess | undefined;
  after(async () => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
    await s?.cleanup();
  });

  it('never forgets the parent of a running backup (a real backup process, stopped with SIGSTOP)', async () => {
    s = await scratch('forget-run');
    const repo = path.join(s.dir, 'repo');
    const img = path.join(s.dir, 'big.img');
    await makeImage(img, 96 * MiB, [{ offset: 0, length: 96 * MiB, kind: 'random' }]);
    await ok(['init', '--repo', repo], s.env);
    const first = (await ok(['backup', 'file', img, '--repo', repo, '--vm', 'v', '--json', '--taken-at', '2026-11-01T00:00:00Z'], s.env)).json.snapshot;
    const parent = (await ok(['backup', 'file', img, '--repo', repo, '--vm', 'v', '--json', '--taken-at', '2026-11-02T00:00:00Z'], s.env)).json.snapshot;
    await mutate(img, [{ offset: 0, length: 8 * MiB }], 7);
    const leases = path.join(repo, 'leases');
    child = start(['backup', 'file', img, '--repo', repo, '--vm', 'v', '--full', '--json'], s.env);
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((resolve) => child!.on('close', (code) => resolve(code)));
    // wait until the backup's lease names its parent (it is taken before the parent is chosen)
    const leaseParent = async () => {
      for (const n of await fsp.readdir(leases).catch(() => [] as string[])) {
        if (n.startsWith('.tmp-')) continue;
        const info = await fsp.readFile(path.join(leases, n), 'utf8').then((t) => JSON.parse(t) as { operation: string; parent: string | null }, () => null);
        if (info?.operation === 'backup' && info.parent) return info.parent;
      }
      return null;
    };
    for (let i = 0; !(await leaseParent()); i++) {
      assert.ok(i < 6000, 'the backup never announced its parent');
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill('SIGSTOP');
    try {
      const dry = await ok(['forget', '--repo', repo, '--keep-last', '0', '--allow-empty', '--dry-run', '--json'], s.env);
      const d = dry.json.vms[0].snapshots.find((x: { id: string }) => x.id === parent);
      assert.equal(d.outcome, 'keep');
      assert.match(d.reasons.join(), /parent of a running backup/);
      const r = await ok(['forget', '--repo', repo, '--keep-last', '0', '--allow-empty', '--json'], s.env);
      assert.deepEqual(r.json.removed, [first]);
    } finally {
      child.kill('SIGCONT');
    }
    assert.equal(await exited, 0);
    const rep = JSON.parse(out);
    assert.equal(rep.parent, parent);
    const restored = path.join(s.dir, 'r.img');
    await ok(['restore', rep.snapshot, '--repo', repo, '--to', restored], s.env);
    assert.ok(await sameBytes(restored, img));
    // the backup is over: its parent is an ordinary snapshot again
    const after = await ok(['forget', '--repo', repo, '--keep-last', '1', '--json'], s.env);
    assert.deepEqual(after.json.removed, [parent]);
  });
});
