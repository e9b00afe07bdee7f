/**
 * Bitmap rotation through QMP (qemu or qemu-storage-daemon), so that no write falls
 * between two backups:
 *
 * 1. open: ONE `transaction` adds a new bitmap to every disk's node
 *    (`pilotlight-<time>-<random>`, granularity 64 KiB, persistent on qcow2): from this
 *    instant every write is recorded in it; it is the checkpoint of this snapshot.
 * 2. per disk: the parent's bitmap, when QEMU still has it intact, is disabled (QEMU
 *    exports only a frozen bitmap read-only) and a temporary read-only NBD export of
 *    the node (`block-export-add`) carries it; the backup reads its dirty extents and
 *    the data through that export. Writes between 1 and 2 are in both bitmaps.
 * 3. after the commit: the parent's bitmap is removed (its writes are in the snapshot,
 *    later ones in the new bitmap). On failure, one transaction merges the new bitmap
 *    into the parent's, enables it again and removes the new one: the next attempt
 *    still has every write since the parent snapshot.
 *
 * A write landing while the backup reads is in the new bitmap: read now or not, the
 * next backup reads it again.
 * The data is read from the live node: point-in-time consistency across the disk needs
 * the writer paused, or a libvirt pull-mode backup (which exports a frozen view).
 *
 * The URI path names the node: an export id (its node is used) or a node name.
 */
import { randomBytes } from 'node:crypto';
import { NbdClient } from '../../nbd/client.js';
import { BASE_ALLOCATION } from '../../nbd/protocol.js';
import type { NbdTarget } from '../../nbd/uri.js';
import { UserError } from '../../repo/errors.js';
import { type BitmapState, type CheckpointToken, decodeCheckpoint } from './checkpoint.js';
import { DIRTY_BITMAP_PREFIX, type DiskConnection } from './nbd-disk.js';
import { QmpClient, QmpError } from './qmp.js';

export const BITMAP_PREFIX = 'pilotlight-';
export const BITMAP_GRANULARITY = 65536;

interface QmpBitmap {
  name: string;
  granularity: number;
  recording: boolean;
  busy: boolean;
  persistent: boolean;
  inconsistent?: boolean;
}

interface QmpNode {
  'node-name': string;
  drv: string;
  image: { 'virtual-size': number };
  'dirty-bitmaps'?: QmpBitmap[];
}

class RotatedDisk implements DiskConnection {
  readonly checkpoint: CheckpointToken;
  exportId?: string;
  /** The parent's bitmap read through the export (removed after the commit). */
  parentBitmap?: string;
  /** The parent's bitmap was disabled by this run (re-enabled, with this run's writes merged in, if nothing is committed). */
  frozeParent = false;
  private client?: NbdClient;

  constructor(
    private readonly rot: QmpRotation,
    readonly target: NbdTarget,
    readonly node: string,
    readonly capacity: number,
    readonly newBitmap: string,
  ) {
    this.checkpoint = { checkpoint: newBitmap, granularity: BITMAP_GRANULARITY, node };
  }

