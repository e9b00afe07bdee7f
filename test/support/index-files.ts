/** Writes index files for `packs` packs (entriesPerPack entries each), `packsPerFile` packs per index file. */
import { randomBytes } from 'node:crypto';
import { BlobType, INDEX_PREFIX } from '../../src/repo/format.js';
import { createKeyedHasher } from '../../src/repo/hasher.js';
import { IndexEntry, encodeIndexFile } from '../../src/repo/index-file.js';
import { RepoSealer } from '../../src/repo/repo-sealer.js';
import { BlobStore } from '../../src/store/blob-store.js';

/** A version 2 sealer with fresh keys (encrypted unless `encrypted` is false). */
export async function testSealer(encrypted = true): Promise<RepoSealer> {
  return new RepoSealer(encrypted ? randomBytes(32) : null, 2, await createKeyedHasher(randomBytes(32)), false);
}

export async function writeIndexFiles(store: BlobStore, sealer: RepoSealer, o: { packs: number; packsPerFile: number; entriesPerPack: number }): Promise<number> {
  let files = 0;
  const queue: Promise<void>[] = [];
  for (let p = 0; p < o.packs; p += o.packsPerFile) {
    const entries: IndexEntry[] = [];
    for (let k = p; k < Math.min(o.packs, p + o.packsPerFile); k++) {
      const packId = randomBytes(32);
      for (let e = 0; e < o.entriesPerPack; e++) entries.push({ id: randomBytes(32), type: BlobType.Data, packId, offset: e * 65536, length: 65536, rawLength: 65536, seal: 2 });
    }
    const f = encodeIndexFile(entries, sealer, INDEX_PREFIX);
    queue.push(store.put(f.name, f.bytes));
    files++;
    if (queue.length >= 32) await Promise.all(queue.splice(0));
  }
  await Promise.all(queue);
  return files;
}
