/**
 * A 100 GiB thin disk: its manifest needs two levels of pages (one leaf page covers
 * 64 MiB), the backup reads only the allocated extents, an incremental touches one
 * leaf page, and the restore is a sparse file with the data in the right places.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, scratch } from '../support/cli.js';
import { allocatedBytes, changeList, fill, makeImage, mutate, Rng } from '../support/images.js';

const MiB = 1 << 20;
const GiB = 1 << 30;
const SIZE = 100 * GiB + 12345; // not chunk-aligned either
const REGIONS = [
  { offset: 0, length: 4 * MiB, kind: 'text' as const },
  { offset: 65 * GiB, length: 3 * MiB, kind: 'random' as const }, // past the first 1024 leaf pages
  { offset: SIZE - 2 * MiB - 5, length: 2 * MiB + 5, kind: 'random' as const }, // the tail
];

async function readAt(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await fsp.open(file, 'r');
  try {
    const b = Buffer.alloc(length);
    await fh.read(b, 0, length, offset);
    return b;
  } finally {
    await fh.close();
  }
}

describe('a 100 GiB thin disk (two-level manifest)', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let img: string;
  let first: any;

  before(async () => {
    s = await scratch('large');
    delete (s.env as Record<string, string | undefined>).PILOTLIGHT_PASSWORD; // an unencrypted repository: a password given would be refused
    repo = path.join(s.dir, 'repo');
    img = path.join(s.dir, 'thin.img');
    await makeImage(img, SIZE, REGIONS, 3);
    await ok(['init', '--repo', repo, '--no-encryption'], s.env);
    first = (await ok(['backup', 'file', img, '--repo', repo, '--vm', 'thin', '--json'], s.env)).json;
  });

  after(async () => s.cleanup());

  it('reads only the allocated extents and writes a handful of manifest pages', () => {
    const data = REGIONS.reduce((t, r) => t + r.length, 0);
    assert.ok(first.bytesScanned >= data && first.bytesScanned <= data + 4 * 65536, `scanned ${first.bytesScanned}`);
    // 3 leaf pages with data, 1 interior page... plus the root: never one per 64 MiB of disk
    assert.ok(first.pagesWritten >= 4 && first.pagesWritten <= 8, `pages ${first.pagesWritten}`);
  });

  it('an incremental at 70 GiB rewrites only the pages on its path, and both points in time restore', async () => {
    const change = [{ offset: 70 * GiB + 100, length: 1000 }];
    await mutate(img, change, 4);
    const cl = path.join(s.dir, 'cl.txt');
    await fsp.writeFile(cl, changeList(change));
    const inc = (await ok(['backup', 'file', img, '--changed-extents', cl, '--repo', repo, '--vm', 'thin', '--json'], s.env)).json;
    assert.equal(inc.bytesScanned, 65536);
    assert.ok(inc.pagesWritten <= 3, `a one-chunk change wrote ${inc.pagesWritten} pages`);

    const out = path.join(s.dir, 'restored.img');
    const r = (await ok(['restore', 'latest', '--vm', 'thin', '--to', out, '--repo', repo, '--json'], s.env)).json;
    assert.equal((await fsp.stat(out)).size, SIZE);
    assert.ok((await allocatedBytes(out)) < 64 * MiB, 'the restored 100 GiB disk must be sparse');
    const touched = (o: number, l: number) => Math.floor((o + l - 1) / 65536) - Math.floor(o / 65536) + 1;
    assert.equal(r.chunksWritten, REGIONS.reduce((t, reg) => t + touched(reg.offset, reg.length), 0) + 1);
    for (const reg of [...REGIONS, { offset: 70 * GiB, length: 65536 }]) {
      assert.ok((await readAt(out, reg.offset, reg.length)).equals(await readAt(img, reg.offset, reg.length)), `region at ${reg.offset}`);
    }
    assert.ok((await readAt(out, 30 * GiB, MiB)).equals(Buffer.alloc(MiB)), 'holes read as zeros');

    const old = path.join(s.dir, 'old.img');
    await ok(['restore', first.snapshot, '--to', old, '--repo', repo], s.env);
    assert.ok((await readAt(old, 70 * GiB, 65536)).equals(Buffer.alloc(65536)), 'the first snapshot has no data at 70 GiB');
    const rng = new Rng(3);
    assert.ok((await readAt(old, 0, 4 * MiB)).equals(fill('text', 4 * MiB, rng)), 'the first region matches the generator');
    await fsp.rm(old);
    await fsp.rm(out);
  });

  it('verify --read-data passes', async () => {
    const v = (await ok(['verify', '--read-data', '--repo', repo, '--json'], s.env)).json;
    assert.equal(v.ok, true, v.problems.join('\n'));
  });
});
