import { IntegrityError } from '../repo/errors.js';
import { BlobType, DATA_PREFIX, ID_BYTES, META_PREFIX, PAGE_SLOTS, isZeroId, packObjectName } from '../repo/format.js';
import { decodePack } from '../repo/pack.js';
import { Repository } from '../repo/repository.js';
import { ManifestReader, chunkCount, levelSizes } from '../snapshot/manifest.js';
import { SnapshotCatalog, SnapshotRecord } from '../snapshot/snapshot-record.js';
import { WorkerPool } from './worker-pool.js';

export interface VerifyReport {
  ok: boolean;
  snapshots: number;
  packs: number;
  packsRead: number;
  blobsChecked: number;
  chunksReferenced: number;
  problems: string[];
  damagedSnapshots: string[];
}

/**
 * Structure check: every snapshot's manifest pages are readable and verified,
 * every chunk they reference is in the index, and every indexed pack exists.
 * With readData: every pack is read whole, checked against its name, its trailer
 * parsed, and every blob in it decrypted, decompressed and re-hashed; chunks that
 * fail are traced to the snapshots that use them.
 */
export async function verifyRepository(repo: Repository, options: { readData?: boolean; workers?: number } = {}): Promise<VerifyReport> {
  const problems: string[] = [];
  const packs = new Map<string, number>();
  for (const prefix of [DATA_PREFIX, META_PREFIX]) {
    for await (const b of repo.store.list(prefix)) packs.set(b.name, b.size);
  }
  const cache = await repo.cache();
  const damaged = new Set<string>();
  const missingPacks = new Set<string>();
  for await (const e of cache.entries()) {
    const name = packObjectName(e.type, e.packId.toString('hex'));
    if (!packs.has(name)) {
      if (!missingPacks.has(name)) problems.push(`pack ${name} is in the index but missing from the repository`);
      missingPacks.add(name);
      damaged.add(e.id.toString('hex'));
    }
  }

  let packsRead = 0;
  let blobsChecked = 0;
  if (options.readData) {
    const pool = new WorkerPool(repo, options.workers);
    try {
      for (const [name, size] of packs) {
        const result = await checkPack(repo, pool, name, size);
        packsRead++;
        blobsChecked += result.blobs;
        for (const p of result.problems) problems.push(p);
        for (const id of result.damagedIds) damaged.add(id);
        if (result.unreadable) {
          // every indexed blob of an unreadable pack is damaged
          for await (const e of cache.entries()) {
            if (packObjectName(e.type, e.packId.toString('hex')) === name) damaged.add(e.id.toString('hex'));
          }
        }
      }
    } finally {
      await pool.close();
    }
  }

  const catalog = new SnapshotCatalog(repo);
  const snapshots = await catalog.list();
  const reader = new ManifestReader(repo);
  const damagedSnapshots: string[] = [];
  const goodPages = new Set<string>();
  let chunksReferenced = 0;
  for (const s of snapshots) {
    const why = await checkSnapshot(repo, reader, s, damaged, goodPages, (n) => (chunksReferenced += n));
    if (why.length) {
      damagedSnapshots.push(s.id);
      for (const w of why.slice(0, 5)) problems.push(`snapshot ${s.id} (${s.vm}): ${w}`);
      if (why.length > 5) problems.push(`snapshot ${s.id} (${s.vm}): ... and ${why.length - 5} more`);
    }
  }
  return {
    ok: problems.length === 0,
    snapshots: snapshots.length,
    packs: packs.size,
    packsRead,
    blobsChecked,
    chunksReferenced,
    problems,
    damagedSnapshots,
  };
}

