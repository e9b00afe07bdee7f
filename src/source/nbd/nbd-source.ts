/**
 * The NBD source: one disk per NBD URI (qemu-nbd, qemu-storage-daemon, a libvirt
 * pull-mode backup, nbdkit), disks named disk0, disk1, ... by position.
 *
 * Without --qmp the exports are read as they are served: `--bitmap NAME` is the bitmap
 * that holds every write since checkpoint NAME (or since `--since-checkpoint CK`, for an
 * exported bitmap named otherwise, like libvirt's `backup-vda`), and `--checkpoint NAME`
 * (default: the bitmap's name) the one that records writes from this backup on.
 * With --qmp (see qmp-rotation.ts) pilotlight makes the bitmaps and exports itself.
 */
import { NbdClient } from '../../nbd/client.js';
import { describeTarget, parseNbdUri, type NbdTarget } from '../../nbd/uri.js';
import { BASE_ALLOCATION } from '../../nbd/protocol.js';
import { UserError } from '../../repo/errors.js';
import type { DiskSource, SourceDisk } from '../disk-source.js';
import { decodeCheckpoint, type BitmapState, type CheckpointToken } from './checkpoint.js';
import { DIRTY_BITMAP_PREFIX, NbdDisk, type DiskConnection } from './nbd-disk.js';
import { QmpRotation } from './qmp-rotation.js';

export interface NbdSourceOptions {
  vm: string;
  uris: string[];
  /** The bitmap to read as the change list (without --qmp). */
  bitmap?: string;
  /** The checkpoint this backup starts (without --qmp; default: `bitmap`). */
  checkpoint?: string;
  /** The checkpoint `bitmap` records writes since, when its name is not that checkpoint's (libvirt's `backup-vda`). */
  sinceCheckpoint?: string;
  /** QMP socket of the qemu or qemu-storage-daemon that serves the exports. */
  qmp?: string;
  log?: (message: string) => void;
}

/** An export served as it is: the connection is made at open, to learn the size. */
class ServedExport implements DiskConnection {
  readonly checkpoint?: CheckpointToken;

  constructor(
    private readonly client: NbdClient,
    private readonly bitmap: string | undefined,
    checkpoint: string | undefined,
    private readonly since: string | undefined,
  ) {
    if (checkpoint) this.checkpoint = { checkpoint };
  }

  static async open(target: NbdTarget, bitmap: string | undefined, checkpoint: string | undefined, since: string | undefined): Promise<ServedExport> {
    const client = await NbdClient.connect(target, {
      metaContexts: [BASE_ALLOCATION, ...(bitmap ? [DIRTY_BITMAP_PREFIX + bitmap] : [])],
      listQuery: bitmap ? DIRTY_BITMAP_PREFIX : undefined,
    });
    return new ServedExport(client, bitmap, checkpoint ?? bitmap, since);
  }

  disconnect(): Promise<void> {
    return this.client.disconnect();
  }

  get nbd(): NbdClient {
    return this.client;
  }

  async connect(since: string | undefined, hasParent: boolean): Promise<{ client: NbdClient; bitmap?: BitmapState }> {
    if (!this.bitmap) return { client: this.client };
    const offered = this.client.contexts.has(DIRTY_BITMAP_PREFIX + this.bitmap);
    if (!offered) {
      // The parent's own checkpoint gone missing is a fallback (judgeBitmap says why);
      // any other name the server does not offer is a mistake to fix.
      const parent = hasParent ? decodeCheckpoint(since) : undefined;
      if (parent?.checkpoint !== (this.since ?? this.bitmap)) {
        const names = this.client.offered.filter((c) => c.startsWith(DIRTY_BITMAP_PREFIX)).map((c) => c.slice(DIRTY_BITMAP_PREFIX.length));
        throw new UserError(
          `export ${JSON.stringify(this.client.target.exportName)} at ${describeTarget(this.client.target)} offers no dirty bitmap named ${JSON.stringify(this.bitmap)} ` +
            `(${names.length ? `it offers: ${names.map((n) => JSON.stringify(n)).join(', ')}` : 'it offers none'}); check --bitmap, or serve it (qemu-nbd -B ${this.bitmap})`,
        );
      }
    }
    return { client: this.client, bitmap: { name: this.bitmap, offered, ...(this.since ? { since: this.since } : {}) } };
  }
}

export class NbdSource implements DiskSource {
  private closed?: Promise<void>;
  readonly notes: string[] = [];

  private constructor(
    readonly vm: string,
    private readonly list: NbdDisk[],
    private readonly rotation?: QmpRotation,
  ) {}

  static async open(opts: NbdSourceOptions): Promise<NbdSource> {
    if (opts.uris.length === 0) throw new UserError('give at least one NBD URI (nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT)');
    const targets = opts.uris.map(parseNbdUri);
    if (opts.qmp) {
      if (opts.bitmap || opts.checkpoint || opts.sinceCheckpoint) {
        throw new UserError('--qmp makes and rotates the bitmaps itself: leave out --bitmap, --checkpoint and --since-checkpoint');
      }
      const rotation = await QmpRotation.open(opts.qmp, targets, opts.log);
      const disks = rotation.disks.map((d, i) => new NbdDisk(`disk${i}`, d.capacity, targets[i]!.uri, d));
      return new NbdSource(opts.vm, disks, rotation);
    }
    if (opts.sinceCheckpoint && !(opts.bitmap && opts.checkpoint)) {
      throw new UserError('--since-checkpoint needs --bitmap (the exported bitmap) and --checkpoint (the checkpoint created with this backup)');
    }
    const disks: NbdDisk[] = [];
    try {
      for (const [i, t] of targets.entries()) {
        const served = await ServedExport.open(t, opts.bitmap, opts.checkpoint, opts.sinceCheckpoint);
        disks.push(new NbdDisk(`disk${i}`, served.nbd.size, t.uri, served));
        if (served.nbd.size === 0) throw new UserError(`${t.uri}: the export is empty`);
      }
    } catch (err) {
      await Promise.all(disks.map((d) => d.close()));
      throw err;
    }
    return new NbdSource(opts.vm, disks);
  }

  async disks(): Promise<SourceDisk[]> {
    return this.list;
  }

  nbdDisks(): NbdDisk[] {
    return this.list;
  }

  /**
   * After the snapshot is committed: with --qmp, drops the parents' bitmaps (this
   * snapshot's checkpoints now hold every later write). Without --qmp, nothing.
   */
  async committed(): Promise<void> {
    if (this.rotation) this.notes.push(...(await this.rotation.committed()));
  }

  /** Disconnects; with --qmp removes the temporary exports, and this run's bitmaps unless committed. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      await Promise.all(this.list.map((d) => d.close().catch(() => undefined)));
      if (this.rotation) this.notes.push(...(await this.rotation.close()));
    })();
    return this.closed;
  }
}
