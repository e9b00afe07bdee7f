/**
 * RepoWriter fills data packs two ways: written to the store as they fill (openAppend,
 * the local directory) or in a buffer (every other store). Both must make the same
 * packs: named by the keyed BLAKE3 of their bytes, split at the same blobs, every blob's
 * bytes where the trailer says.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import { BlobType } from '../../src/repo/format.js';
import { decodePack } from '../../src/repo/pack.js';
import { NewBlob, RepoWriter } from '../../src/repo/repo-writer.js';
import { Repository } from '../../src/repo/repository.js';
import { BlobStore } from '../../src/store/blob-store.js';
import { FsStore } from '../../src/store/fs-store.js';
import { Rng } from '../support/images.js';

const MiB = 1 << 20;
const pw = { password: 'pw' };
let dir: string;

before(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-repo-writer-'));
});
after(async () => fsp.rm(dir, { recursive: true, force: true }));

/** The same store without openAppend: the writer falls back to filling a buffer. */
function withoutAppend(store: BlobStore): BlobStore {
  return new Proxy(store, {
    get(target, key) {
      if (key === 'openAppend') return undefined;
      const v = Reflect.get(target, key, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

interface PackSeen {
  name: string;
  blobs: NewBlob[];
}

/** Every data pack of the repository, checked against its name and decoded. */
async function packsOf(repo: Repository): Promise<PackSeen[]> {
  const out: PackSeen[] = [];
  for await (const b of repo.store.list('data/')) {
    const bytes = await repo.store.get(b.name);
    assert.equal(repo.hasher.hash(bytes).toString('hex'), path.basename(b.name), `${b.name} is named by its bytes`);
    const { entries } = decodePack(bytes, repo.sealer, BlobType.Data, b.name);
    out.push({ name: b.name, blobs: entries.map((e) => ({ id: e.id, stored: bytes.subarray(e.offset, e.offset + e.length), rawLength: e.rawLength })) });
  }
  return out;
}

/** The packs in the order their blobs were added. */
function inOrder(packs: PackSeen[], blobs: NewBlob[]): PackSeen[] {
  const at = new Map(blobs.map((b, i) => [b.id.toString('hex'), i]));
  return packs.sort((x, y) => at.get(x.blobs[0]!.id.toString('hex'))! - at.get(y.blobs[0]!.id.toString('hex'))!);
}

it('a data pack written as it fills (openAppend) is the pack a buffer makes: same splits, same blobs, named by its bytes', async () => {
  const a = path.join(dir, 'a');
  const init = await Repository.init(new FsStore(a), { encrypted: true, packSize: MiB, ...pw });
  await init.close();
  const b = path.join(dir, 'b');
  await fsp.cp(a, b, { recursive: true }); // the same keys

  const rng = new Rng(11);
  const blobs: NewBlob[] = [];
  for (let i = 0; i < 120; i++) {
    const n = 1 + rng.int(90_000);
    blobs.push({ id: randomBytes(32), stored: rng.bytes(n), rawLength: n + 7 });
  }
  // handed over in batches of varying size, as a backup does (a batch may close several packs)
  const batches: NewBlob[][] = [];
  for (let i = 0; i < blobs.length; ) {
    const k = 1 + rng.int(40);
    batches.push(blobs.slice(i, i + k));
    i += k;
  }

  const results: PackSeen[][] = [];
  for (const [loc, store] of [
    [a, new FsStore(a)],
    [b, withoutAppend(new FsStore(b))],
  ] as const) {
    const repo = await Repository.open(store, pw, path.join(dir, `cache-${path.basename(loc)}`));
    try {
      const w = new RepoWriter(repo);
      for (const batch of batches) await w.addMany(BlobType.Data, batch);
      await w.finish();
      results.push(inOrder(await packsOf(repo), blobs));
    } finally {
      await repo.close();
    }
  }
  const [appended, buffered] = results as [PackSeen[], PackSeen[]];
  assert.ok(appended.length >= 3, `several packs (${appended.length})`);
  assert.deepEqual(
    appended.map((p) => p.blobs.length),
    buffered.map((p) => p.blobs.length),
    'packs split at the same blobs',
  );
  for (const packs of [appended, buffered]) {
    const back = packs.flatMap((p) => p.blobs);
    assert.equal(back.length, blobs.length);
    back.forEach((x, i) => {
      assert.ok(x.id.equals(blobs[i]!.id), `blob ${i}: id`);
      assert.ok(Buffer.from(x.stored).equals(Buffer.from(blobs[i]!.stored)), `blob ${i}: bytes`);
      assert.equal(x.rawLength, blobs[i]!.rawLength, `blob ${i}: raw length`);
    });
  }
  assert.deepEqual((await fsp.readdir(path.join(a, 'data'))).filter((n) => n.startsWith('.tmp-')), [], 'no temporary left');
});

it('an abandoned writer removes the pack it was filling', async () => {
  const loc = path.join(dir, 'abandon');
  const init = await Repository.init(new FsStore(loc), { encrypted: true, packSize: MiB, ...pw });
  await init.close();
  const repo = await Repository.open(new FsStore(loc), pw, path.join(dir, 'cache-abandon'));
  try {
    const w = new RepoWriter(repo);
    await w.addMany(BlobType.Data, [{ id: randomBytes(32), stored: randomBytes(100_000), rawLength: 100_000 }]);
    const temps = async () => (await fsp.readdir(path.join(loc, 'data'))).filter((n) => n.startsWith('.tmp-'));
    assert.equal((await temps()).length, 1, 'the open pack is being written');
    await w.abandon();
    assert.deepEqual(await temps(), []);
    const listed: string[] = [];
    for await (const x of repo.store.list('data/')) listed.push(x.name);
    assert.equal(listed.length, 0);
  } finally {
    await repo.close();
  }
});