  async connect(since: string | undefined, hasParent: boolean): Promise<{ client: NbdClient; bitmap?: BitmapState }> {
    // asked again (a re-plan without a parent): the same export, no bitmap
    if (this.client) return { client: this.client };
    const parent = hasParent ? decodeCheckpoint(since) : undefined;
    const node = await this.rot.node(this.node);
    const found = parent ? node['dirty-bitmaps']?.find((b) => b.name === parent.checkpoint) : undefined;
    const usable = found && !found.inconsistent && !found.busy && found.recording;
    if (usable) {
      // QEMU exports only a disabled bitmap read-only: freeze it. The new bitmap has
      // been recording since open(), so nothing written from here on is missed.
      await this.rot.qmp.execute('transaction', { actions: [{ type: 'block-dirty-bitmap-disable', data: { node: this.node, name: found.name } }] });
      this.frozeParent = true;
    }
    this.exportId = `${BITMAP_PREFIX}export-${randomBytes(6).toString('hex')}`;
    await this.rot.qmp.execute('block-export-add', {
      type: 'nbd',
      id: this.exportId,
      'node-name': this.node,
      name: this.exportId,
      writable: false,
      ...(usable ? { bitmaps: [found.name] } : {}),
    });
    if (found) this.parentBitmap = found.name;
    const stale = (node['dirty-bitmaps'] ?? []).filter((b) => b.name.startsWith(BITMAP_PREFIX) && b.name !== found?.name && b.name !== this.newBitmap);
    if (stale.length) {
      this.rot.note(
        `${this.node} has pilotlight bitmaps that are not this backup's parent checkpoint: ${stale.map((b) => b.name).join(', ')}; ` +
          'they cost write overhead; remove them (QMP block-dirty-bitmap-remove) unless another repository backs up this disk',
      );
    }
    const t: NbdTarget = { ...this.target, exportName: this.exportId };
    this.client = await NbdClient.connect(t, { metaContexts: [BASE_ALLOCATION, ...(usable ? [DIRTY_BITMAP_PREFIX + found.name] : [])] });
    if (!parent) return { client: this.client, bitmap: { name: this.newBitmap, offered: false } };
    return {
      client: this.client,
      bitmap: {
        name: parent.checkpoint,
        offered: !!usable && this.client.contexts.has(DIRTY_BITMAP_PREFIX + found.name),
        granularity: found?.granularity,
        inconsistent: found?.inconsistent,
        busy: found ? found.busy || !found.recording : undefined,
        missingOnNode: !found,
      },
    };
  }

  async disconnect(): Promise<void> {
    const c = this.client;
    this.client = undefined;
    await c?.disconnect();
  }
}

export class QmpRotation {
  readonly disks: RotatedDisk[] = [];
  private isCommitted = false;
  private readonly pendingNotes: string[] = [];

  note(message: string): void {
    this.pendingNotes.push(message);
  }

  private constructor(readonly qmp: QmpClient) {}

  static async open(socket: string, targets: NbdTarget[], log?: (m: string) => void): Promise<QmpRotation> {
    const qmp = await QmpClient.connect(socket);
    const rot = new QmpRotation(qmp);
    try {
      const nodes = await rot.nodes();
      const exports = await qmp.execute<{ id: string; 'node-name': string }[]>('query-block-exports');
      const stamp = Date.now().toString(36);
      const actions: unknown[] = [];
      for (const t of targets) {
        const nodeName = exports.find((e) => e.id === t.exportName)?.['node-name'] ?? t.exportName;
        const node = nodes.find((n) => n['node-name'] === nodeName);
        if (!node) {
          throw new UserError(
            `QMP at ${socket} has no export id or block node named ${JSON.stringify(t.exportName)} (nodes: ${nodes.map((n) => n['node-name']).filter((n) => !n.startsWith('#')).join(', ') || 'none'}); with --qmp the URI path names the node`,
          );
        }
        if (rot.disks.some((d) => d.node === nodeName)) throw new UserError(`${t.uri}: node ${nodeName} is given twice`);
        const name = `${BITMAP_PREFIX}${stamp}-${randomBytes(4).toString('hex')}`;
        rot.disks.push(new RotatedDisk(rot, t, nodeName, node.image['virtual-size'], name));
        actions.push({
          type: 'block-dirty-bitmap-add',
          data: { node: nodeName, name, granularity: BITMAP_GRANULARITY, persistent: node.drv === 'qcow2' },
        });
        if (node.drv !== 'qcow2') log?.(`${nodeName} is ${node.drv}, not qcow2: its bitmap lives in memory only and a QEMU restart loses it (the next backup then reads all allocated extents)`);
      }
      await qmp.execute('transaction', { actions });
      return rot;
    } catch (err) {
      qmp.close();
      if (err instanceof QmpError) throw new UserError(`${socket}: ${err.message}`);
      throw err;
    }
  }

