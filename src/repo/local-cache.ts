import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Level } from 'level';
import { BlobStore } from '../store/blob-store.js';
import type { RepoSealer } from './repo-sealer.js';
import { INDEX_PREFIX } from './format.js';
import { IndexEntry, decodeIndex, decodeLocation, encodeLocation } from './index-file.js';

type Sub = import('abstract-level').AbstractSublevel<Level<Buffer, Buffer>, string | Buffer | Uint8Array, Buffer, Buffer>;

/**
 * The local cache of a repository: its index in a LevelDB database (so memory stays
 * bounded whatever the repository size) mapping chunk id -> location, plus the
 * names of the index files it holds. `sync()` loads index files it has not seen
 * and rebuilds from scratch when one it holds has gone (after a prune).
 *
 * One process at a time can open a LevelDB directory. When another pilotlight
 * process holds the shared cache (two backups at once), this one builds a private
 * cache in a temporary directory and removes it on close: slower, never wrong.
 */
export class LocalCache {
  private constructor(
    private readonly db: Level<Buffer, Buffer>,
    private readonly ids: Sub,
    private readonly files: Sub,
    private readonly records: Sub,
    readonly dir: string,
    private readonly privateDir: boolean,
  ) {}

  static defaultRoot(): string {
    if (process.env.PILOTLIGHT_CACHE_DIR) return process.env.PILOTLIGHT_CACHE_DIR;
    const xdg = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
    return path.join(xdg, 'pilotlight');
  }

  static async open(repoId: string, root = LocalCache.defaultRoot()): Promise<LocalCache> {
    const dir = path.join(root, repoId, 'cache');
    // chunk ids and snapshot records' plaintext: only the owner may read them (0700, whatever the umask)
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    for (const d of [path.join(root, repoId), dir]) await fsp.chmod(d, 0o700);
    try {
      return await LocalCache.openAt(dir, false);
    } catch (err) {
      if (!isLocked(err)) throw err;
      const tmp = await fsp.mkdtemp(path.join(os.tmpdir(), `pilotlight-index-${repoId.slice(0, 8)}-`));
      return LocalCache.openAt(tmp, true);
    }
  }

  private static async openAt(dir: string, privateDir: boolean): Promise<LocalCache> {
    const db = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    const ids = db.sublevel<Buffer, Buffer>('i', { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const files = db.sublevel<Buffer, Buffer>('f', { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    const records = db.sublevel<Buffer, Buffer>('s', { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    return new LocalCache(db, ids, files, records, dir, privateDir);
  }

  /** Brings the cache in step with the repository's index files. Returns how many it loaded. */
  async sync(store: BlobStore, sealer: RepoSealer): Promise<number> {
    const present = new Set<string>();
    for await (const b of store.list(INDEX_PREFIX)) present.add(b.name);
    const known = new Set<string>();
    for await (const k of this.files.keys()) known.add(k.toString());
    let stale = false;
    for (const k of known) if (!present.has(k)) stale = true;
    if (stale) {
      await this.ids.clear();
      await this.files.clear();
      known.clear();
    }
    const missing = [...present].filter((n) => !known.has(n));
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

function isLocked(err: unknown): boolean {
  const e = err as { code?: string; cause?: { code?: string } };
  return e?.code === 'LEVEL_LOCKED' || e?.cause?.code === 'LEVEL_LOCKED' || /lock/i.test(String((e as Error)?.message ?? ''));
}
