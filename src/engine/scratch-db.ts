import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Level } from 'level';

export type ScratchTable = import('abstract-level').AbstractSublevel<Level<Buffer, Buffer>, string | Buffer | Uint8Array, Buffer, Buffer>;

/**
 * The value of a set member: one byte, never an empty buffer. classic-level 3.0.0 copies
 * every key and value of a put or batch into a `new char[size]` and frees it only when
 * the size is not 0 (binding.cc: ToSlice / DisposeSliceBuffer), so each empty value
 * leaks one minimal malloc chunk: 32 bytes per member (measured: 1 M empty puts, 31 MiB
 * more in use). Readers test membership with `get(key) !== undefined` or list keys.
 */
export const PRESENT: Buffer = Buffer.from([1]);

/** A value as it may be stored: an empty one becomes PRESENT (see there). */
export function storable(value: Buffer): Buffer {
  return value.length === 0 ? PRESENT : value;
}

/**
 * A throw-away LevelDB database in a temporary directory: the sets and maps a
 * whole-repository pass needs (every pack, every index entry, every damaged id), kept
 * on disk so that memory stays bounded whatever the repository size. Removed on close.
 */
export class ScratchDb {
  private constructor(
    private readonly db: Level<Buffer, Buffer>,
    readonly dir: string,
  ) {}

  static async open(tag: string): Promise<ScratchDb> {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `pilotlight-${tag}-`));
    const db = new Level<Buffer, Buffer>(dir, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
    await db.open();
    return new ScratchDb(db, dir);
  }

  table(name: string): ScratchTable {
    return this.db.sublevel<Buffer, Buffer>(name, { keyEncoding: 'buffer', valueEncoding: 'buffer' });
  }

  async close(): Promise<void> {
    await this.db.close().catch(() => {});
    await fsp.rm(this.dir, { recursive: true, force: true });
  }
}

/** Buffers puts into batches of `size`: a stream of writes without one round trip each. */
export class BatchWriter {
  private ops: { key: Buffer; value: Buffer }[] = [];
  constructor(
    private readonly table: ScratchTable,
    private readonly size = 4096,
  ) {}

  async put(key: Buffer, value: Buffer): Promise<void> {
    this.ops.push({ key, value: storable(value) });
    if (this.ops.length >= this.size) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.ops.length === 0) return;
    const ops = this.ops;
    this.ops = [];
    await this.table.batch(ops.map((o) => ({ type: 'put' as const, key: o.key, value: o.value })));
  }
}