  async nodes(): Promise<QmpNode[]> {
    return this.qmp.execute<QmpNode[]>('query-named-block-nodes', { flat: true });
  }

  async node(name: string): Promise<QmpNode> {
    const n = (await this.nodes()).find((x) => x['node-name'] === name);
    if (!n) throw new Error(`block node ${name} disappeared during the backup`);
    return n;
  }

  /** The snapshot is committed: remove the parents' pilotlight bitmaps. Returns notes. */
  async committed(): Promise<string[]> {
    this.isCommitted = true;
    const notes = this.pendingNotes.splice(0);
    notes.push(...(await this.dropExports())); // an exported bitmap cannot be removed
    for (const d of this.disks) {
      if (!d.parentBitmap) continue;
      if (!d.parentBitmap.startsWith(BITMAP_PREFIX)) {
        // not ours: give it back whole (the writes since it was frozen) and recording
        if (d.frozeParent) {
          const actions = [
            { type: 'block-dirty-bitmap-merge', data: { node: d.node, target: d.parentBitmap, bitmaps: [d.newBitmap] } },
            { type: 'block-dirty-bitmap-enable', data: { node: d.node, name: d.parentBitmap } },
          ];
          await this.qmp.execute('transaction', { actions }).catch((err: Error) => notes.push(`could not re-enable bitmap ${d.parentBitmap} on ${d.node}: ${err.message}`));
        }
        notes.push(`bitmap ${d.parentBitmap} on ${d.node} was not made by pilotlight: left in place`);
        continue;
      }
      try {
        await this.qmp.execute('block-dirty-bitmap-remove', { node: d.node, name: d.parentBitmap });
      } catch (err) {
        notes.push(`could not remove the old bitmap ${d.parentBitmap} on ${d.node}: ${(err as Error).message}`);
      }
    }
    return notes;
  }

  /** Disconnects and deletes the temporary exports, waiting until QEMU has let them go. */
  private async dropExports(): Promise<string[]> {
    const notes: string[] = [];
    for (const d of this.disks) {
      await d.disconnect().catch(() => undefined);
      const id = d.exportId;
      if (!id) continue;
      d.exportId = undefined;
      try {
        await this.qmp.execute('block-export-del', { id, mode: 'hard' });
        for (let i = 0; i < 100; i++) {
          const list = await this.qmp.execute<{ id: string }[]>('query-block-exports');
          if (!list.some((e) => e.id === id)) break;
          await new Promise((r) => setTimeout(r, 50));
        }
      } catch (err) {
        notes.push(`removing export ${id}: ${(err as Error).message}`);
      }
    }
    return notes;
  }

  /** Removes the temporary exports, and this run's bitmaps when nothing was committed. Returns notes. */
  async close(): Promise<string[]> {
    const notes: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        notes.push(`${what}: ${(err as Error).message}`);
      }
    };
    notes.push(...(await this.dropExports()));
    for (const d of this.disks) {
      if (this.isCommitted) continue;
      const remove = { type: 'block-dirty-bitmap-remove', data: { node: d.node, name: d.newBitmap } };
      if (d.frozeParent) {
        // give the parent's bitmap back every write since it was frozen, and let it record again
        const actions = [
          { type: 'block-dirty-bitmap-merge', data: { node: d.node, target: d.parentBitmap, bitmaps: [d.newBitmap] } },
          { type: 'block-dirty-bitmap-enable', data: { node: d.node, name: d.parentBitmap } },
          remove,
        ];
        await attempt(`restoring bitmap ${d.parentBitmap}`, () => this.qmp.execute('transaction', { actions }));
      } else await attempt(`removing bitmap ${d.newBitmap}`, () => this.qmp.execute('transaction', { actions: [remove] }));
    }
    this.qmp.close();
    return notes;
  }
}