async function checkPack(
  repo: Repository,
  pool: WorkerPool,
  name: string,
  size: number,
): Promise<{ blobs: number; problems: string[]; damagedIds: string[]; unreadable: boolean }> {
  const problems: string[] = [];
  const damagedIds: string[] = [];
  let bytes: Buffer;
  try {
    bytes = await repo.store.get(name);
  } catch (err) {
    return { blobs: 0, problems: [`pack ${name}: cannot read: ${(err as Error).message}`], damagedIds, unreadable: true };
  }
  const expected = name.slice(name.lastIndexOf('/') + 1);
  if (repo.hasher.hash(bytes).toString('hex') !== expected) problems.push(`pack ${name}: content does not match its name`);
  if (bytes.length !== size || bytes.length < 4) {
    return { blobs: 0, problems: [...problems, `pack ${name}: truncated`], damagedIds, unreadable: true };
  }
  let entries;
  let seal: 1 | 2;
  try {
    const packType = name.startsWith('meta/') ? BlobType.Page : BlobType.Data;
    ({ entries, seal } = decodePack(bytes, repo.sealer, packType, `pack ${name}`));
  } catch (err) {
    return { blobs: 0, problems: [...problems, `pack ${name}: ${(err as Error).message}`], damagedIds, unreadable: true };
  }
  const plains = await pool.decode(
    bytes,
    entries.map((e) => ({
      offset: e.offset,
      length: e.length,
      id: e.id,
      type: e.type,
      seal,
      what: `${e.type === BlobType.Data ? 'chunk' : 'page'} ${e.id.toString('hex')} in ${name}`,
    })),
  );
  plains.forEach((p, j) => {
    if ('error' in p) {
      problems.push(p.error);
      damagedIds.push(entries[j]!.id.toString('hex'));
    }
  });
  return { blobs: entries.length, problems, damagedIds, unreadable: false };
}

async function checkSnapshot(
  repo: Repository,
  reader: ManifestReader,
  s: SnapshotRecord,
  damaged: Set<string>,
  goodPages: Set<string>,
  count: (n: number) => void,
): Promise<string[]> {
  const why: string[] = [];
  const cache = await repo.cache();
  for (const d of s.disks) {
    const n = chunkCount(d.capacity, d.chunkSize);
    if (levelSizes(n).length !== d.depth) why.push(`disk ${d.name}: manifest depth ${d.depth} does not fit its capacity`);
    let leaves: Buffer[];
    try {
      leaves = await reader.leafIds(Buffer.from(d.root, 'hex'), n);
    } catch (err) {
      why.push(`disk ${d.name}: manifest unreadable: ${(err as Error).message}`);
      continue;
    }
    for (let p = 0; p < leaves.length; p++) {
      const leafId = leaves[p]!;
      if (isZeroId(leafId)) continue;
      const key = leafId.toString('hex');
      if (damaged.has(key)) {
        why.push(`disk ${d.name}: manifest page ${key} is damaged`);
        continue;
      }
      if (goodPages.has(key)) continue;
      let page: Buffer;
      try {
        page = await reader.leaf(leafId, p, n);
      } catch (err) {
        why.push(`disk ${d.name}: ${(err as Error).message}`);
        continue;
      }
      const ids: Buffer[] = [];
      for (let o = 0; o < page.length; o += ID_BYTES) {
        const id = page.subarray(o, o + ID_BYTES);
        if (!isZeroId(id)) ids.push(id);
      }
      count(ids.length);
      const found = await cache.getMany(ids);
      let bad = 0;
      ids.forEach((id, j) => {
        const hex = id.toString('hex');
        if (!found[j]) {
          bad++;
          if (bad <= 3) why.push(`disk ${d.name}: chunk ${hex} (offset ~${(p * PAGE_SLOTS) * d.chunkSize}) is not in the index`);
        } else if (damaged.has(hex)) {
          bad++;
          if (bad <= 3) why.push(`disk ${d.name}: chunk ${hex} is damaged`);
        }
      });
      if (bad === 0) goodPages.add(key);
      else if (bad > 3) why.push(`disk ${d.name}: ${bad - 3} more bad chunk(s) in page ${p}`);
    }
  }
  return why;
}
