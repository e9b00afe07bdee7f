/**
 * Per-VM leases (docs/FORMAT.md "VM leases"): at most one backup of a VM at a time,
 * across processes and hosts sharing a repository. Built on the one atomic primitive
 * every store has, the conditional put (`ifNotExists`):
 *
 *   service/vm-leases/<vm tag>/<generation, 12 digits>   plaintext JSON LeaseInfo
 *
 * The VM is named by its tag (the keyed hash that names its snapshot prefix, so the
 * bucket does not show VM names); the caller computes it (SnapshotCatalog.vmTag).
 *
 * The lease of a VM is its highest generation. It is free when that object says
 * `released`, or its `expires` lies more than CLOCK_SKEW_MS in the past (a holder that
 * crashed). To take it, a process creates generation max+1 with ifNotExists: of
 * several contenders exactly one succeeds. It then lists again and backs off if a
 * higher generation exists (a contender that acted on a stale listing). The holder
 * renews by rewriting its own object (only the holder writes it) every ttl/3; a
 * renewal that finds a higher generation means the lease was lost (the holder was
 * paused past its expiry): the holder's `signal` aborts, its backup stops uncommitted.
 * Release rewrites the object with `released: true` (the highest generation is never
 * deleted, so generation numbers only grow); the next holder deletes the generations
 * below its own.
 */
import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import type { BlobStore } from '../store/blob-store.js';

export const VM_LEASE_PREFIX = 'service/vm-leases/';
/** How far apart host clocks may be (the hosts must run NTP). */
export const CLOCK_SKEW_MS = 30_000;

export interface LeaseInfo {
  /** The VM's tag (32 hex), never its name. */
  vm: string;
  generation: number;
  owner: string;
  host: string;
  pid: number;
  operation: string;
  acquired: string;
  expires: string;
  released?: boolean;
}

export interface LeaseOptions {
  /** Lease lifetime without renewal (default 120 s); renewed every ttl/3. */
  ttlMs?: number;
  operation?: string;
  /** Process/host identity (default host:pid:random). */
  owner?: string;
}

export class LeaseBusyError extends Error {
  constructor(readonly holder: LeaseInfo | null, vm: string) {
    super(
      holder
        ? `VM ${vm} is being backed up by ${holder.host} pid ${holder.pid} (${holder.operation}, lease until ${holder.expires})`
        : `VM ${vm}: another process took the lease first`,
    );
    this.name = 'LeaseBusyError';
  }
}

function prefixOf(tag: string): string {
  if (!/^[0-9a-f]{32}$/.test(tag)) throw new Error(`a VM lease is named by a VM tag (32 hex digits), got ${JSON.stringify(tag)}`);
  return `${VM_LEASE_PREFIX}${tag}/`;
}

async function generations(store: BlobStore, vm: string): Promise<number[]> {
  const out: number[] = [];
  const prefix = prefixOf(vm);
  for await (const b of store.list(prefix)) {
    const g = Number(b.name.slice(prefix.length));
    if (Number.isInteger(g) && g > 0) out.push(g);
  }
  return out.sort((a, b) => a - b);
}

async function readLease(store: BlobStore, vm: string, gen: number): Promise<LeaseInfo | null> {
  try {
    return JSON.parse((await store.get(leaseName(vm, gen))).toString('utf8')) as LeaseInfo;
  } catch {
    return null;
  }
}

export function leaseName(vm: string, gen: number): string {
  return `${prefixOf(vm)}${String(gen).padStart(12, '0')}`;
}

/** The current holder of a VM's lease, or null when it is free. */
export async function currentLease(store: BlobStore, vm: string, now = Date.now()): Promise<LeaseInfo | null> {
  const gens = await generations(store, vm);
  const top = gens[gens.length - 1];
  if (top === undefined) return null;
  const info = await readLease(store, vm, top);
  if (!info || info.released || Date.parse(info.expires) + CLOCK_SKEW_MS < now) return null;
  return info;
}

export class VmLease {
  private timer: NodeJS.Timeout | null = null;
  private readonly ac = new AbortController();
  private released = false;
  private renewing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly store: BlobStore,
    private info: LeaseInfo,
    private readonly ttlMs: number,
  ) {}

  /** Aborts when the lease is lost (another holder took it after it expired). */
  get signal(): AbortSignal {
    return this.ac.signal;
  }

  get generation(): number {
    return this.info.generation;
  }

  /** Takes the lease of a VM or throws LeaseBusyError. */
  /** `vm` is the VM's tag; `label` (the VM's name) only goes into error messages. */
  static async acquire(store: BlobStore, vm: string, options: LeaseOptions & { label?: string } = {}): Promise<VmLease> {
    const label = options.label ?? vm;
    const ttlMs = options.ttlMs ?? 120_000;
    const gens = await generations(store, vm);
    const top = gens[gens.length - 1] ?? 0;
    if (top > 0) {
      const holder = await readLease(store, vm, top);
      const free = holder === null ? false : holder.released === true || Date.parse(holder.expires) + CLOCK_SKEW_MS < Date.now();
      // an unreadable top generation is being written (or damaged): not free until it expires by listing age
      if (!free) throw new LeaseBusyError(holder, label);
    }
    const now = new Date();
    const info: LeaseInfo = {
      vm,
      generation: top + 1,
      owner: options.owner ?? `${os.hostname()}:${process.pid}:${randomBytes(4).toString('hex')}`,
      host: os.hostname(),
      pid: process.pid,
      operation: options.operation ?? 'backup',
      acquired: now.toISOString(),
      expires: new Date(now.getTime() + ttlMs).toISOString(),
    };
    try {
      await store.put(leaseName(vm, info.generation), Buffer.from(JSON.stringify(info)), { ifNotExists: true, kind: 'metadata' });
    } catch (err) {
      if ((err as { code?: string }).code === 'BLOB_EXISTS') throw new LeaseBusyError(await readLease(store, vm, info.generation), label);
      throw err;
    }
    const after = await generations(store, vm);
    const higher = after.filter((g) => g > info.generation);
    if (higher.length) {
      await store.delete(leaseName(vm, info.generation)).catch(() => {});
      throw new LeaseBusyError(await readLease(store, vm, higher[higher.length - 1]!), label);
    }
    for (const g of after) if (g < info.generation) await store.delete(leaseName(vm, g)).catch(() => {});
    const lease = new VmLease(store, info, ttlMs);
    lease.timer = setInterval(() => {
      lease.renewing = lease.renewing.then(() => lease.renew()).catch(() => {});
    }, Math.max(200, Math.floor(ttlMs / 3)));
    lease.timer.unref();
    return lease;
  }

  /** Extends the lease; aborts `signal` when another holder took it. */
  async renew(): Promise<void> {
    if (this.released) return;
    const gens = await generations(this.store, this.info.vm);
    if (gens.some((g) => g > this.info.generation)) {
      this.stop();
      this.ac.abort(new Error('the VM lease was taken over (it expired while held)'));
      return;
    }
    this.info = { ...this.info, expires: new Date(Date.now() + this.ttlMs).toISOString() };
    await this.store.put(leaseName(this.info.vm, this.info.generation), Buffer.from(JSON.stringify(this.info)), { kind: 'metadata' });
  }

  private stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.stop();
    this.released = true;
    await this.renewing;
    if (this.ac.signal.aborted) return;
    this.info = { ...this.info, released: true, expires: new Date().toISOString() };
    await this.store.put(leaseName(this.info.vm, this.info.generation), Buffer.from(JSON.stringify(this.info)), { kind: 'metadata' });
  }
}
