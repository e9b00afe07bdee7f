import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { it } from 'node:test';
import { BlobStore } from '../../src/store/blob-store.js';
import { FsStore } from '../../src/store/fs-store.js';
import { storeConformance } from './conformance.js';

storeConformance('fs', {
  async create() {
    return new FsStore(await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-fs-store-')));
  },
  async destroy(store: BlobStore) {
    await fsp.rm((store as FsStore).root, { recursive: true, force: true });
  },
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
