/**
 * The vSphere source: one backup run of one VM.
 *
 * open(): log in, find the VM (by name or moref), enable Changed Block Tracking when it
 * is off (ReconfigVM_Task + a snapshot create/remove cycle so it takes effect), create
 * the backup snapshot, read each VirtualDisk of the snapshot (by device key) with its
 * changeId, start the VDDK worker and open every disk read-only through it.
 * close(): closes the disks, disconnects, ends VDDK access, removes the snapshot and
 * logs out, on every path (success, failure, Ctrl-C), and is idempotent.
 */
import type { DiskSource, ExtentPlan, SourceDisk } from '../disk-source.js';
import { queryAllChangedAreas, toExtents } from './cbt.js';
import { VimClient, VimFault, moref, parseMoRef, type MoRef } from './client.js';
import type { ConnectParams } from './vddk-binding.js';
import { VddkWorker } from './vddk-client.js';
import { child, childText, children, int64, safeNumber, text, type XNode } from './xml.js';

export interface VsphereSourceOptions {
  server: string;
  username: string;
  password: string;
  thumbprint?: string;
  insecure?: boolean;
  /** VM name (exactly one VM must have it) ... */
  vm?: string;
  /** ... or its managed object id, `vm-42`. */
  vmMoref?: string;
  /** VDDK transport modes, `nbdssl:nbd` (default), `hotadd:nbdssl`, `san:nbd` ... */
  transport?: string;
  quiesce?: boolean;
  /** VDDK lib64 directory. */
  vddkLibDir: string;
  /** Extra environment for the VDDK worker (tests configure the fake library with it). */
  vddkEnv?: NodeJS.ProcessEnv;
  /** Messages for the user ("CBT was off: enabled it"). */
  log?: (message: string) => void;
  /** Enable CBT when it is off (default true). */
  enableCbt?: boolean;
}

export interface VsphereDiskInfo {
  name: string;
  deviceKey: number;
  fileName: string;
  capacity: bigint;
  changeId?: string;
}

const SCSI = /SCSIController$|LsiLogic|BusLogic/;

/** `scsi0:1`, `ide1:0`, `sata0:2`, `nvme0:0`; `disk-KEY` when the controller is unknown. */
function diskName(disk: XNode, controllers: Map<number, XNode>): string {
  const key = childText(disk, 'key');
  const ctrlKey = childText(disk, 'controllerKey');
  const unit = childText(disk, 'unitNumber');
  const ctrl = ctrlKey !== undefined ? controllers.get(Number(ctrlKey)) : undefined;
  const bus = childText(ctrl, 'busNumber');
  const t = ctrl?.xsiType ?? '';
  const kind = SCSI.test(t) ? 'scsi' : /IDE/.test(t) ? 'ide' : /AHCI|SATA/.test(t) ? 'sata' : /NVME/i.test(t) ? 'nvme' : '';
  if (!kind || bus === undefined || unit === undefined) return `disk-${key}`;
  return `${kind}${bus}:${unit}`;
}

/** Every VirtualDisk in a device list, with capacity (exact) and changeId. */
export function virtualDisks(devices: XNode | undefined): VsphereDiskInfo[] {
  const all = devices?.children ?? [];
  const controllers = new Map<number, XNode>();
  for (const d of all) if (d.xsiType !== 'VirtualDisk') controllers.set(Number(childText(d, 'key')), d);
  return all
    .filter((d) => d.xsiType === 'VirtualDisk')
    .map((d) => {
      const backing = child(d, 'backing');
      const bytes = childText(d, 'capacityInBytes');
      const capacity = bytes !== undefined && bytes !== '0' ? int64(bytes, 'capacityInBytes') : int64(childText(d, 'capacityInKB'), 'capacityInKB') * 1024n;
      return {
        name: diskName(d, controllers),
        deviceKey: safeNumber(childText(d, 'key'), 'device key'),
        fileName: childText(backing, 'fileName') ?? '',
        capacity,
        changeId: childText(backing, 'changeId') || undefined,
      };
    });
}

