import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Level } from 'level';
import { BlobStore } from '../store/blob-store.js';
import type { RepoSealer } from './repo-sealer.js';
import { INDEX_PREFIX } from './format.js';
import { EpochIntent, condemnedIds, listEpochs, readDone, readIntent, retiredIndexFiles } from './gc-epoch.js';
import { IndexEntry, decodeIndex, decodeLocation, encodeLocation } from './index-file.js';

/** The value of an epoch's `done:` mark: one byte, as classic-level leaks empty values (engine/scratch-db.ts: PRESENT). */
const EPOCH_APPLIED = Buffer.from([1]);

type Sub = import('abstract-level').AbstractSublevel<Level<Buffer, Buffer>, string | Buffer | Uint8Array, Buffer, Buffer>;

/**
 * The local cache of a repository: its index in a LevelDB database (so memory stays
 * bounded whatever the repository size) mapping chunk id -> location, plus the
 * names of the index files it holds. `sync()` loads index files it has not seen
 * and applies what GC epochs changed (see sync).
 *
 * One process at a time can open a LevelDB directory. When another pilotlight
 * process holds the shared cache (two backups at once), this one builds a private
 * cache in a temporary directory and removes it on close: slower, never wrong.
 */
export class LocalCache {
  /** Which persistent slot this process holds (-1: a private temporary cache). */
  slot = -1;

  private constructor(
    private readonly db: Level<Buffer, Buffer>,
    private readonly ids: Sub,
    private readonly files: Sub,
    private readonly records: Sub,
    private readonly meta: Sub,
    readonly dir: string,
    private readonly privateDir: boolean,
  ) {}

  static defaultRoot(): string {
    if (process.env.PILOTLIGHT_CACHE_DIR) return process.env.PILOTLIGHT_CACHE_DIR;
    const xdg = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
    return path.join(xdg, 'pilotlight');
  }

