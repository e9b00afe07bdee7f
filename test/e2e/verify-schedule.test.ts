/**
 * Verification you can schedule: subsets and slices of the packs, a "last verified" log kept
 * in the repository, and every index entry checked against its pack's trailer.
 */
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { verifyRepository } from '../../src/engine/verify.js';
import { INDEX_PREFIX } from '../../src/repo/format.js';
import { decodeIndex, encodeIndexFile } from '../../src/repo/index-file.js';
import { Repository } from '../../src/repo/repository.js';
import { BlobType } from '../../src/repo/format.js';
import { FsStore } from '../../src/store/fs-store.js';
import { ok, run, scratch } from '../support/cli.js';
import { listFiles } from '../support/files.js';
import { makeImage, sameBytes } from '../support/images.js';

const MiB = 1 << 20;
const DAY = 86400_000;

async function countObjects(dir: string): Promise<number> {
  return (await listFiles(dir).catch(() => [])).length;
}

describe('verify: subsets, slices, the verified log', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let packs: number;

  before(async () => {
    s = await scratch('verify-sched');
    repo = path.join(s.dir, 'repo');
    await ok(['init', '--repo', repo, '--pack-size', '1'], s.env);
    for (let i = 0; i < 3; i++) {
      const img = path.join(s.dir, `vm${i}.img`);
      await makeImage(img, 8 * MiB, [{ offset: 0, length: 5 * MiB, kind: 'random' }], 10 + i);
      await ok(['backup', 'file', img, '--repo', repo, '--vm', `vm${i}`], s.env);
    }
    packs = (await countObjects(path.join(repo, 'data'))) + (await countObjects(path.join(repo, 'meta')));
    assert.ok(packs >= 15, `enough packs to slice (${packs})`);
  });

  after(async () => s.cleanup());

  it('--read-data-subset n/m: m runs read every pack exactly once between them, and the same slice reads the same packs', async () => {
    let total = 0;
    for (let n = 1; n <= 4; n++) {
      const r = (await ok(['verify', '--repo', repo, '--read-data-subset', `${n}/4`, '--json'], s.env)).json;
      assert.equal(r.ok, true, r.problems.join('\n'));
      assert.equal(r.packsRead, r.packsSelected);
      assert.equal(r.blobsChecked > 0 || r.packsRead === 0, true);
      total += r.packsRead;
    }
    assert.equal(total, packs);
    const a = (await ok(['verify', '--repo', repo, '--read-data-subset', '2/4', '--json'], s.env)).json;
    const b = (await ok(['verify', '--repo', repo, '--read-data-subset', '2/4', '--json'], s.env)).json;
    assert.equal(a.packsRead, b.packsRead);
  });

  it('--read-data-subset 25% reads a quarter of the packs (rounded up)', async () => {
    const r = (await ok(['verify', '--repo', repo, '--read-data-subset', '25%', '--json'], s.env)).json;
    assert.equal(r.ok, true);
    assert.equal(r.packsRead, Math.ceil(packs / 4));
    assert.equal(r.packs, packs);
  });

  it('a full --read-data is recorded in the repository: --older-than 30d right after it reads nothing; the log stays one object', async () => {
    await ok(['verify', '--repo', repo, '--read-data'], s.env);
    const r = (await ok(['verify', '--repo', repo, '--read-data', '--older-than', '30d', '--json'], s.env)).json;
    assert.equal(r.ok, true);
    assert.equal(r.packsRead, 0);
    assert.equal(r.indexEntriesChecked > 0, true, 'trailers are still cross-checked');
    // another host (another cache) sees the same record: it lives in the repository
    const r2 = (await ok(['verify', '--repo', repo, '--read-data', '--older-than', '30d', '--json'], { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'other-cache') })).json;
    assert.equal(r2.packsRead, 0);
    assert.equal(await countObjects(path.join(repo, 'verified')), 1);
  });

  it('--read-data --older-than 30d run daily spreads a full read-back over the month: every pack once per 30 days, never all in one day', async () => {
    // in-process, so that the runs can be given the day they run on
    const r0 = await Repository.open(new FsStore(repo), { password: s.env.PILOTLIGHT_PASSWORD }, path.join(s.dir, 'cache-days'));
    try {
      for await (const b of r0.store.list('verified/')) await r0.store.delete(b.name); // a repository never verified
      const t0 = Date.now();
      const perDay: number[] = [];
      // a pack whose id spreads it to fraction f of the window is first due on day ceil(30 f), in 1..30
      for (let day = 0; day <= 60; day++) {
        const r = await verifyRepository(r0, { readData: true, olderThanMs: 30 * DAY, now: t0 + day * DAY });
        assert.equal(r.ok, true, r.problems.join('\n'));
        perDay.push(r.packsRead);
      }
      const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
      assert.equal(perDay[0], 0, 'the first run reads nothing: never-verified packs are spread over the month');
      assert.equal(sum(perDay.slice(1, 31)), packs, `days 1-30: ${perDay.join(',')}`);
      assert.equal(sum(perDay.slice(31, 61)), packs, `days 31-60: ${perDay.join(',')}`);
      assert.deepEqual(perDay.slice(31, 61), perDay.slice(1, 31), 'each pack comes due again 30 days after it was read');
      assert.ok(Math.max(...perDay) < packs / 2, `spread: ${perDay.join(',')}`);
      let logObjects = 0;
      for await (const _ of r0.store.list('verified/')) logObjects++;
      assert.equal(logObjects, 1, 'sixty-one runs, one compacted log object');
    } finally {
      await r0.close();
    }
  });

  it('bad --read-data-subset / --older-than values are one-line errors, exit 1', async () => {
    for (const args of [
      ['--read-data-subset', '0%'],
      ['--read-data-subset', '5/3'],
      ['--read-data-subset', 'half'],
      ['--read-data', '--older-than', '30x'],
      ['--older-than', '30d'],
    ]) {
      const r = await run(['verify', '--repo', repo, ...args], s.env);
      assert.equal(r.code, 1, args.join(' '));
      assert.match(r.stderr, /^pilotlight: [^\n]+\n$/, args.join(' '));
    }
  });
});

