import { randomBytes } from 'node:crypto';
import { promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import {
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

/**
 * A directory on a local or network file system. Each object is one file.
 * put writes `.tmp-<random>` in the target directory, fsyncs it, then renames
 * it into place (or links it, for ifNotExists, so that a concurrent writer of
 * the same name fails instead of being overwritten) and fsyncs the directory.
 * Temporary files left by a crash are never listed and are removed by `sweepTemp`.
 */
export class FsStore implements BlobStore {
  readonly capabilities: StoreCapabilities = { conditionalPut: true };
  readonly location: string;

  constructor(readonly root: string) {
    this.location = path.resolve(root);
  }

  private file(name: string): string {
    checkBlobName(name);
    return path.join(this.location, ...name.split('/'));
  }

  async put(name: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    const target = this.file(name);
    const dir = path.dirname(target);
    await fsp.mkdir(dir, { recursive: true });
    const tmp = path.join(dir, `.tmp-${randomBytes(8).toString('hex')}`);
    const fh = await fsp.open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
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
    await syncDir(dir);
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
      const size = (await fh.stat()).size;
      if (range.offset < 0 || range.length < 0 || range.offset + range.length > size) {
        throw new BlobRangeError(name, range, size);
      }
      const buf = Buffer.allocUnsafe(range.length);
      let done = 0;
      while (done < range.length) {
        const { bytesRead } = await fh.read(buf, done, range.length - done, range.offset + done);
        if (bytesRead === 0) throw new BlobRangeError(name, range, size);
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

  /** Removes temporary files older than `olderThanMs` left by crashed writers. */
  async sweepTemp(olderThanMs = 3600_000): Promise<number> {
    let removed = 0;
    const now = Date.now();
    const visit = async (dir: string): Promise<void> => {
      const entries = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const e of entries) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) await visit(p);
        else if (e.name.startsWith('.tmp-')) {
          const st = await fsp.stat(p).catch(() => null);
          if (st && now - st.mtimeMs > olderThanMs) {
            await fsp.rm(p, { force: true });
            removed++;
          }
        }
      }
    };
    await visit(this.location);
    return removed;
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
