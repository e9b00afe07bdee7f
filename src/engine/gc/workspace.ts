import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { Level } from 'level';
import { storable } from '../scratch-db.js';

export type Sub = import('abstract-level').AbstractSublevel<Level<Buffer, Buffer>, string | Buffer | Uint8Array, Buffer, Buffer>;

export { PRESENT } from '../scratch-db.js';

/**
 * LevelDB options of the workspace, chosen so that its memory does not grow with the
 * repository (docs/DECISIONS.md, "Prune workspace memory"). LevelDB 1.20 (inside
 * classic-level) reads the first 1000 table files a process opens through mmap, and
 * each page a scan touches stays resident until the table leaves the table cache:
 * with the defaults (990 cached tables of 2 MiB) the account pass kept the whole
 * workspace mapped (RSS grew by 110-145 MiB at 1 M blobs). So: the smallest table
 * cache LevelDB allows (74 files less 10 of its own: 64 tables), the smallest table
 * file it allows (1 MiB), and a 1 MiB write buffer so that level-0 tables (memtable
 * flushes) are no larger: at most 64 MiB of mapped tables, two 1 MiB memtables and
 * the 8 MiB block cache.
 */
export const WORKSPACE_OPTIONS = { maxOpenFiles: 74, maxFileSize: 1 << 20, writeBufferSize: 1 << 20, cacheSize: 8 << 20 } as const;

/**
 * A prune's scratch space: a temporary LevelDB beside the local cache, so the
 * mark set, the index entries and the per-pack accounting live on disk and the
 * prune's memory does not grow with the repository (LevelDB keeps its write
 * buffers, block cache and at most 64 mapped table files in memory: see
 * WORKSPACE_OPTIONS). Removed when the prune ends.
 */
export class GcWorkspace {
  /** Pack object name -> size (u64 LE): the listing of data/ and meta/. */
  readonly packs: Sub;
  /** id(32) | packId(32) -> type u8, offset u32, length u32, rawLength u32, file ordinal u32. */
  readonly entries: Sub;
  /** Marked (live) ids -> empty. */
  readonly marks: Sub;
  /** packId(32) | id(32) -> live u8, length u32: the per-pack accounting. */
  readonly perPack: Sub;
  /** packId(32) -> decision u8 | type u8. */
  readonly decisions: Sub;
  /** Packs listed in some index file: packId -> file ordinal u32 of the first such file. */
  readonly indexed: Sub;
  /** Packs named by an index file the prune may not touch (a running backup may have written it). */
  readonly protectedPacks: Sub;
  /** srcPackId(32) | offset u32 BE -> id(32) + location of a live blob to copy. */
  readonly copies: Sub;
  /** id -> 45-byte location: entries of the compacted index files. */
  readonly newIndex: Sub;
  /** file ordinal u32 BE | packId -> empty: which index file names which pack. */
  readonly filePacks: Sub;

  private constructor(
    readonly db: Level<Buffer, Buffer>,
    readonly dir: string,
  ) {
    const sub = (n: string) => db.sublevel<Buffer, Buffer>(n, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    this.packs = sub('p');
    this.entries = sub('e');
    this.marks = sub('m');
    this.perPack = sub('b');
    this.decisions = sub('d');
    this.indexed = sub('x');
    this.protectedPacks = sub('q');
    this.copies = sub('c');
    this.newIndex = sub('n');
    this.filePacks = sub('f');
  }

  static async open(root: string): Promise<GcWorkspace> {
    await fsp.mkdir(root, { recursive: true });
    const dir = path.join(root, `gc-${randomBytes(6).toString('hex')}`);
    const db = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer', ...WORKSPACE_OPTIONS });
    await db.open();
    return new GcWorkspace(db, dir);
  }

  async close(): Promise<void> {
    await this.db.close().catch(() => {});
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}

/** Batches puts into one sublevel (flushes every `limit` operations). */
export class BatchWriter {
  private ops: { type: 'put' | 'del'; key: Buffer; value?: Buffer; sublevel: Sub }[] = [];
  constructor(
    private readonly db: Level<Buffer, Buffer>,
    private readonly limit = 4096,
  ) {}

  async put(sublevel: Sub, key: Buffer, value: Buffer): Promise<void> {
    this.ops.push({ type: 'put', key, value: storable(value), sublevel }); // never an empty value (scratch-db.ts: PRESENT)
    if (this.ops.length >= this.limit) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.ops.length === 0) return;
    const ops = this.ops;
    this.ops = [];
    await this.db.batch(ops as never);
  }
}