/** Flattens a VirtualMachineSnapshotTree list. */
function snapshotTree(nodes: XNode[]): Array<{ name: string; ref: string; created: string }> {
  const out: Array<{ name: string; ref: string; created: string }> = [];
  for (const n of nodes) {
    out.push({ name: childText(n, 'name') ?? '', ref: childText(n, 'snapshot') ?? '', created: childText(n, 'createTime') ?? '' });
    out.push(...snapshotTree(children(n, 'childSnapshotList')));
  }
  return out;
}

export class VsphereDisk implements SourceDisk {
  readonly name: string;
  readonly capacity: number;
  readonly changeToken?: string;
  /** QueryChangedDiskAreas calls made by the last extents(). */
  lastQueryCalls = 0;

  constructor(
    private readonly src: VsphereSource,
    readonly info: VsphereDiskInfo,
    readonly handle: number,
  ) {
    this.name = info.name;
    this.capacity = safeNumber(info.capacity, `capacity of ${info.name}`);
    if (info.changeId) this.changeToken = info.changeId;
  }

  async extents(since: string | undefined): Promise<ExtentPlan> {
    if (!this.info.changeId) {
      try {
        const blocks = await this.src.worker!.allocated(this.handle, this.info.capacity);
        return {
          kind: 'allocated',
          extents: toExtents(blocks),
          reason: 'the disk has no change id (change tracking is not active on it): allocated blocks from VDDK QueryAllocatedBlocks',
        };
      } catch (err) {
        return {
          kind: 'allocated',
          extents: this.capacity ? [{ offset: 0, length: this.capacity }] : [],
          reason: `full read: the disk has no change id (change tracking is not active on it) and QueryAllocatedBlocks failed (${(err as Error).message})`,
        };
      }
    }
    if (since !== undefined && since !== '*') {
      // A change id is `<CBT epoch uuid>/<sequence>`; another epoch means CBT was reset
      // (disabled/enabled, VM moved or restored) and the old id must not be trusted.
      const epoch = (id: string) => (id.includes('/') ? id.slice(0, id.lastIndexOf('/')) : id);
      if (epoch(since) !== epoch(this.info.changeId)) {
        const all = await this.query('*');
        return {
          kind: 'allocated',
          extents: toExtents(all.areas),
          reason: `change id refused: the stored change id ${since} is from another change-tracking epoch than the disk's ${this.info.changeId} (CBT was reset); read all allocated areas ("*") instead, deduplicated against the parent`,
        };
      }
      try {
        const r = await this.query(since);
        return { kind: 'changed', extents: toExtents(r.areas), reason: `changed areas since change id ${since} (${r.calls} QueryChangedDiskAreas calls)` };
      } catch (err) {
        if (!(err instanceof VimFault)) throw err;
        const all = await this.query('*');
        return {
          kind: 'allocated',
          extents: toExtents(all.areas),
          reason: `change id refused: ${err.faultType}: ${err.faultString}; read all allocated areas ("*") instead, deduplicated against the parent`,
        };
      }
    }
    const all = await this.query('*');
    return {
      kind: 'allocated',
      extents: toExtents(all.areas),
      reason: since === undefined ? 'no earlier change id: all allocated areas ("*")' : 'all allocated areas ("*")',
    };
  }

  private async query(changeId: string) {
    const r = await queryAllChangedAreas(this.info.capacity, (start) =>
      this.src.client.queryChangedDiskAreas(this.src.vmRef, this.src.snapshotRef!, this.info.deviceKey, start, changeId),
    );
    this.lastQueryCalls = r.calls;
    return r;
  }

  async read(buf: Uint8Array, offset: number, length: number): Promise<void> {
    if (offset < 0 || length < 0 || offset + length > this.capacity) {
      throw new RangeError(`read of ${length} bytes at ${offset} is outside ${this.name} (${this.capacity} bytes)`);
    }
    const data = await this.src.worker!.read(this.handle, offset, length);
    if (data.byteLength !== length) throw new Error(`short read from ${this.name}: ${data.byteLength} of ${length} bytes at ${offset}`);
    buf.set(data, 0);
  }
}

