import { randomBytes } from 'node:crypto';
import * as os from 'node:os';
import { BlobStore, isNotFound } from '../store/blob-store.js';
import { fenceExists } from './fence.js';

/**
 * Leases (`leases/<32 hex>`, plaintext JSON): who is working on the repository.
 * They replace the locks of format version 1: nothing ever waits on a lease
 * forever. A lease is refreshed (its `seq` grows) every third of the expiry; a
 * prune judges a lease expired only by watching it not change for the expiry
 * on its own monotonic clock, never by comparing the holder's timestamps with
 * its own (docs/FORMAT.md, "Leases"): a skewed clock costs nothing, a suspended
 * holder is fenced.
 */
export const LEASES_PREFIX = 'leases/';

export type LeaseOperation = 'backup' | 'prune' | 'forget' | 'other';

export interface LeaseInfo {
  version: 1;
  id: string;
  operation: LeaseOperation;
  vm: string | null;
  /** The snapshot a backup builds on (retention never forgets it while the lease lives). */
  parent: string | null;
  host: string;
  pid: number;
  created: string;
  refreshed: string;
  /** refreshed + expiry, by the holder's clock: informational (see above). */
  expires: string;
  /** Grows on every refresh: what a prune watches. */
  seq: number;
  /** The highest GC epoch published when the holder started (null: not read yet). */
  startEpoch: number | null;
  /** The highest GC epoch the holder has applied and acknowledged. */
  seenEpoch: number;
}

const DEFAULT_EXPIRY_MS = 30 * 60_000;

/** Lease expiry; PILOTLIGHT_LEASE_EXPIRY_MS overrides it (tests). */
export function leaseExpiryMs(): number {
  const v = Number(process.env.PILOTLIGHT_LEASE_EXPIRY_MS);
  return Number.isFinite(v) && v > 0 ? v : DEFAULT_EXPIRY_MS;
}

/**
 * The wall clock a lease writes. PILOTLIGHT_TEST_CLOCK_OFFSET_MS shifts it: the
 * tests run holders whose clocks are a day off to show nothing depends on it.
 */
export function leaseClock(): Date {
  const off = Number(process.env.PILOTLIGHT_TEST_CLOCK_OFFSET_MS) || 0;
  return new Date(Date.now() + off);
}

export function leaseName(id: string): string {
  return `${LEASES_PREFIX}${id}`;
}

export class Lease {
  private timer: NodeJS.Timeout | null = null;
  private released = false;
  private writing: Promise<void> = Promise.resolve();
  /** Set when a refresh found a fence naming this lease: the holder must stop and commit nothing. */
  fenced = false;
  /** Called after each refresh (the backup checks GC epochs there). */
  onRefresh: (() => Promise<void>) | null = null;

  private constructor(
    private readonly store: BlobStore,
    private info: LeaseInfo,
  ) {}

  get id(): string {
    return this.info.id;
  }

  get name(): string {
    return leaseName(this.info.id);
  }

  get snapshot(): Readonly<LeaseInfo> {
    return this.info;
  }

  static async acquire(
    store: BlobStore,
    operation: LeaseOperation,
    fields: { vm?: string | null; parent?: string | null } = {},
  ): Promise<Lease> {
    const now = leaseClock();
    const expiry = leaseExpiryMs();
    const info: LeaseInfo = {
      version: 1,
      id: randomBytes(16).toString('hex'),
      operation,
      vm: fields.vm ?? null,
      parent: fields.parent ?? null,
      host: os.hostname(),
      pid: process.pid,
      created: now.toISOString(),
      refreshed: now.toISOString(),
      expires: new Date(now.getTime() + expiry).toISOString(),
      seq: 0,
      startEpoch: null,
      seenEpoch: 0,
    };
    const lease = new Lease(store, info);
    await store.put(lease.name, Buffer.from(JSON.stringify(info)), { ifNotExists: true, kind: 'metadata' });
    lease.timer = setInterval(() => void lease.refresh().catch(() => {}), Math.max(50, Math.floor(expiry / 3)));
    lease.timer.unref();
    return lease;
  }

  /** Rewrites the lease with new fields (and a new seq). Never recreates a lease that a fence replaced. */
  async update(fields: Partial<Pick<LeaseInfo, 'parent' | 'startEpoch' | 'seenEpoch' | 'vm'>>): Promise<void> {
    const next = this.writing.then(async () => {
      if (this.released) return;
      if (await fenceExists(this.store, this.info.id)) {
        this.fenced = true;
        return;
      }
      const now = leaseClock();
      this.info = {
        ...this.info,
        ...fields,
        seq: this.info.seq + 1,
        refreshed: now.toISOString(),
        expires: new Date(now.getTime() + leaseExpiryMs()).toISOString(),
      };
      await this.store.put(this.name, Buffer.from(JSON.stringify(this.info)), { kind: 'metadata' });
    });
    this.writing = next.catch(() => {});
    return next;
  }

  async refresh(): Promise<void> {
    await this.update({});
    if (this.onRefresh && !this.released) await this.onRefresh();
  }

  /** Stops refreshing; the lease object stays (a crash, as tests simulate it). */
  stopRefreshing(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  async release(): Promise<void> {
    this.stopRefreshing();
    this.released = true;
    await this.writing;
    await this.store.delete(this.name);
  }
}

export interface ListedLease extends LeaseInfo {
  name: string;
  /** By the reader's clock: informational only (unlock uses it, prune does not). */
  expired: boolean;
}

/** Every lease in the repository (the retention engineer reads `vm` and `parent` from here). */
export async function listLeases(repo: { store: BlobStore }): Promise<ListedLease[]> {
  const store = repo.store;
  const names: string[] = [];
  for await (const b of store.list(LEASES_PREFIX)) names.push(b.name);
  const out: ListedLease[] = [];
  for (const name of names) {
    const info = await readLease(store, name);
    if (info) out.push({ ...info, name, expired: Date.now() > Date.parse(info.expires) });
  }
  return out;
}

/** A lease's content, or null when it is gone. */
export async function readLease(store: BlobStore, name: string): Promise<LeaseInfo | null> {
  try {
    const info = JSON.parse((await store.get(name)).toString('utf8')) as LeaseInfo;
    if (typeof info.id !== 'string') return null;
    return info;
  } catch (err) {
    if (isNotFound(err) || err instanceof SyntaxError) return null;
    throw err;
  }
}
