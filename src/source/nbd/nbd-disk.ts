/**
 * One disk read over NBD: the change list from a QEMU dirty bitmap
 * (`qemu:dirty-bitmap:NAME`), or the allocated extents (`base:allocation`) when the
 * bitmap cannot be tied to the parent snapshot, and the data with NBD_CMD_READ.
 */
import { walkBlockStatus } from '../../nbd/block-status.js';
import type { NbdClient } from '../../nbd/client.js';
import { BASE_ALLOCATION, NBD_STATE_ZERO } from '../../nbd/protocol.js';
import { totalLength } from '../extents.js';
import type { ExtentPlan, SourceDisk } from '../disk-source.js';
import { type BitmapState, type CheckpointToken, encodeCheckpoint, judgeBitmap } from './checkpoint.js';

export const DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';
/** A dirty bitmap's block status flag: the block was written. */
const DIRTY = 1;

/** Where a disk's NBD connection and bitmap facts come from (a plain export, or one made through QMP). */
export interface DiskConnection {
  /** Connects (once) for a run whose parent token is `since`; the bitmap it offers, if any. */
  connect(since: string | undefined, hasParent: boolean): Promise<{ client: NbdClient; bitmap?: BitmapState }>;
  /** Closes the NBD connection (idempotent). */
  disconnect(): Promise<void>;
  /** The checkpoint that starts at this snapshot, when there is one. */
  readonly checkpoint?: CheckpointToken;
}

export class NbdDisk implements SourceDisk {
  readonly changeToken?: string;
  private client?: NbdClient;
  /** Block status requests the last extents() made. */
  blockStatusRequests = 0;

  constructor(
    readonly name: string,
    readonly capacity: number,
    readonly uri: string,
    private readonly conn: DiskConnection,
  ) {
    if (conn.checkpoint) this.changeToken = encodeCheckpoint(conn.checkpoint);
  }

  async extents(since: string | undefined, hasParent = false): Promise<ExtentPlan> {
    const { client, bitmap } = await this.conn.connect(since, hasParent);
    this.client = client;
    if (client.size !== this.capacity) throw new Error(`${this.uri}: the export is ${client.size} bytes, the disk was ${this.capacity} bytes when the backup started`);
    const alloc = client.contexts.get(BASE_ALLOCATION);
    const dirtyId = bitmap?.offered ? client.contexts.get(DIRTY_BITMAP_PREFIX + bitmap.name) : undefined;
    const queries = [];
    if (dirtyId !== undefined) queries.push({ id: dirtyId, keep: (f: number) => (f & DIRTY) !== 0 });
    if (alloc !== undefined) queries.push({ id: alloc, keep: (f: number) => (f & NBD_STATE_ZERO) === 0 });
    const walk = queries.length ? await walkBlockStatus(client, queries) : undefined;
    this.blockStatusRequests = walk?.requests ?? 0;
    const dirty = dirtyId !== undefined ? walk!.extents.get(dirtyId)! : undefined;
    if (bitmap) {
      const verdict = judgeBitmap(since, hasParent, bitmap, dirty, this.capacity);
      if (verdict.use && dirty) {
        return { kind: 'changed', extents: dirty, reason: `${verdict.reason}: ${dirty.length} dirty extent(s), ${totalLength(dirty)} bytes` };
      }
      return this.allocated(alloc, walk?.extents.get(alloc ?? -1), verdict.reason);
    }
    return this.allocated(alloc, walk?.extents.get(alloc ?? -1), 'no dirty bitmap given (--bitmap or --qmp): allocated extents (base:allocation)');
  }

  private allocated(alloc: number | undefined, extents: ExtentPlan['extents'] | undefined, reason: string): ExtentPlan {
    if (alloc === undefined || !extents) {
      return { kind: 'allocated', extents: [{ offset: 0, length: this.capacity }], reason: `${reason.replace(/ \(base:allocation\)/, '')}; the server offers no base:allocation: full read` };
    }
    return { kind: 'allocated', extents, reason };
  }

  async read(buf: Uint8Array, offset: number, length: number): Promise<void> {
    if (!this.client) throw new Error(`${this.name}: read before extents()`);
    await this.client.read(offset, length, buf);
  }

  async close(): Promise<void> {
    this.client = undefined;
    await this.conn.disconnect();
  }
}