export class VsphereSource implements DiskSource {
  vm = '';
  vmRef!: MoRef;
  snapshotRef?: MoRef;
  /** When the backup's vSphere snapshot was taken. */
  consistencyTime?: Date;
  worker?: VddkWorker;
  /** What the run did that a user should know ("enabled CBT"). */
  readonly notes: string[] = [];
  cbtWasEnabled = false;
  private conn?: number;
  private diskList: VsphereDisk[] = [];
  private closed?: Promise<void>;
  private accessPrepared = false;

  private constructor(
    readonly client: VimClient,
    private readonly opts: VsphereSourceOptions,
  ) {}

  /** Opens the source; on any failure, whatever was created (snapshot, session) is released. */
  static async open(opts: VsphereSourceOptions): Promise<VsphereSource> {
    if (!opts.vm && !opts.vmMoref) throw new Error('give the VM with --vm NAME or --vm-moref vm-N');
    const client = await VimClient.connect({ server: opts.server, thumbprint: opts.thumbprint, insecure: opts.insecure });
    const src = new VsphereSource(client, opts);
    try {
      await client.login(opts.username, opts.password);
      await src.prepare();
      return src;
    } catch (err) {
      await src.close().catch((e: Error) => src.say(`cleanup after a failed start also failed: ${e.message}`));
      throw err;
    }
  }

  private say(msg: string): void {
    this.notes.push(msg);
    this.opts.log?.(msg);
  }

  private async findVm(): Promise<void> {
    if (this.opts.vmMoref) {
      this.vmRef = moref('VirtualMachine', this.opts.vmMoref);
      const props = await this.client.properties(this.vmRef, ['name']);
      this.vm = text(props.get('name')) ?? this.opts.vmMoref;
      if (this.opts.vm && this.opts.vm !== this.vm) throw new Error(`--vm-moref ${this.opts.vmMoref} is "${this.vm}", not "${this.opts.vm}"`);
      return;
    }
    const all = await this.client.list('VirtualMachine', ['name']);
    const found = all.filter((o) => text(o.props.get('name')) === this.opts.vm);
    if (found.length === 0) throw new Error(`no VM named "${this.opts.vm}" on ${this.client.url.host} (names are case-sensitive)`);
    if (found.length > 1) {
      throw new Error(`${found.length} VMs are named "${this.opts.vm}" (${found.map((f) => f.obj.value).join(', ')}): choose one with --vm-moref`);
    }
    this.vmRef = found[0].obj;
    this.vm = this.opts.vm!;
  }

