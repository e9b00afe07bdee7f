import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp, constants as fsc } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { AppendFile } from './append-file.js';
import {
  AppendingPut,
  BlobExistsError,
  BlobInfo,
  BlobNotFoundError,
  BlobRangeError,
  BlobStore,
  ByteRange,
  PutOptions,
  StoreCapabilities,
  checkBlobName,
} from './blob-store.js';

/** Hooks for the two fsyncs of a put; tests record or hold them. Each gets the real operation. */
export interface FsStoreOptions {
  syncDir?: (dir: string, real: (dir: string) => Promise<void>) => Promise<void>;
  syncFile?: (fh: fsp.FileHandle, real: (fh: fsp.FileHandle) => Promise<void>) => Promise<void>;
}

/** Temps of another host, or of an unknown writer, older than this are a crashed writer's. */
export const TEMP_SAFE_AGE_MS = 3600_000;
/** A temp of this host whose pid is alive is still removed after this long (the pid was reused). */
const TEMP_PID_REUSE_MS = 24 * 3600_000;

/**
 * A directory on a local or network file system. Each object is one file.
 * put writes `.tmp-<host>-<pid>-<random>` in the target directory, fsyncs it, then
 * renames it into place (or links it, for ifNotExists, so that a concurrent writer of
 * the same name fails instead of being overwritten) and fsyncs the directory. A
 * directory that put had to create is made durable too: each new directory's parent is
 * fsynced, up to the first one that already existed.
 *
 * Temporary files left by a killed writer are never listed. They are removed (see
 * `sweepTemp` for the rule: never a live writer's) from a directory the first time this
 * store puts into it, and from the whole tree by `sweepTemp()` (`pilotlight repair`).
 */
export class FsStore implements BlobStore {
  readonly capabilities: StoreCapabilities = { conditionalPut: true, readsInto: true };
  readonly location: string;
  private readonly swept = new Set<string>();

  constructor(
    readonly root: string,
    private readonly options: FsStoreOptions = {},
  ) {
    this.location = path.resolve(root);
  }

  private syncDir(dir: string): Promise<void> {
    return this.options.syncDir ? this.options.syncDir(dir, syncDir) : syncDir(dir);
  }

  /** mkdir -p, then fsync the parent of every directory it created (deepest first), so each entry is durable. */
  private async makeDir(dir: string): Promise<void> {
    const first = await fsp.mkdir(dir, { recursive: true });
    if (!first) return;
    const parents: string[] = [];
    for (let d = dir; ; d = path.dirname(d)) {
      parents.push(path.dirname(d));
      if (d === path.resolve(first) || path.dirname(d) === d) break;
    }
    for (const p of parents) await this.syncDir(p);
  }

  private file(name: string): string {
    checkBlobName(name);
    return path.join(this.location, ...name.split('/'));
  }

  async put(name: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    const target = this.file(name);
    const dir = path.dirname(target);
    await this.prepareDir(dir);
    const tmp = tempIn(dir);
    const fh = await fsp.open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(data);
      await this.syncFile(fh);
    } catch (err) {
      await fh.close();
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    await fh.close();
    await this.place(tmp, name, options);
  }

  /**
   * A put in pieces: the temp is written in the directory `near` names completely (for
   * `data/`, the data directory), appended to as the pieces come, then fsynced and
   * moved into place as put's is. A temp that takes long to fill is still never a live
   * writer's when swept by this host (its pid is alive); another host removes it only
   * once it has not been written to for an hour, and the commit then fails: nothing is
   * lost, the run that wrote it fails and the next one writes the pack again.
   */
  async openAppend(near: string): Promise<AppendingPut> {
    const slash = near.lastIndexOf('/');
    const rel = slash >= 0 ? near.slice(0, slash) : '';
    const dir = rel ? this.file(rel) : this.location;
    await this.prepareDir(dir);
    const file = await AppendFile.create(tempIn(dir));
    let open = true;
    const drop = async (): Promise<void> => {
      if (!open) return;
      open = false;
      await file.remove();
    };
    return {
      get size() {
        return file.size;
      },
      append: async (parts) => {
        if (!open) throw new Error('append to a put that was committed or aborted');
        await file.append(parts);
      },
      commit: async (name, options = {}) => {
        if (!open) throw new Error('commit of a put that was committed or aborted');
        open = false;
        try {
          const dir = path.dirname(this.file(name));
          await this.syncFile(file.handle);
          await file.close();
          await this.prepareDir(dir);
        } catch (err) {
          await file.remove();
          throw err;
        }
        await this.place(file.path, name, options);
      },
      abort: drop,
    };
  }

  /** mkdir -p (durably), and the first time this store writes there, sweeps dead writers' temps. */
  private async prepareDir(dir: string): Promise<void> {
    await this.makeDir(dir);
    if (!this.swept.has(dir)) {
      this.swept.add(dir);
      await this.sweepDir(dir, TEMP_SAFE_AGE_MS).catch(() => 0); // housekeeping: never fails a put
    }
  }

  private syncFile(fh: fsp.FileHandle): Promise<void> {
    return this.options.syncFile ? this.options.syncFile(fh, (f) => f.sync()) : fh.sync();
  }

