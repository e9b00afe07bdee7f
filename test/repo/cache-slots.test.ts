/**
 * One local cache for many processes on a host: a second process takes its own
 * persistent slot seeded from the first one's, and loads only the index files it lacks
 * (no full rebuild from every index file). Real LevelDB, real files.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LocalCache } from '../../src/repo/local-cache.js';
import { FsStore } from '../../src/store/fs-store.js';
import { testSealer, writeIndexFiles } from '../support/index-files.js';

describe('local cache slots', () => {
  let dir: string;
  let store: FsStore;
  let sealer: Awaited<ReturnType<typeof testSealer>>;
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-slots-'));
    store = new FsStore(path.join(dir, 'repo'));
    sealer = await testSealer();
    // 10,000 packs in 1,000 index files
    assert.equal(await writeIndexFiles(store, sealer, { packs: 10_000, packsPerFile: 10, entriesPerPack: 4 }), 1000);
  });
  after(async () => {
    await store.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('a second process seeds its slot from the first and loads no index file again', async () => {
    const root = path.join(dir, 'cache');
    const a = await LocalCache.open('repo1', root);
    assert.equal(a.slot, 0);
    assert.equal(await a.sync(store, sealer), 1000, 'the first process builds the cache once');
    const b = await LocalCache.open('repo1', root);
    assert.equal(b.slot, 1, 'the busy slot 0 is not shared: the second process gets slot 1');
    assert.equal(await b.sync(store, sealer), 0, 'slot 1 was seeded from slot 0: no index file loaded');
    assert.equal((await b.indexFiles()).length, 1000);
    await writeIndexFiles(store, sealer, { packs: 30, packsPerFile: 10, entriesPerPack: 4 });
    assert.equal(await b.sync(store, sealer), 3, 'incremental: only the new index files');
    await a.close();
    // a process that starts after the first ended takes the persistent slot 0 and catches up
    const c = await LocalCache.open('repo1', root);
    assert.equal(c.slot, 0);
    assert.equal(await c.sync(store, sealer), 3);
    // slot 1 persists after its process ends
    await b.close();
    const d = await LocalCache.open('repo1', root);
    assert.equal(d.slot, 1);
    assert.equal(await d.sync(store, sealer), 0);
    let found = 0;
    for await (const _ of d.entries()) found++;
    assert.equal(found, 10_030 * 4, 'every entry is in the seeded slot');
    await c.close();
    await d.close();
  });
});