  private async prepare(): Promise<void> {
    await this.findVm();
    const props = await this.client.properties(this.vmRef, ['config.changeTrackingEnabled', 'config.template', 'snapshot']);
    if (text(props.get('config.template')) === 'true') throw new Error(`${this.vm} is a template, not a VM`);
    for (const old of snapshotTree(children(props.get('snapshot'), 'rootSnapshotList'))) {
      if (old.name.startsWith('pilotlight ')) {
        this.say(
          `${this.vm} still has snapshot "${old.name}" (${old.ref}, created ${old.created}) from an earlier pilotlight run that did not end cleanly: ` +
            'remove it in vSphere (a left-over snapshot grows and slows the VM down)',
        );
      }
    }
    const cbt = text(props.get('config.changeTrackingEnabled')) === 'true';
    if (!cbt) {
      if (this.opts.enableCbt === false) {
        this.say(`Changed Block Tracking is off on ${this.vm}: every disk is read in full`);
      } else {
        await this.client.waitForTask(await this.client.reconfigChangeTracking(this.vmRef, true), 'ReconfigVM_Task (enable Changed Block Tracking)');
        // CBT takes effect after a stun/unstun cycle: a snapshot create + remove.
        const t = await this.client.waitForTask(
          await this.client.createSnapshot(this.vmRef, 'pilotlight-enable-cbt', 'pilotlight: activates Changed Block Tracking', false),
          'CreateSnapshot_Task (CBT activation)',
        );
        const s = parseMoRef(t.result);
        if (s) await this.client.waitForTask(await this.client.removeSnapshot(s), 'RemoveSnapshot_Task (CBT activation)');
        this.cbtWasEnabled = true;
        this.say(`Changed Block Tracking was off on ${this.vm}: enabled it (ReconfigVM + snapshot cycle); this run reads all allocated areas`);
      }
    }

    const when = new Date().toISOString();
    const task = await this.client.createSnapshot(this.vmRef, `pilotlight ${when}`, 'pilotlight backup; removed when the backup ends', this.opts.quiesce ?? false);
    const result = await this.client.waitForTask(task, `CreateSnapshot_Task${this.opts.quiesce ? ' (quiesced)' : ''}`);
    this.snapshotRef = parseMoRef(result.result);
    if (!this.snapshotRef?.value) throw new Error('CreateSnapshot_Task succeeded but returned no snapshot');
    // The consistency point: the snapshot's createTime as vSphere recorded it (the time
    // before the call when vSphere does not say).
    const tree = snapshotTree(children((await this.client.properties(this.vmRef, ['snapshot'])).get('snapshot'), 'rootSnapshotList'));
    const created = Date.parse(tree.find((n) => n.ref === this.snapshotRef!.value)?.created ?? '');
    this.consistencyTime = new Date(Number.isFinite(created) ? created : Date.parse(when));

    const devices = (await this.client.properties(this.snapshotRef, ['config.hardware.device'])).get('config.hardware.device');
    const disks = virtualDisks(devices);
    if (!disks.length) throw new Error(`${this.vm} has no virtual disks`);

    const params = this.connectParams();
    this.worker = await VddkWorker.start({ libDir: this.opts.vddkLibDir, env: this.opts.vddkEnv });
    await this.worker.prepareForAccess(params, 'pilotlight');
    this.accessPrepared = true;
    this.conn = await this.worker.connect(params, this.snapshotRef.value, this.opts.transport ?? 'nbdssl:nbd');
    for (const d of disks) {
      const opened = await this.worker.open(this.conn, d.fileName);
      const disk = new VsphereDisk(this, d, opened.handle);
      this.diskList.push(disk);
      if (opened.capacity !== d.capacity) {
        throw new Error(`${d.name} (${d.fileName}): vSphere says ${d.capacity} bytes, VDDK says ${opened.capacity}`);
      }
    }
  }

  private connectParams(): ConnectParams {
    const u = this.client.url;
    return {
      vmxSpec: `moref=${this.vmRef.value}`,
      serverName: u.hostname,
      thumbprint: this.client.thumbprint,
      userName: this.opts.username,
      password: this.opts.password,
      port: u.port ? Number(u.port) : 0,
    };
  }

  async disks(): Promise<SourceDisk[]> {
    return this.diskList;
  }

  /** The disks with their vSphere details. */
  vsphereDisks(): VsphereDisk[] {
    return this.diskList;
  }

  close(): Promise<void> {
    this.closed ??= this.doClose();
    return this.closed;
  }

  private async doClose(): Promise<void> {
    const errors: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        errors.push(`${what}: ${(err as Error).message}`);
      }
    };
    if (this.worker?.running) {
      const w = this.worker;
      for (const d of this.diskList) await attempt(`closing ${d.name}`, () => w.close(d.handle));
      if (this.conn !== undefined) await attempt('VDDK disconnect', () => w.disconnect(this.conn!));
      if (this.accessPrepared) await attempt('VDDK EndAccess', () => w.endAccess(this.connectParams(), 'pilotlight'));
      await attempt('VDDK exit', () => w.exit());
      if (errors.length) await w.kill();
    } else if (this.worker) {
      // It crashed: VDDK's handles died with it; say so, and still remove the snapshot.
      this.say(`${this.worker.exitReason ?? 'the VDDK worker process had exited'}; VDDK handles could not be closed cleanly`);
    }
    if (this.snapshotRef) {
      const s = this.snapshotRef;
      await attempt(`removing snapshot ${s.value}`, async () => this.client.waitForTask(await this.client.removeSnapshot(s), 'RemoveSnapshot_Task'));
    }
    await attempt('logout', () => this.client.logout());
    if (errors.length) {
      throw new Error(
        `cleanup of the vSphere backup of ${this.vm} was incomplete: ${errors.join('; ')}` +
          (this.snapshotRef && errors.some((e) => e.startsWith('removing snapshot')) ? `. Remove snapshot ${this.snapshotRef.value} of ${this.vm} by hand.` : ''),
      );
    }
  }
}