  /**
   * Moves a written and fsynced temp into place as `name` (a link for ifNotExists, so
   * that a concurrent writer of the name fails instead of being overwritten), then
   * fsyncs the directory. The temp is removed when that fails.
   */
  private async place(tmp: string, name: string, options: PutOptions): Promise<void> {
    const target = this.file(name);
    try {
      if (options.ifNotExists) {
        try {
          await fsp.link(tmp, target);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new BlobExistsError(name, this.location);
          throw err;
        }
        await fsp.unlink(tmp);
      } else {
        await fsp.rename(tmp, target);
      }
    } catch (err) {
      await fsp.rm(tmp, { force: true });
      throw err;
    }
    await this.syncDir(path.dirname(target));
  }

  async get(name: string, range?: ByteRange): Promise<Buffer> {
    const file = this.file(name);
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(file, fsc.O_RDONLY);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new BlobNotFoundError(name, this.location);
      throw err;
    }
    try {
      if (!range) return await fh.readFile();
      const pastEnd = async () => new BlobRangeError(name, range, (await fh.stat()).size);
      if (range.offset < 0 || range.length < 0) throw await pastEnd();
      const into = range.into && range.into.length >= range.length ? range.into : null;
      // Into the caller's buffer (a restore's reads: one fstat less per range), a range past
      // the end shows as a short read; else the size is checked before a buffer is allocated.
      if (!into && range.offset + range.length > (await fh.stat()).size) throw await pastEnd();
      const buf = into ? Buffer.from(into.buffer, into.byteOffset, range.length) : Buffer.allocUnsafe(range.length);
      let done = 0;
      while (done < range.length) {
        const { bytesRead } = await fh.read(buf, done, range.length - done, range.offset + done);
        if (bytesRead === 0) throw await pastEnd();
        done += bytesRead;
      }
      return buf;
    } finally {
      await fh.close();
    }
  }

  async head(name: string): Promise<BlobInfo | null> {
    try {
      const st = await fsp.stat(this.file(name));
      return { name, size: st.size };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    // Walk from the deepest directory the prefix names completely.
    const slash = prefix.lastIndexOf('/');
    const dirPart = slash >= 0 ? prefix.slice(0, slash) : '';
    if (dirPart) checkBlobName(dirPart);
    yield* this.walk(dirPart, prefix);
  }

  private async *walk(rel: string, prefix: string): AsyncIterable<BlobInfo> {
    const abs = rel ? path.join(this.location, ...rel.split('/')) : this.location;
    let entries;
    try {
      entries = await fsp.readdir(abs, { withFileTypes: true });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw err;
    }
    for (const e of entries) {
      if (e.name.startsWith('.tmp-')) continue;
      const name = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) {
        if (name.startsWith(prefix) || prefix.startsWith(`${name}/`)) yield* this.walk(name, prefix);
      } else if (e.isFile() && name.startsWith(prefix)) {
        const st = await fsp.stat(path.join(abs, e.name)).catch(() => null);
        if (st) yield { name, size: st.size };
      }
    }
  }

  async delete(name: string): Promise<void> {
    await fsp.rm(this.file(name), { force: true });
  }

  async close(): Promise<void> {}

  /**
   * Removes the temporary files of writers that are gone, in the whole tree; returns how many.
   * A temp is removed when its writer ran on this host and its pid is dead, or (another
   * host's, or an unknown writer's) when it is older than `olderThanMs` (default 1 hour);
   * a temp of a live pid of this host only after 24 hours (the pid was reused: no put
   * takes that long, nor does filling one pack by openAppend). Never a live writer's.
   */
  async sweepTemp(olderThanMs = TEMP_SAFE_AGE_MS): Promise<number> {
    let removed = 0;
    const visit = async (dir: string): Promise<void> => {
      removed += await this.sweepDir(dir, olderThanMs);
      const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const e of entries) if (e.isDirectory()) await visit(path.join(dir, e.name));
    };
    await visit(this.location);
    return removed;
  }

  private async sweepDir(dir: string, olderThanMs: number): Promise<number> {
    let removed = 0;
    const now = Date.now();
    for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
      if (!name.startsWith('.tmp-')) continue;
      const p = path.join(dir, name);
      const st = await fsp.stat(p).catch(() => null);
      if (!st || !st.isFile()) continue;
      const age = now - st.mtimeMs;
      const owner = tempOwner(name);
      const mine = owner?.host === HOST_TAG;
      const dead = mine ? !pidAlive(owner.pid) : age > olderThanMs;
      if (dead || (mine && age > TEMP_PID_REUSE_MS)) {
        await fsp.rm(p, { force: true });
        removed++;
      }
    }
    return removed;
  }
}

/** A new temp name in `dir`: `.tmp-<host>-<pid>-<random>` (tempOwner reads it back). */
function tempIn(dir: string): string {
  return path.join(dir, `.tmp-${HOST_TAG}-${process.pid}-${randomBytes(8).toString('hex')}`);
}

/** 8 hex digits naming this host in temp names (hostnames may hold characters names cannot). */
const HOST_TAG = createHash('sha256').update(os.hostname()).digest('hex').slice(0, 8);

/** The writer a temp name records (`.tmp-<host>-<pid>-<random>`); null for older names. */
export function tempOwner(name: string): { host: string; pid: number } | null {
  const m = /^\.tmp-([0-9a-f]{8})-([0-9]+)-[0-9a-f]+$/.exec(name);
  return m ? { host: m[1]!, pid: Number(m[2]) } : null;
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, fsc.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
