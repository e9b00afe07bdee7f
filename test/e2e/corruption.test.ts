/**
 * Damage in the repository is found, named, and never restored silently.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch } from '../support/cli.js';
import { biggestDataPack, flipByte } from '../support/damage.js';
import { listFiles } from '../support/files.js';
import { makeImage, sameBytes } from '../support/images.js';

const MiB = 1 << 20;

describe('corruption', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let snapA: string;
  let snapB: string;

  before(async () => {
    s = await scratch('corrupt');
    repo = path.join(s.dir, 'repo');
    const a = path.join(s.dir, 'a.img');
    const b = path.join(s.dir, 'b.img');
    await makeImage(a, 8 * MiB, [{ offset: 0, length: 2 * MiB, kind: 'random' }], 1);
    await makeImage(b, 8 * MiB, [{ offset: 0, length: 2 * MiB, kind: 'text' }], 2);
    await ok(['init', '--repo', repo], s.env);
    snapA = (await ok(['backup', 'file', a, '--repo', repo, '--vm', 'a', '--json'], s.env)).json.snapshot;
    snapB = (await ok(['backup', 'file', b, '--repo', repo, '--vm', 'b', '--json'], s.env)).json.snapshot;
    // flip one byte in the middle of vm a's data pack (random data: one pack of its own)
    const pack = await biggestDataPack(repo);
    await flipByte(pack.file, Math.floor(pack.size / 2));
  });

  after(async () => s.cleanup());

  it('verify --read-data fails and names the damaged snapshot, not the intact one', async () => {
    const r = await run(['verify', '--read-data', '--repo', repo, '--json'], s.env);
    assert.notEqual(r.code, 0);
    const v = JSON.parse(r.stdout);
    assert.equal(v.ok, false);
    assert.deepEqual(v.damagedSnapshots, [snapA]);
    assert.ok(v.problems.some((p: string) => /authentication failed|does not match/.test(p)), v.problems.join('\n'));
    const text = await run(['verify', '--read-data', '--repo', repo], s.env);
    assert.match(text.stdout, new RegExp(`damaged snapshots: ${snapA}`));
  });

  it('restore of the damaged snapshot fails with a data-integrity error', async () => {
    const out = path.join(s.dir, 'out-a.img');
    const r = await run(['restore', snapA, '--to', out, '--repo', repo], s.env);
    assert.equal(r.code, 3);
    assert.match(r.stderr, /DATA INTEGRITY/);
  });

  it('the intact snapshot still restores', async () => {
    const out = path.join(s.dir, 'out-b.img');
    await ok(['restore', snapB, '--to', out, '--repo', repo], s.env);
    assert.ok(await sameBytes(path.join(s.dir, 'b.img'), out));
  });

  it('a missing pack is found by the structural verify', async () => {
    const packs = await listFiles(path.join(repo, 'data'));
    const copy = path.join(s.dir, 'repo2');
    await fsp.cp(repo, copy, { recursive: true });
    for (const p of packs) await fsp.rm(path.join(copy, path.relative(repo, p)));
    const r = await run(['verify', '--repo', copy, '--json'], { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache2') });
    assert.notEqual(r.code, 0);
    const v = JSON.parse(r.stdout);
    assert.ok(v.problems.some((p: string) => /missing from the repository/.test(p)));
    assert.deepEqual(v.damagedSnapshots.sort(), [snapA, snapB].sort());
  });
});
