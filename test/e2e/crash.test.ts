/**
 * Crash safety with real processes: a backup killed with SIGKILL mid-write
 * commits nothing, harms no committed snapshot, and the next backup completes,
 * reusing what the killed one had uploaded and indexed. Two backups at once both
 * commit.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { tempOwner } from '../../src/store/fs-store.js';
import { ok, start, scratch } from '../support/cli.js';
import { listFiles } from '../support/files.js';
import { makeImage, sameBytes } from '../support/images.js';

const MiB = 1 << 20;

async function count(dir: string): Promise<number> {
  return (await listFiles(dir)).length;
}

describe('crash safety', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let small: string;
  let big: string;
  let committed: string;

  before(async () => {
    s = await scratch('crash');
    repo = path.join(s.dir, 'repo');
    small = path.join(s.dir, 'small.img');
    big = path.join(s.dir, 'big.img');
    await makeImage(small, 8 * MiB, [{ offset: 0, length: 3 * MiB, kind: 'text' }], 5);
    // incompressible data, so the backup writes many packs and takes long enough to kill
    await makeImage(big, 320 * MiB, [{ offset: 0, length: 300 * MiB, kind: 'random' }], 6);
    // 1 MiB packs: index files are written every 8 packs, well before the kill
    await ok(['init', '--repo', repo, '--pack-size', '1'], s.env);
    committed = (await ok(['backup', 'file', small, '--repo', repo, '--vm', 'keep', '--json'], s.env)).json.snapshot;
  });

  after(async () => s.cleanup());

  it('SIGKILL mid-backup: nothing committed, the next run reuses the upload and verifies', async () => {
    const child = start(['backup', 'file', big, '--repo', repo, '--vm', 'big', '--json'], s.env);
    const exited = new Promise((resolve) => child.on('close', resolve));
    // wait until the killed run has uploaded packs and at least one index file of its own
    const deadline = Date.now() + 120_000;
    while ((await count(path.join(repo, 'index'))) < 3 || (await count(path.join(repo, 'data'))) < 40) {
      if (Date.now() > deadline) throw new Error('backup made no progress');
      if (child.exitCode !== null) throw new Error('backup finished before it could be killed; make the image bigger');
      await sleep(20);
    }
    child.kill('SIGKILL');
    await exited;
    assert.equal(child.signalCode, 'SIGKILL');

    const list = (await ok(['snapshots', '--repo', repo, '--json'], s.env)).json;
    assert.deepEqual(list.map((x: { id: string }) => x.id), [committed], 'the killed backup must not appear');

    // data packs are written as they fill: the one the killed run was filling is a temp in data/
    const killedTemps = async () => (await fsp.readdir(path.join(repo, 'data'))).filter((n) => tempOwner(n)?.pid === child.pid);
    const rerun = (await ok(['backup', 'file', big, '--repo', repo, '--vm', 'big', '--json'], s.env)).json;
    assert.ok(rerun.chunksReused > 0, 'the re-run must reuse chunks the killed run uploaded');
    assert.deepEqual(await killedTemps(), [], "the re-run swept the killed run's temporaries from data/");

    const v = (await ok(['verify', '--read-data', '--repo', repo, '--json'], s.env)).json;
    assert.equal(v.ok, true, v.problems.join('\n'));

    const out = path.join(s.dir, 'big-out.img');
    await ok(['restore', rerun.snapshot, '--to', out, '--repo', repo], s.env);
    assert.ok(await sameBytes(big, out), 'restore after crash differs');
    const keep = path.join(s.dir, 'keep-out.img');
    await ok(['restore', committed, '--to', keep, '--repo', repo], s.env);
    assert.ok(await sameBytes(small, keep), 'the committed snapshot was harmed');
    await fsp.rm(out);
  });

  it('Ctrl-C (SIGINT) mid-backup: a clear message, exit 130, no lock left, nothing committed', async () => {
    const fresh = path.join(s.dir, 'interrupted.img');
    await makeImage(fresh, 256 * MiB, [{ offset: 0, length: 256 * MiB, kind: 'random' }], 7);
    const child = start(['backup', 'file', fresh, '--repo', repo, '--vm', 'interrupted', '--json'], s.env);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise((resolve) => child.on('close', resolve));
    const before = await count(path.join(repo, 'data'));
    // the SIGKILLed run above left its lease behind (as kill -9 must): only this run's lease counts
    const locksBefore = await count(path.join(repo, 'leases'));
    const deadline = Date.now() + 120_000;
    while ((await count(path.join(repo, 'leases'))) === locksBefore || (await count(path.join(repo, 'data'))) <= before) {
      if (Date.now() > deadline) throw new Error('backup made no progress');
      await sleep(20);
    }
    child.kill('SIGINT');
    await exited;
    assert.equal(child.exitCode, 130, stderr);
    assert.match(stderr, /interrupted; nothing was committed/);
    assert.equal(await count(path.join(repo, 'leases')), locksBefore, 'the lease must be released');
    const list = (await ok(['snapshots', '--repo', repo, '--vm', 'interrupted', '--json'], s.env)).json;
    assert.equal(list.length, 0);
    await fsp.rm(fresh);
  });

  it('two backups at once (sharing one cache directory) both commit and verify', async () => {
    const a = path.join(s.dir, 'ca.img');
    const b = path.join(s.dir, 'cb.img');
    await makeImage(a, 64 * MiB, [{ offset: 0, length: 40 * MiB, kind: 'random' }], 21);
    await makeImage(b, 64 * MiB, [{ offset: 0, length: 40 * MiB, kind: 'text' }], 22);
    const [ra, rb] = await Promise.all([
      ok(['backup', 'file', a, '--repo', repo, '--vm', 'ca', '--json'], s.env),
      ok(['backup', 'file', b, '--repo', repo, '--vm', 'cb', '--json'], s.env),
    ]);
    assert.notEqual(ra.json.snapshot, rb.json.snapshot);
    const v = (await ok(['verify', '--read-data', '--repo', repo, '--json'], s.env)).json;
    assert.equal(v.ok, true, v.problems.join('\n'));
    for (const [img, r] of [[a, ra], [b, rb]] as const) {
      const out = path.join(s.dir, `${path.basename(img)}.out`);
      await ok(['restore', r.json.snapshot, '--to', out, '--repo', repo], s.env);
      assert.ok(await sameBytes(img, out));
    }
  });
});
