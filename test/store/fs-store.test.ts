import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { it } from 'node:test';
import { BlobStore } from '../../src/store/blob-store.js';
import { FsStore, tempOwner } from '../../src/store/fs-store.js';
import { openStore } from '../../src/store/open-store.js';
import { killWhenReady } from '../support/killed-writer.js';
import { storeConformance } from './conformance.js';

storeConformance('fs', {
  async create() {
    return new FsStore(await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-fs-store-')));
  },
  async destroy(store: BlobStore) {
    await fsp.rm((store as FsStore).root, { recursive: true, force: true });
  },
  appends: true,
});

// what the engine gets for a directory: MeteredStore over FsStore, which passes openAppend through
storeConformance('fs (openStore: MeteredStore over FsStore)', {
  async create() {
    return openStore(await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-fs-store-')));
  },
  async destroy(store: BlobStore) {
    await fsp.rm(store.location, { recursive: true, force: true });
  },
  appends: true,
});

it('fs: temporary files of a crashed writer are never listed, and are swept', async () => {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-fs-store-'));
  try {
    const store = new FsStore(root);
    await store.put('data/aa/p1', Buffer.from('whole'));
    await fsp.writeFile(path.join(root, 'data', 'aa', '.tmp-deadbeef'), 'half a pa');
    const names: string[] = [];
    for await (const b of store.list('data/')) names.push(b.name);
    assert.deepEqual(names, ['data/aa/p1']);
    assert.equal(await store.sweepTemp(-1), 1);
  } finally {
    await fsp.rm(root, { recursive: true, force: true });
  }
});

it('fs: a writer killed (SIGKILL) while appending leaves a temp that is never listed, and the next append put sweeps it', async () => {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-fs-store-'));
  try {
    const storeModule = new URL('../../src/store/fs-store.js', import.meta.url).href;
    const pid = await killWhenReady(
      `const { FsStore } = await import(${JSON.stringify(storeModule)});
       const a = await new FsStore(${JSON.stringify(root)}).openAppend('data/');
       await a.append([Buffer.alloc(3 << 20, 7)]);`,
      'appended',
    );

    const temps = async () => (await fsp.readdir(path.join(root, 'data'))).filter((n) => n.startsWith('.tmp-'));
    const left = await temps();
    assert.equal(left.length, 1, 'the killed writer left its temp');
    assert.equal(tempOwner(left[0]!)?.pid, pid);
    assert.equal((await fsp.stat(path.join(root, 'data', left[0]!))).size, 3 << 20);
    const store = new FsStore(root);
    const names = async () => {
      const out: string[] = [];
      for await (const b of store.list('')) out.push(b.name);
      return out;
    };
    assert.deepEqual(await names(), []);

    const next = await store.openAppend('data/');
    const now = await temps();
    assert.deepEqual(now.map((n) => tempOwner(n)?.pid), [process.pid], "the dead writer's temp is swept, the live one's kept");
    await next.append([Buffer.from('pack')]);
    await next.commit('data/ab/abab');
    assert.deepEqual(await temps(), []);
    assert.deepEqual(await names(), ['data/ab/abab']);
  } finally {
    await fsp.rm(root, { recursive: true, force: true });
  }
});
