/**
 * Format version 1 -> 2: the committed fixture (made by the release before format 2)
 * opens, restores byte-identical, migrates in place, restores identical again, takes
 * new backups; a SIGKILL at each step of migrate leaves a repository that opens and
 * restores, and migrate run again finishes the job.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch } from '../support/cli.js';
import { listFiles } from '../support/files.js';
import { mutate, sameBytes } from '../support/images.js';
import { V1_FIXTURE_DIR, V1_PASSWORD, V1_VM, makeV1Image1, makeV1Image2 } from '../support/v1-fixture.js';

const SNAP1 = '20261201T210054Z-8919936d';
const SNAP2 = '20261201T210054Z-ab6da5b9';

describe('a version 1 repository (fixtures/v1-repo)', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let img1: string;
  let img2: string;
  let n = 0;

  async function copyFixture(): Promise<{ repo: string; env: Record<string, string> }> {
    const repo = path.join(s.dir, `repo${++n}`);
    await fsp.cp(V1_FIXTURE_DIR, repo, { recursive: true });
    await fsp.rm(path.join(repo, 'README.md'));
    return { repo, env: { ...s.env, PILOTLIGHT_PASSWORD: V1_PASSWORD, PILOTLIGHT_CACHE_DIR: path.join(s.dir, `cache${n}`) } };
  }

  async function restoresBoth(repo: string, env: Record<string, string>): Promise<void> {
    for (const [snap, img] of [[SNAP1, img1], [SNAP2, img2]] as const) {
      const out = path.join(s.dir, `out-${n}-${snap}.img`);
      await fsp.rm(out, { force: true });
      await ok(['restore', snap, '--to', out, '--repo', repo], env);
      assert.ok(await sameBytes(img, out), `restore of ${snap} differs from its regenerated image`);
    }
  }

  async function version(repo: string): Promise<number> {
    return JSON.parse(await fsp.readFile(path.join(repo, 'config'), 'utf8')).version;
  }

  before(async () => {
    s = await scratch('v1');
    img1 = path.join(s.dir, 'image1.img');
    img2 = path.join(s.dir, 'image2.img');
    await makeV1Image1(img1);
    await makeV1Image2(img2);
  });
  after(async () => s.cleanup());

  it('opens, lists and restores byte-identical (the images regenerated from their seeds)', async () => {
    const { repo, env } = await copyFixture();
    assert.equal(await version(repo), 1);
    const list = (await ok(['snapshots', '--repo', repo, '--json'], env)).json;
    assert.deepEqual(list.map((x: { id: string }) => x.id), [SNAP1, SNAP2]);
    await restoresBoth(repo, env);
    const v = (await ok(['verify', '--read-data', '--repo', repo, '--json'], env)).json;
    assert.equal(v.ok, true, v.problems.join('\n'));
  });

  it('migrates in place: records per VM, version 2 config and key, packs untouched; restores identical; new backups work', async () => {
    const { repo, env } = await copyFixture();
    const packsBefore = await listFiles(path.join(repo, 'data'));
    const m = (await ok(['migrate', '--repo', repo, '--json'], env)).json;
    assert.equal(m.from, 1);
    assert.equal(m.to, 2);
    assert.equal(m.recordsConverted, 2);
    assert.equal(m.recordsRemoved, 2);
    assert.equal(await version(repo), 2);
    const config = JSON.parse(await fsp.readFile(path.join(repo, 'config'), 'utf8'));
    assert.equal(config.migratedFrom, 1);
    assert.equal(typeof config.auth, 'string');
    const records = (await listFiles(path.join(repo, 'snapshots'))).map((f) => path.relative(path.join(repo, 'snapshots'), f));
    assert.equal(records.length, 2);
    for (const r of records) assert.match(r, /^[0-9a-f]{32}\/\d{8}T\d{6}Z-[0-9a-f]{8}$/);
    const keys = await fsp.readdir(path.join(repo, 'keys'));
    assert.equal(keys.length, 1);
    assert.equal(JSON.parse(await fsp.readFile(path.join(repo, 'keys', keys[0]!), 'utf8')).version, 2);
    assert.deepEqual(await listFiles(path.join(repo, 'data')), packsBefore, 'data packs are kept, not rewritten');
    await restoresBoth(repo, env);
    // a fresh cache reads the version 1 index files of the migrated repository
    const fresh = { ...env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, `cache-fresh-${n}`) };
    await restoresBoth(repo, fresh);

    const img3 = path.join(s.dir, 'image3.img');
    await fsp.copyFile(img2, img3);
    await mutate(img3, [{ offset: 0, length: 128 * 1024, kind: 'random' }], 103);
    const b = (await ok(['backup', 'file', img3, '--vm', V1_VM, '--repo', repo, '--json'], env)).json;
    assert.equal(b.parent, SNAP2);
    assert.ok(b.chunksReused > 0, 'the new backup dedups against the version 1 packs');
    const out = path.join(s.dir, `out-${n}-3.img`);
    await ok(['restore', 'latest', '--vm', V1_VM, '--to', out, '--repo', repo], fresh);
    assert.ok(await sameBytes(img3, out));
    const v = (await ok(['verify', '--read-data', '--repo', repo, '--json'], fresh)).json;
    assert.equal(v.ok, true, v.problems.join('\n'));
    assert.equal(v.snapshots, 3);
    const again = (await ok(['migrate', '--repo', repo, '--json'], env)).json;
    assert.equal(again.recordsConverted, 0);
  });

  for (const point of ['migrate:records', 'migrate:config', 'migrate:key', 'migrate:cleanup']) {
    it(`SIGKILL at ${point}: the repository opens and restores, and migrate again finishes`, async () => {
      const { repo, env } = await copyFixture();
      const killed = await run(['migrate', '--repo', repo], { ...env, PILOTLIGHT_TEST_KILL_AT: point });
      assert.equal(killed.signal, 'SIGKILL', `migrate was not killed at ${point}: ${killed.stdout}${killed.stderr}`);
      const list = (await ok(['snapshots', '--repo', repo, '--json'], env)).json;
      assert.deepEqual(list.map((x: { id: string }) => x.id), [SNAP1, SNAP2]);
      assert.equal(await version(repo), point === 'migrate:records' ? 1 : 2);
      await restoresBoth(repo, env);
      await ok(['migrate', '--repo', repo], env);
      assert.equal(await version(repo), 2);
      assert.equal((await listFiles(path.join(repo, 'snapshots'))).length, 2);
      const keys = await fsp.readdir(path.join(repo, 'keys'));
      assert.equal(keys.length, 1, `one key file left, got ${keys.join(' ')}`);
      await restoresBoth(repo, { ...env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, `cache-after-${n}`) });
    });
  }
});
