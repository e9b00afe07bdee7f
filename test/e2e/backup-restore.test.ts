/**
 * End-to-end: the real CLI in child processes, on generated sparse images, into a
 * local directory repository.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch } from '../support/cli.js';
import { allocatedBytes, changeList, makeImage, mutate, sameBytes } from '../support/images.js';

const MiB = 1 << 20;
const KiB = 1024;

describe('backup and restore of raw images (encrypted repository)', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let disk0: string;
  let disk1: string;
  let first: any;

  before(async () => {
    s = await scratch('e2e');
    repo = path.join(s.dir, 'repo');
    disk0 = path.join(s.dir, 'disk0.img');
    disk1 = path.join(s.dir, 'disk1.img');
    // 96 MiB + 1000 bytes: the last chunk is partial
    await makeImage(disk0, 96 * MiB + 1000, [
      { offset: 0, length: 3 * MiB, kind: 'random' },
      { offset: 8 * MiB, length: 4 * MiB, kind: 'repeat' },
      { offset: 20 * MiB + 12345, length: 5 * MiB, kind: 'text' },
      { offset: 40 * MiB, length: 2 * MiB, kind: 'zero' }, // allocated but zero: must become a hole
      { offset: 70 * MiB, length: 1 * MiB, kind: 'random' },
      { offset: 96 * MiB, length: 1000, kind: 'text' },
    ]);
    await makeImage(disk1, 16 * MiB, [{ offset: 1 * MiB, length: 2 * MiB, kind: 'text' }], 9);
    await ok(['init', '--repo', repo], s.env);
    first = (await ok(['backup', 'file', disk0, disk1, '--repo', repo, '--vm', 'web01', '--json'], s.env)).json;
  });

  after(async () => s.cleanup());

  it('reports what it did in one JSON object', () => {
    for (const k of ['snapshot', 'vm', 'bytesScanned', 'bytesNew', 'bytesStored', 'chunksNew', 'chunksReused', 'chunksZero', 'durationMs']) {
      assert.ok(k in first, `missing ${k}`);
    }
    assert.equal(first.vm, 'web01');
    assert.equal(first.parent, null);
    assert.ok(first.chunksZero >= 32, 'the 2 MiB zero region is 32 zero chunks');
    // the repeated region is one distinct chunk: 64 chunks, 63 reused
    assert.ok(first.chunksReused >= 63, `chunksReused ${first.chunksReused}`);
    assert.ok(first.bytesStored < first.bytesNew, 'text compresses');
    assert.equal(first.disks[0].read.kind, 'allocated');
  });

  it('restores every disk byte-identical and sparse', async () => {
    for (const [n, src] of [disk0, disk1].entries()) {
      const out = path.join(s.dir, `restored${n}.img`);
      await ok(['restore', 'latest', '--vm', 'web01', '--disk', String(n), '--to', out, '--repo', repo], s.env);
      assert.ok(await sameBytes(src, out), `disk ${n} differs`);
      const alloc = await allocatedBytes(out);
      const { size } = await fsp.stat(out);
      assert.ok(alloc < size / 4, `restored disk ${n} is not sparse: ${alloc} of ${size} bytes allocated`);
    }
    const alloc0 = await allocatedBytes(path.join(s.dir, 'restored0.img'));
    assert.ok(alloc0 <= (3 + 4 + 6 + 1 + 1) * MiB, `zero chunks must be holes (allocated ${alloc0})`);
  });

  it('refuses to overwrite an existing file without --force', async () => {
    const out = path.join(s.dir, 'restored1.img');
    const r = await run(['restore', 'latest', '--vm', 'web01', '--disk', '1', '--to', out, '--repo', repo], s.env);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /exists; pass --force/);
    await ok(['restore', 'latest', '--vm', 'web01', '--disk', '1', '--to', out, '--repo', repo, '--force'], s.env);
  });

  it('an incremental from an unaligned change list reads only the changed chunks and restores both points in time', async () => {
    const before0 = path.join(s.dir, 'disk0.state1');
    await fsp.copyFile(disk0, before0);
    const changes = [
      { offset: 5 * MiB + 100, length: 10 }, // inside one chunk
      { offset: 64 * KiB - 5, length: 10 }, // straddles chunks 0 and 1
      { offset: 50 * MiB + 3, length: 200 * KiB }, // was a hole
      { offset: 96 * MiB + 10, length: 20 }, // the partial last chunk
    ];
    await mutate(disk0, changes, 11);
    const cl0 = path.join(s.dir, 'changes0.txt');
    const cl1 = path.join(s.dir, 'changes1.txt');
    await fsp.writeFile(cl0, changeList(changes));
    await fsp.writeFile(cl1, '');
    const inc = (await ok(['backup', 'file', disk0, disk1, '--changed-extents', cl0, cl1, '--repo', repo, '--vm', 'web01', '--json'], s.env)).json;
    assert.equal(inc.parent, first.snapshot);
    assert.equal(inc.disks[0].read.kind, 'changed');
    // 1 + 2 + 4 (200 KiB from +3 spans 4 chunks) + 1 = 8 chunks, the last only 1000 bytes
    assert.equal(inc.bytesScanned, 7 * 64 * KiB + 1000);
    assert.equal(inc.disks[1].bytesScanned, 0);

    const outNew = path.join(s.dir, 'inc-new.img');
    const outOld = path.join(s.dir, 'inc-old.img');
    await ok(['restore', inc.snapshot, '--disk', '0', '--to', outNew, '--repo', repo], s.env);
    await ok(['restore', first.snapshot, '--disk', '0', '--to', outOld, '--repo', repo], s.env);
    assert.ok(await sameBytes(disk0, outNew), 'new state differs');
    assert.ok(await sameBytes(before0, outOld), 'old state differs');
    const d1 = path.join(s.dir, 'inc-d1.img');
    await ok(['restore', inc.snapshot, '--disk', '1', '--to', d1, '--repo', repo], s.env);
    assert.ok(await sameBytes(disk1, d1), 'unchanged disk differs');

    const diff = (await ok(['diff', first.snapshot, inc.snapshot, '--repo', repo, '--json'], s.env)).json;
    assert.equal(diff.disks[0].changedChunks, 8);
    assert.equal(diff.disks[0].changedBytes, 7 * 64 * KiB + 1000);
    assert.equal(diff.disks[1].changedChunks, 0);

    // incremental restore: update the old image in place to the new snapshot
    const r = (await ok(['restore', inc.snapshot, '--disk', '0', '--to', outOld, '--since', first.snapshot, '--repo', repo, '--json'], s.env)).json;
    assert.equal(r.chunksWritten, 8);
    assert.ok(await sameBytes(disk0, outOld), 'in-place update differs');
  });

  it('snapshots --json lists both, with parents', async () => {
    const list = (await ok(['snapshots', '--repo', repo, '--json'], s.env)).json;
    assert.equal(list.length, 2);
    for (const k of ['id', 'vm', 'time', 'parent', 'disks']) assert.ok(k in list[0]);
    assert.equal(list[1].parent, list[0].id);
    assert.equal(list[0].disks.length, 2);
  });

  it('dedups across vms: a clone of web01 stores no new chunks', async () => {
    const clone = (await ok(['backup', 'file', disk0, disk1, '--repo', repo, '--vm', 'web02', '--json'], s.env)).json;
    assert.equal(clone.parent, null);
    assert.equal(clone.chunksNew, 0);
    assert.equal(clone.bytesNew, 0);
    assert.ok(clone.chunksReused > 100);
  });

  it('stats --json reports sizes and ratios', async () => {
    const st = (await ok(['stats', '--repo', repo, '--json'], s.env)).json;
    for (const k of ['snapshots', 'logicalBytes', 'storedBytes', 'uniqueChunks', 'dedupRatio', 'compressionRatio']) assert.ok(k in st, k);
    assert.equal(st.snapshots, 3);
    assert.ok(st.dedupRatio > 2.5, `three snapshots of nearly the same data: dedup ${st.dedupRatio}`);
    assert.ok(st.compressionRatio > 1);
  });

  it('verify --read-data passes on an intact repository', async () => {
    const v = (await ok(['verify', '--read-data', '--repo', repo, '--json'], s.env)).json;
    assert.equal(v.ok, true, v.problems.join('\n'));
    assert.ok(v.blobsChecked > 100);
  });

  it('the local cache is rebuilt from the repository when it is missing, and when it is stale', async () => {
    const fresh = { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache-new') };
    const out = path.join(s.dir, 'from-new-cache.img');
    await ok(['restore', first.snapshot, '--disk', '1', '--to', out, '--repo', repo], fresh);
    assert.ok(await sameBytes(disk1, out));
    // stale: the cache knows an index file the repository no longer has (as after a prune)
    const indexDir = path.join(repo, 'index');
    const [one] = await fsp.readdir(indexDir);
    const moved = path.join(s.dir, 'moved-index');
    await fsp.rename(path.join(indexDir, one!), moved);
    try {
      const r = await run(['verify', '--repo', repo, '--json'], fresh);
      const v = JSON.parse(r.stdout);
      assert.equal(v.ok, false, 'chunks listed only in the removed index file must be reported missing');
    } finally {
      await fsp.rename(moved, path.join(indexDir, one!));
    }
    const v = (await ok(['verify', '--repo', repo, '--json'], fresh)).json;
    assert.equal(v.ok, true, v.problems.join('\n'));
  });

  it('a disk whose size changed is read whole, and says why', async () => {
    const grown = path.join(s.dir, 'grown.img');
    await fsp.copyFile(disk1, grown);
    await fsp.truncate(grown, 32 * MiB);
    const cl = path.join(s.dir, 'grown.txt');
    await fsp.writeFile(cl, '0 65536\n');
    const r = (await ok(['backup', 'file', disk0, grown, '--changed-extents', cl, cl, '--repo', repo, '--vm', 'web02', '--json'], s.env)).json;
    assert.equal(r.disks[1].read.kind, 'allocated');
    assert.match(r.disks[1].read.reason, /size changed/);
    const out = path.join(s.dir, 'grown-out.img');
    await ok(['restore', r.snapshot, '--disk', '1', '--to', out, '--repo', repo], s.env);
    assert.ok(await sameBytes(grown, out));
  });
});

describe('unencrypted repository', () => {
  it('round-trips and stores plain blobs', async () => {
    const s = await scratch('plain');
    try {
      const repo = path.join(s.dir, 'repo');
      const img = path.join(s.dir, 'a.img');
      await makeImage(img, 8 * MiB, [{ offset: 0, length: 2 * MiB, kind: 'text' }]);
      const env = { ...s.env, PILOTLIGHT_PASSWORD: undefined };
      const init = (await ok(['init', '--no-encryption', '--repo', repo, '--json'], env)).json;
      assert.equal(init.encryption, 'none');
      await ok(['backup', 'file', img, '--repo', repo, '--vm', 'v'], env);
      const out = path.join(s.dir, 'out.img');
      await ok(['restore', 'latest', '--vm', 'v', '--to', out, '--repo', repo], env);
      assert.ok(await sameBytes(img, out));
    } finally {
      await s.cleanup();
    }
  });
});
