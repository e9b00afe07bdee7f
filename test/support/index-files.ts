/** Writes index files for `packs` packs (entriesPerPack entries each), `packsPerFile` packs per index file. */
import { randomBytes } from 'node:crypto';
import { Sealer } from '../../src/repo/crypto.js';
import { BlobType, INDEX_PREFIX } from '../../src/repo/format.js';
import { IndexEntry, encodeIndexPlain } from '../../src/repo/index-file.js';
import { BlobStore } from '../../src/store/blob-store.js';

export async function writeIndexFiles(store: BlobStore, sealer: Sealer, o: { packs: number; packsPerFile: number; entriesPerPack: number }): Promise<number> {
  let files = 0;
  const queue: Promise<void>[] = [];
  for (let p = 0; p < o.packs; p += o.packsPerFile) {
    const entries: IndexEntry[] = [];
    for (let k = p; k < Math.min(o.packs, p + o.packsPerFile); k++) {
      const packId = randomBytes(32);
      for (let e = 0; e < o.entriesPerPack; e++) entries.push({ id: randomBytes(32), type: BlobType.Data, packId, offset: e * 65536, length: 65536, rawLength: 65536 });
    }
    queue.push(store.put(`${INDEX_PREFIX}${randomBytes(32).toString('hex')}`, sealer.seal([encodeIndexPlain(entries)])));
    files++;
    if (queue.length >= 32) await Promise.all(queue.splice(0));
  }
  await Promise.all(queue);
  return files;
}
