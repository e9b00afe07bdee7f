/**
 * repair index rebuilds the index from pack trailers alone; repair snapshots names (and with
 * --forget removes) the snapshots whose blobs are missing. Neither ever deletes a data pack.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch } from '../support/cli.js';
import { listFiles } from '../support/files.js';
import { makeImage, sameBytes } from '../support/images.js';

const MiB = 1 << 20;

async function packFiles(repo: string): Promise<string[]> {
  return [...(await listFiles(path.join(repo, 'data'))), ...(await listFiles(path.join(repo, 'meta')))].map((p) => path.relative(repo, p)).sort();
}

describe('repair', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  const imgs: Record<string, string> = {};
  const snaps: Record<string, string> = {};
  let packsOfA: string[] = [];

  before(async () => {
    s = await scratch('repair');
    repo = path.join(s.dir, 'repo');
    await ok(['init', '--repo', repo, '--pack-size', '1'], s.env);
    for (const [vm, seed] of [['a', 1], ['b', 2], ['c', 3]] as const) {
      const before: string[] = await packFiles(repo).catch(() => []);
      imgs[vm] = path.join(s.dir, `${vm}.img`);
      await makeImage(imgs[vm]!, 6 * MiB, [{ offset: 0, length: 3 * MiB, kind: 'random' }, { offset: 4 * MiB, length: MiB, kind: 'text' }], seed);
      snaps[vm] = (await ok(['backup', 'file', imgs[vm]!, '--repo', repo, '--vm', vm, '--json'], s.env)).json.snapshot;
      if (vm === 'a') packsOfA = (await packFiles(repo)).filter((p) => !before.includes(p) && p.startsWith('data/'));
    }
  });

  after(async () => s.cleanup());

  it('repair index after every index file is deleted: the same restores, byte-identical, and verify passes; no pack touched', async () => {
    const copy = path.join(s.dir, 'no-index');
    await fsp.cp(repo, copy, { recursive: true });
    await fsp.rm(path.join(copy, 'index'), { recursive: true });
    const env = { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache-no-index') };
    const packs = await packFiles(copy);
    // without an index nothing restores
    const broken = await run(['restore', snaps.a!, '--repo', copy, '--to', path.join(s.dir, 'broken.img')], env);
    assert.equal(broken.code, 3);
    const r = (await ok(['repair', 'index', '--repo', copy, '--json'], env)).json;
    assert.equal(r.ok, true, r.problems.join('\n'));
    assert.equal(r.packsIndexed, packs.length);
    assert.ok(r.indexFilesWritten >= 1);
    assert.deepEqual(await packFiles(copy), packs, 'no pack added or removed');
    for (const vm of ['a', 'b', 'c']) {
      const out = path.join(s.dir, `rebuilt-${vm}.img`);
      await ok(['restore', snaps[vm]!, '--repo', copy, '--to', out], env);
      assert.ok(await sameBytes(imgs[vm]!, out), vm);
    }
    const v = (await ok(['verify', '--repo', copy, '--read-data', '--json'], env)).json;
    assert.equal(v.ok, true, v.problems.join('\n'));
    assert.equal(v.unindexedBlobs, 0);
    // a backup on top of the rebuilt index dedups against it
    const again = (await ok(['backup', 'file', imgs.a!, '--repo', copy, '--vm', 'a', '--json'], env)).json;
    assert.equal(again.chunksNew, 0);
  });

  it('repair refuses while a prune is running or unfinished (a GC epoch that has not ended): one line, nothing changed', async () => {
    const copy = path.join(s.dir, 'mid-prune');
    await fsp.cp(repo, copy, { recursive: true });
    await fsp.mkdir(path.join(copy, 'gc'), { recursive: true });
    await fsp.writeFile(path.join(copy, 'gc', '0000000007'), 'an intent (its content is not read by this check)');
    const env = { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache-mid-prune') };
    const indexBefore = (await listFiles(path.join(copy, 'index'))).sort();
    const r = await run(['repair', 'index', '--repo', copy], env);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /^pilotlight: a prune is running or was interrupted \(GC epoch 7 has not ended\)[^\n]*\n$/);
    assert.deepEqual((await listFiles(path.join(copy, 'index'))).sort(), indexBefore);
    assert.deepEqual(await listFiles(path.join(copy, 'leases')).catch(() => []), [], 'no lease left behind');
  });

  it('repair snapshots names the snapshot whose pack was deleted; --forget removes only it; the others restore; no data pack deleted', async () => {
    const copy = path.join(s.dir, 'lost-pack');
    await fsp.cp(repo, copy, { recursive: true });
    assert.ok(packsOfA.length >= 1);
    await fsp.rm(path.join(copy, packsOfA[0]!));
    const env = { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache-lost') };
    const packs = await packFiles(copy);

    const named = await run(['repair', 'snapshots', '--repo', copy, '--json'], env);
    assert.equal(named.code, 3, named.stderr);
    const r = JSON.parse(named.stdout);
    assert.deepEqual(r.damaged.map((d: { id: string }) => d.id), [snaps.a]);
    assert.ok(r.damaged[0].why.some((w: string) => /missing|not in the index/.test(w)), JSON.stringify(r.damaged));
    assert.deepEqual(r.forgotten, []);
    const text = await run(['repair', 'snapshots', '--repo', copy], env);
    assert.match(text.stdout, new RegExp(`damaged: ${snaps.a} \\(a\\)`));
    assert.match(text.stdout, /--forget/);

    const f = (await ok(['repair', 'snapshots', '--forget', '--repo', copy, '--json'], env)).json;
    assert.deepEqual(f.forgotten, [snaps.a]);
    const list = (await ok(['snapshots', '--repo', copy, '--json'], env)).json.map((x: { id: string }) => x.id).sort();
    assert.deepEqual(list, [snaps.b, snaps.c].sort());
    assert.deepEqual(await packFiles(copy), packs, 'no pack deleted by repair');
    for (const vm of ['b', 'c']) {
      const out = path.join(s.dir, `lost-${vm}.img`);
      await ok(['restore', snaps[vm]!, '--repo', copy, '--to', out], env);
      assert.ok(await sameBytes(imgs[vm]!, out), vm);
    }
    // the index still names the deleted pack (verify says so, exit 3), but no snapshot is damaged any more
    const v = JSON.parse((await run(['verify', '--repo', copy, '--json'], env)).stdout);
    assert.deepEqual(v.damagedSnapshots, []);
    assert.ok(v.problems.every((p: string) => /missing from the repository/.test(p)), v.problems.join('\n'));
    // a clean repository: nothing to do, exit 0
    const clean = (await ok(['repair', 'snapshots', '--repo', repo, '--json'], s.env)).json;
    assert.deepEqual(clean.damaged, []);
  });
});
