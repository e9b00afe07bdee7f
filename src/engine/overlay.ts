import { promises as fsp } from 'node:fs';
import { UserError } from '../repo/errors.js';

/** What an overlay belongs to: a disk of a snapshot, with its geometry. */
export interface OverlayIdentity {
  snapshot: string;
  disk: number;
  capacity: number;
  chunkSize: number;
}

const MAP_MAGIC = 'pilotlight-overlay-1';

/**
 * A copy-on-write overlay of one disk: a sparse local file the size of the disk,
 * holding whole chunks that were written, and a bitmap (one bit per chunk) of
 * which chunks it holds, kept in FILE.map beside it. The repository is never
 * written.
 *
 * Durability follows NBD semantics: data is synced and the map rewritten (to a
 * temp file, fsync, rename) on flush and on close. A chunk written after the last
 * flush may be lost on a crash and then reads from the snapshot again; a chunk the
 * map names was synced before the map named it.
 *
 * Memory: the bitmap, 1 bit per 64 KiB chunk (2 MiB per TiB of disk).
 */
export class Overlay {
  private dirtyMap = false;
  private flushing: Promise<void> = Promise.resolve();

  private constructor(
    readonly file: string,
    private readonly fh: fsp.FileHandle,
    readonly identity: OverlayIdentity,
    private readonly bits: Uint8Array,
  ) {}

  static mapFile(file: string): string {
    return `${file}.map`;
  }

  /** Opens an overlay (creating it when FILE does not exist); refuses one made for another disk. */
  static async open(file: string, identity: OverlayIdentity): Promise<Overlay> {
    const chunks = Math.ceil(identity.capacity / identity.chunkSize);
    const mapFile = Overlay.mapFile(file);
    const st = await fsp.stat(file).catch(() => null);
    if (st && !st.isFile()) throw new UserError(`overlay ${file} is not a regular file`);
    if (!st) {
      if (await fsp.stat(mapFile).catch(() => null)) throw new UserError(`${mapFile} exists without its overlay ${file}; remove it or pick another --overlay`);
      const fh = await fsp.open(file, 'wx+', 0o600);
      await fh.truncate(identity.capacity);
      const o = new Overlay(file, fh, identity, new Uint8Array(Math.ceil(chunks / 8)));
      o.dirtyMap = true;
      await o.flush();
      return o;
    }
    let raw: Buffer;
    try {
      raw = await fsp.readFile(mapFile);
    } catch {
      throw new UserError(`overlay ${file} has no ${mapFile}: it was not made by 'serve nbd --overlay'; pick a new file`);
    }
    const nl = raw.indexOf(0x0a);
    let head: OverlayIdentity & { magic?: string };
    try {
      head = JSON.parse(raw.subarray(0, nl).toString('utf8'));
    } catch {
      throw new UserError(`${mapFile} is damaged`);
    }
    if (head.magic !== MAP_MAGIC) throw new UserError(`${mapFile} is not a pilotlight overlay map`);
    for (const k of ['snapshot', 'disk', 'capacity', 'chunkSize'] as const) {
      if (head[k] !== identity[k]) {
        throw new UserError(`overlay ${file} belongs to snapshot ${head.snapshot} disk ${head.disk}, not ${identity.snapshot} disk ${identity.disk}`);
      }
    }
    const bits = new Uint8Array(raw.subarray(nl + 1));
    if (bits.length !== Math.ceil(chunks / 8)) throw new UserError(`${mapFile} is damaged (bitmap of ${bits.length} bytes)`);
    if (st.size !== identity.capacity) throw new UserError(`overlay ${file} is ${st.size} bytes, the disk is ${identity.capacity}`);
    return new Overlay(file, await fsp.open(file, 'r+'), identity, bits);
  }

  has(chunk: number): boolean {
    return (this.bits[chunk >> 3]! & (1 << (chunk & 7))) !== 0;
  }

  /** Chunks the overlay holds. */
  count(): number {
    let n = 0;
    for (const b of this.bits) for (let v = b; v; v &= v - 1) n++;
    return n;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const b = Buffer.allocUnsafe(length);
    let at = 0;
    while (at < length) {
      const { bytesRead } = await this.fh.read(b, at, length - at, offset + at);
      if (bytesRead === 0) throw new Error(`overlay ${this.file}: short read at ${offset + at}`);
      at += bytesRead;
    }
    return b;
  }

  /** Writes a whole chunk and marks it held. */
  async writeChunk(chunk: number, data: Buffer): Promise<void> {
    await this.write(chunk * this.identity.chunkSize, data);
    this.bits[chunk >> 3]! |= 1 << (chunk & 7);
    this.dirtyMap = true;
  }

  /** Writes bytes inside chunks the overlay already holds. */
  async write(offset: number, data: Buffer): Promise<void> {
    let at = 0;
    while (at < data.length) {
      const { bytesWritten } = await this.fh.write(data, at, data.length - at, offset + at);
      at += bytesWritten;
    }
  }

  /** Syncs the data, then records the chunks held (flushes run one at a time). */
  flush(): Promise<void> {
    const run = this.flushing.then(() => this.flushNow());
    this.flushing = run.catch(() => {});
    return run;
  }

  private async flushNow(): Promise<void> {
    // the map written names only chunks whose data the datasync below covers
    const dirty = this.dirtyMap;
    const bits = Buffer.from(this.bits);
    this.dirtyMap = false;
    await this.fh.datasync();
    if (!dirty) return;
    const mapFile = Overlay.mapFile(this.file);
    const tmp = `${mapFile}.tmp`;
    const head = JSON.stringify({ magic: MAP_MAGIC, ...this.identity });
    const fh = await fsp.open(tmp, 'w', 0o600);
    try {
      await fh.write(Buffer.concat([Buffer.from(head + '\n'), bits]));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, mapFile);
  }

  async close(): Promise<void> {
    try {
      await this.flush();
    } finally {
      await this.fh.close();
    }
  }
}
