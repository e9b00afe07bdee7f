/**
 * Real processes: a prune SIGKILLed at each step of its protocol, followed by a
 * verify, a backup, a restore and a second prune; a backup stopped (SIGSTOP) while
 * `locks` and `unlock` look at it.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch, start } from '../support/cli.js';
import { makeImage, sameBytes } from '../support/images.js';
import { SnapshotCatalog } from '../../src/snapshot/snapshot-record.js';
import { FsStore } from '../../src/store/fs-store.js';
import { image, mutateChunks, openAs } from './harness.js';

const MiB = 1 << 20;

describe('prune and leases with real processes', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  before(async () => {
    s = await scratch('gc-proc');
  });
  after(async () => s.cleanup());

  for (const point of ['listed', 'published', 'waited', 'rewritten', 'done', 'deleting']) {
    it(`SIGKILL of a prune at '${point}', then a backup, a restore and a second prune`, async () => {
      const dir = path.join(s.dir, `kill-${point}`);
      await fsp.mkdir(dir);
      const repo = path.join(dir, 'repo');
      const img = path.join(dir, 'a.img');
      const env = { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(dir, 'cache'), PILOTLIGHT_LEASE_EXPIRY_MS: '1500' };
      await ok(['init', '--repo', repo, '--pack-size', '1'], env);
      await image(img, 4 * MiB, 21);
      const first = (await ok(['backup', 'file', img, '--repo', repo, '--vm', 'a', '--json'], env)).json.snapshot;
      await mutateChunks(img, 24, 22);
      await ok(['backup', 'file', img, '--repo', repo, '--vm', 'a', '--json'], env);
      const handle = await openAs(new FsStore(repo), path.join(dir, 'cache-test'));
      await new SnapshotCatalog(handle).delete(first); // forget it: its chunks become garbage
      await handle.close();
      const killed = await run(['prune', '--repo', repo], { ...env, PILOTLIGHT_TEST_KILL_AT: `prune:${point}` });
      assert.equal(killed.signal, 'SIGKILL', `the prune reached '${point}' and was killed (${killed.stderr})`);
      // what the dead prune left (an open epoch, half-done deletions) is not damage
      const mid = await run(['verify', '--repo', repo, '--json'], env);
      assert.equal(mid.code, 0, `verify after the killed prune: ${mid.stdout} ${mid.stderr}`);
      await mutateChunks(img, 8, 23);
      const third = (await ok(['backup', 'file', img, '--repo', repo, '--vm', 'a', '--json'], env)).json.snapshot;
      const out = path.join(dir, 'out.img');
      await ok(['restore', third, '--repo', repo, '--to', out], env);
      assert.ok(await sameBytes(out, img), 'the backup after the killed prune restores byte-identical');
      const second = await ok(['prune', '--repo', repo, '--json'], env);
      assert.equal(second.json.dryRun, false);
      const v = await ok(['verify', '--repo', repo, '--read-data', '--json'], env);
      assert.equal(v.json.ok, true, JSON.stringify(v.json.problems));
      await ok(['restore', third, '--repo', repo, '--to', out, '--force'], env);
      assert.ok(await sameBytes(out, img));
    });
  }

  it('locks lists a stopped backup; unlock keeps it unless --force, which fences it: it fails and commits nothing', async () => {
    const dir = path.join(s.dir, 'locks');
    await fsp.mkdir(dir);
    const repo = path.join(dir, 'repo');
    const img = path.join(dir, 'big.img');
    const env = { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(dir, 'cache') };
    await ok(['init', '--repo', repo, '--pack-size', '1'], env);
    await makeImage(img, 160 * MiB, [{ offset: 0, length: 160 * MiB, kind: 'random' }], 31);
    const child = start(['backup', 'file', img, '--repo', repo, '--vm', 'big'], env);
    let stderr = '';
    child.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const deadline = Date.now() + 60_000;
    while ((await fsp.readdir(path.join(repo, 'data')).catch(() => [])).length < 2) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`backup made no progress: ${stderr}`);
      await sleep(20);
    }
    child.kill('SIGSTOP');
    try {
      const locks = await ok(['locks', '--repo', repo, '--json'], env);
      assert.equal(locks.json.length, 1);
      assert.equal(locks.json[0].operation, 'backup');
      assert.equal(locks.json[0].vm, 'big');
      const kept = await ok(['unlock', '--repo', repo, '--json'], env);
      assert.deepEqual(kept.json.removed, [], 'a live lease stays without --force');
      const forced = await ok(['unlock', '--repo', repo, '--force', '--json'], env);
      assert.equal(forced.json.removed.length, 1);
      assert.match(forced.stderr, /warning: removing live lease/);
    } finally {
      child.kill('SIGCONT');
    }
    const code = await exited;
    assert.notEqual(code, 0, 'the fenced backup fails');
    assert.match(stderr, /fenced/);
    const snaps = await ok(['snapshots', '--repo', repo, '--json'], env);
    assert.deepEqual(snaps.json, [], 'nothing committed');
    assert.deepEqual((await ok(['locks', '--repo', repo, '--json'], env)).json, []);
  });
});