describe('verify: index entries against pack trailers', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let img: string;
  let snap: string;

  before(async () => {
    s = await scratch('verify-index');
    repo = path.join(s.dir, 'repo');
    img = path.join(s.dir, 'a.img');
    await makeImage(img, 4 * MiB, [{ offset: 0, length: 3 * MiB, kind: 'random' }], 3);
    await ok(['init', '--repo', repo], s.env);
    snap = (await ok(['backup', 'file', img, '--repo', repo, '--vm', 'a', '--json'], s.env)).json.snapshot;
    // Tamper: one data entry of the index now points at the wrong offset. Built through the
    // repository's own index encoder and sealer, so the file itself is a valid index file.
    const r = await Repository.open(new FsStore(repo), { password: s.env.PILOTLIGHT_PASSWORD }, path.join(s.dir, 'cache-tamper'));
    try {
      let tampered = false;
      for await (const b of r.store.list(INDEX_PREFIX)) {
        const entries = decodeIndex(await r.store.get(b.name), r.sealer, b.name);
        const victim = entries.find((e) => e.type === BlobType.Data && e.offset > 0);
        if (!victim || tampered) continue;
        const other = entries.find((e) => e.type === BlobType.Data && e.packId.equals(victim.packId) && e.offset !== victim.offset)!;
        victim.offset = other.offset; // a real blob boundary, but another blob's
        const file = encodeIndexFile(entries, r.sealer, INDEX_PREFIX);
        await r.store.put(file.name, file.bytes);
        await r.store.delete(b.name);
        tampered = true;
      }
      assert.ok(tampered);
    } finally {
      await r.close();
    }
  });

  after(async () => s.cleanup());

  it('the structural verify reports the bad index entry and names the damaged snapshot (exit 3)', async () => {
    const r = await run(['verify', '--repo', repo, '--json'], { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache-v') });
    assert.equal(r.code, 3, r.stdout + r.stderr);
    const v = JSON.parse(r.stdout);
    assert.equal(v.badIndexEntries, 1);
    assert.ok(v.problems.some((p: string) => /bad index entry: blob [0-9a-f]{64} in pack data\/.* is indexed at type 0 offset \d+ .*the pack trailer says/.test(p)), v.problems.join('\n'));
    assert.deepEqual(v.damagedSnapshots, [snap]);
    const text = await run(['verify', '--repo', repo], { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache-v') });
    assert.match(text.stdout, new RegExp(`damaged snapshots: ${snap}`));
  });

  it('--read-data reports it too', async () => {
    const r = await run(['verify', '--repo', repo, '--read-data', '--json'], { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache-v') });
    assert.equal(r.code, 3);
    assert.equal(JSON.parse(r.stdout).badIndexEntries, 1);
  });

  it('(why it matters) restore through the bad entry fails', async () => {
    const r = await run(['restore', snap, '--repo', repo, '--to', path.join(s.dir, 'out.img')], { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache-v') });
    assert.equal(r.code, 3, r.stderr);
  });

  it('repair index rebuilds the index from the trailers: verify passes and the restore is byte-identical', async () => {
    const env = { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache-v') };
    const rep = (await ok(['repair', 'index', '--repo', repo, '--json'], env)).json;
    assert.equal(rep.ok, true);
    assert.equal(rep.indexFilesRemoved >= 1, true);
    const v = (await ok(['verify', '--repo', repo, '--read-data', '--json'], env)).json;
    assert.equal(v.ok, true, v.problems.join('\n'));
    const out = path.join(s.dir, 'out2.img');
    await ok(['restore', snap, '--repo', repo, '--to', out], env);
    assert.ok(await sameBytes(img, out));
  });
});