  /**
   * Opens the cache of a repository for this process. LevelDB admits one process per
   * directory, so a host keeps persistent cache slots: `<root>/<repo id>/cache` (slot
   * 0), `cache-1`, `cache-2`, ... A process takes the first slot no other process holds;
   * a slot left by a process that ended is in step up to that process's last sync, so
   * the next sync loads only the index files added since (no rebuild). A slot that does
   * not exist yet (all slots busy) is seeded with a copy of a busy slot, so a second
   * process on a host starts from the first one's cache instead of loading every index
   * file (docs/DECISIONS.md "One local cache for many jobs"). Only when MAX_SLOTS are
   * busy does a process fall back to a private temporary cache.
   */
  static async open(repoId: string, root = LocalCache.defaultRoot()): Promise<LocalCache> {
    const base = path.join(root, repoId);
    // chunk ids and snapshot records' plaintext: only the owner may read them (0700, whatever the umask)
    await fsp.mkdir(base, { recursive: true, mode: 0o700 });
    await fsp.chmod(base, 0o700);
    for (let slot = 0; slot < MAX_SLOTS; slot++) {
      const dir = slotDir(base, slot);
      if (slot > 0 && !(await exists(dir))) await seedSlot(base, slot, dir);
      else await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
      await fsp.chmod(dir, 0o700);
      try {
        const cache = await LocalCache.openAt(dir, false);
        cache.slot = slot;
        return cache;
      } catch (err) {
        if (!isLocked(err)) {
          if (slot === 0 || !isCorrupt(err)) throw err;
          // a seed copied while its source was being written that LevelDB will not open: start this slot empty
          await fsp.rm(dir, { recursive: true, force: true });
          await fsp.mkdir(dir, { recursive: true });
          const cache = await LocalCache.openAt(dir, false);
          cache.slot = slot;
          return cache;
        }
      }
    }
    const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), `pilotlight-index-${repoId.slice(0, 8)}-`));
    return LocalCache.openAt(tmp, true);
  }

  private static async openAt(dir: string, privateDir: boolean): Promise<LocalCache> {
    const db = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    const ids = db.sublevel<Buffer, Buffer>('i', { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const files = db.sublevel<Buffer, Buffer>('f', { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const records = db.sublevel<Buffer, Buffer>('s', { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const meta = db.sublevel<Buffer, Buffer>('g', { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    return new LocalCache(db, ids, files, records, meta, dir, privateDir);
  }

  /**
   * Brings the cache in step with the repository's index files. Returns how many it loaded.
   *
   * After a prune it catches up instead of rebuilding: for each GC epoch not yet
   * applied it drops the condemned blobs whose cached location is a condemned
   * pack, and once the epoch is done it forgets the superseded index files (their
   * replacements are new index files and load like any other). Only an index
   * file that vanished without an epoch saying so (a repair, damage) still
   * triggers a full rebuild.
   */
  async sync(store: BlobStore, sealer: RepoSealer): Promise<number> {
    const present = new Set<string>();
    for await (const b of store.list(INDEX_PREFIX)) present.add(b.name);
    let fresh = true;
    for await (const _ of this.files.keys({ limit: 1 })) fresh = false;
    const superseded = await this.applyEpochs(store, sealer, fresh);
    const known = new Set<string>();
    for await (const k of this.files.keys()) known.add(k.toString());
    for (const k of superseded) known.delete(k);
    let stale = false;
    for (const k of known) if (!present.has(k)) stale = true;
    if (stale) {
      await this.ids.clear();
      await this.files.clear();
      known.clear();
    }
    const missing = [...present].filter((n) => !known.has(n) && !superseded.has(n));
    let loaded = 0;
    const queue = missing.slice();
    const worker = async () => {
      for (let name = queue.shift(); name; name = queue.shift()) {
        const entries = decodeIndex(await store.get(name), sealer, name);
        await this.add(name, entries);
        loaded++;
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, queue.length) }, worker));
    return loaded;
  }

  /**
   * Forgets every index entry and loads the index files as they are now. A last resort
   * (Repository.rebuildIndexOnce): catching up keeps one location per blob, and when a
   * prune deletes the pack of that location because the blob is stored in another pack
   * too, the other location is in an index file this cache loaded before; only a reload
   * brings it back.
   */
  async rebuild(store: BlobStore, sealer: RepoSealer): Promise<number> {
    await this.ids.clear();
    await this.files.clear();
    return this.sync(store, sealer);
  }

  /** The highest GC epoch whose condemned set this cache has applied. */
  async appliedEpoch(): Promise<number> {
    const v = await this.meta.get(Buffer.from('intent'));
    return v ? Number(v.toString()) : 0;
  }

  /**
   * Applies GC epochs (see sync). Returns the index files superseded by done
   * epochs (never to be loaded again, even while their deletion is under way).
   */
  private async applyEpochs(store: BlobStore, sealer: RepoSealer, fresh: boolean): Promise<Set<string>> {
    const epochs = await listEpochs(store);
    const superseded = new Set<string>();
    let applied = await this.appliedEpoch();
    for (const e of epochs) {
      if (e.epoch > applied) {
        if (!fresh) {
          const intent = await readIntent(store, sealer, e.epoch);
          if (intent) await this.dropCondemned(store, sealer, intent);
        }
        applied = e.epoch;
        await this.meta.put(Buffer.from('intent'), Buffer.from(String(applied)));
      }
      if (!e.done) continue;
      const doneKey = Buffer.from(`done:${e.epoch}`);
      const appliedDone = (await this.meta.get(doneKey)) !== undefined;
      if (e.end && appliedDone) continue;
      if (e.end && fresh) {
        await this.meta.put(doneKey, EPOCH_APPLIED);
        continue;
      }
      const done = await readDone(store, sealer, e.epoch);
      if (!done) continue;
      const retired = retiredIndexFiles(done);
      if (!e.end) for (const n of retired) superseded.add(n);
      if (!appliedDone) {
        await this.db.batch(retired.map((n) => ({ type: 'del' as const, key: Buffer.from(n), sublevel: this.files })) as never);
        await this.meta.put(doneKey, EPOCH_APPLIED);
      }
    }
    return superseded;
  }

  /** Deletes cached entries of condemned blobs, but only where the cache locates them in a condemned pack. */
  private async dropCondemned(store: BlobStore, sealer: RepoSealer, intent: EpochIntent): Promise<void> {
    const packs = new Set(intent.condemnedPacks.map((n) => n.slice(n.lastIndexOf('/') + 1)));
    for await (const ids of condemnedIds(store, sealer, intent)) {
      const found = await this.ids.getMany(ids);
      const ops: { type: 'del'; key: Buffer; sublevel: Sub }[] = [];
      found.forEach((v, i) => {
        if (v && packs.has(decodeLocation(v).packId.toString('hex'))) ops.push({ type: 'del', key: Buffer.from(ids[i]!), sublevel: this.ids });
      });
      if (ops.length) await this.db.batch(ops as never);
    }
  }

  /** Records the entries of one index file (after it was written to the repository). */
  async add(fileName: string, entries: IndexEntry[]): Promise<void> {
    const ops = entries.map((e) => ({ type: 'put' as const, key: e.id, value: encodeLocation(e), sublevel: this.ids }));
    ops.push({ type: 'put', key: Buffer.from(fileName), value: Buffer.alloc(0), sublevel: this.files });
    await this.db.batch(ops as never);
  }

  async get(id: Buffer): Promise<IndexEntry | null> {
    const v = await this.ids.get(id);
    return v ? { id, ...decodeLocation(v) } : null;
  }

  async getMany(ids: Buffer[]): Promise<(IndexEntry | null)[]> {
    const vs = await this.ids.getMany(ids);
    return vs.map((v, i) => (v ? { id: ids[i]!, ...decodeLocation(v) } : null));
  }

  async *entries(): AsyncIterable<IndexEntry> {
    for await (const [k, v] of this.ids.iterator()) yield { id: k, ...decodeLocation(v) };
  }

  async indexFiles(): Promise<string[]> {
    const out: string[] = [];
    for await (const k of this.files.keys()) out.push(k.toString());
    return out;
  }

  /** Snapshot records are immutable, so a cached copy never goes stale (only absent). */
  async getRecord(name: string): Promise<Buffer | undefined> {
    return this.records.get(Buffer.from(name));
  }

  /** Names of the cached records. */
  async recordNames(): Promise<string[]> {
    const out: string[] = [];
    for await (const k of this.records.keys()) out.push(k.toString());
    return out;
  }

  async putRecord(name: string, bytes: Buffer): Promise<void> {
    await this.records.put(Buffer.from(name), bytes);
  }

  async deleteRecord(name: string): Promise<void> {
    await this.records.del(Buffer.from(name));
  }

  async close(): Promise<void> {
    await this.db.close();
    if (this.privateDir) await fsp.rm(this.dir, { recursive: true, force: true });
  }
}

/** Cache slots per repository and host: processes using one repository at once on one host. */
export const MAX_SLOTS = 8;

function slotDir(base: string, slot: number): string {
  return path.join(base, slot === 0 ? 'cache' : `cache-${slot}`);
}

async function exists(p: string): Promise<boolean> {
  return fsp.stat(p).then(
    () => true,
    () => false,
  );
}

/**
 * Creates slot `dir` as a copy of the lowest busy slot (the files of a LevelDB that
 * another process has open). A copy taken while that process writes can miss a file a
 * compaction replaced: the copy is retried, and a copy LevelDB refuses to open is
 * discarded by open(). What a copy holds is a prefix of the source's atomic batches
 * (one batch = one index file's entries and its name), so the next sync loads exactly
 * the index files it lacks.
 */
async function seedSlot(base: string, slot: number, dir: string): Promise<void> {
  for (let from = 0; from < slot; from++) {
    const src = slotDir(base, from);
    if (!(await exists(path.join(src, 'CURRENT')))) continue;
    for (let attempt = 0; attempt < 3; attempt++) {
      const tmp = path.join(base, `.seed-${process.pid}-${Date.now()}-${attempt}`);
      try {
        await fsp.cp(src, tmp, { recursive: true, filter: (f) => path.basename(f) !== 'LOCK' });
        await fsp.rename(tmp, dir);
        return;
      } catch (err) {
        await fsp.rm(tmp, { recursive: true, force: true });
        if ((err as { code?: string }).code === 'ENOTEMPTY' || (err as { code?: string }).code === 'EEXIST') return; // another process made it first
      }
    }
  }
  await fsp.mkdir(dir, { recursive: true });
}

function isCorrupt(err: unknown): boolean {
  const e = err as { code?: string; cause?: { code?: string; message?: string }; message?: string };
  return e?.code === 'LEVEL_CORRUPTION' || e?.cause?.code === 'LEVEL_CORRUPTION' || /corrupt|missing files|NotFound/i.test(`${e?.message ?? ''} ${e?.cause?.message ?? ''}`);
}

function isLocked(err: unknown): boolean {
  const e = err as { code?: string; cause?: { code?: string } };
  return e?.code === 'LEVEL_LOCKED' || e?.cause?.code === 'LEVEL_LOCKED' || /lock/i.test(String((e as Error)?.message ?? ''));
}
