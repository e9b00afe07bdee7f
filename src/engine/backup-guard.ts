import { UserError } from '../repo/errors.js';
import { fenceExists } from '../repo/fence.js';
import { packObjectName } from '../repo/format.js';
import { EpochIntent, epochsAfter, listEpochs, readIntent } from '../repo/gc-epoch.js';
import { IndexEntry } from '../repo/index-file.js';
import { Lease } from '../repo/lease.js';
import { RepoWriter, ReuseFilter } from '../repo/repo-writer.js';
import { Repository } from '../repo/repository.js';
import { SnapshotCatalog } from '../snapshot/snapshot-record.js';
import { ReuseLog } from './reuse-log.js';

export class FencedError extends UserError {
  constructor(what: string) {
    super(`${what}: a prune or 'pilotlight unlock' fenced this backup's lease (it was suspended or unreachable longer than the lease expiry); nothing was committed, run the backup again`, 6);
  }
}

/**
 * The backup's side of the GC protocol (docs/FORMAT.md, "The prune protocol"):
 *
 * - its lease is written before the run looks anything up;
 * - it reads the GC epochs, records the newest as its start, and does not reuse
 *   blobs from packs that an unfinished epoch condemned;
 * - every pack it reuses from is checked once (HEAD): a pack that vanished is not
 *   deduplicated against (issue 10: a lifecycle rule, a partial copy);
 * - on each lease refresh and before its commit it applies epochs published
 *   since: blobs it already reused from a newly condemned pack are read back
 *   (verified against their ids) and stored again, its parent must still exist,
 *   then it acknowledges the epoch in its lease;
 * - it checks its fence before and after putting its record.
 */
export class BackupGuard implements ReuseFilter {
  private seen = 0;
  private readonly condemned = new Set<string>();
  private readonly packChecked = new Map<string, boolean>();
  private readonly log = new ReuseLog();
  private writer: RepoWriter | null = null;
  private parent: string | null = null;
  private chain: Promise<void> = Promise.resolve();
  private committing = false;
  private failure: Error | null = null;
  /** Blobs stored again because an epoch condemned the pack they were reused from. */
  restored = 0;

  private constructor(
    private readonly repo: Repository,
    readonly lease: Lease,
    private readonly vm: string,
  ) {}

  /** Writes the lease: call before the run reads the index or any snapshot. */
  static async start(repo: Repository, vm: string): Promise<BackupGuard> {
    const lease = await Lease.acquire(repo.store, 'backup', { vm });
    const g = new BackupGuard(repo, lease, vm);
    lease.onRefresh = () => {
      if (g.committing) return Promise.resolve();
      return g.checkEpochs().catch((err) => {
        g.failure ??= err as Error;
      });
    };
    return g;
  }

  get leaseId(): string {
    return this.lease.id;
  }

  /** After the parent is chosen (and before the first lookup through the writer). */
  async begin(parent: string | null, writer: RepoWriter): Promise<void> {
    this.writer = writer;
    this.parent = parent;
    const epochs = await listEpochs(this.repo.store);
    const latest = epochs.length ? epochs[epochs.length - 1]!.epoch : 0;
    // epochs whose deletions may still be under way: their condemned packs are not reused
    // (after an epoch ended, a stale cache entry points at a pack that is gone: the HEAD check sees it)
    const lastEnded = [...epochs].reverse().find((e) => e.end)?.epoch ?? 0;
    for (const e of epochs) {
      if (e.epoch <= lastEnded || e.end) continue;
      const intent = await readIntent(this.repo.store, this.repo.sealer, e.epoch);
      if (intent) this.addCondemned(intent);
    }
    this.seen = latest;
    await this.checkParent();
    await this.lease.update({ startEpoch: latest, seenEpoch: latest, parent });
    this.throwIfFenced('backup start');
  }

  private addCondemned(intent: EpochIntent): void {
    for (const n of intent.condemnedPacks) this.condemned.add(n.slice(n.lastIndexOf('/') + 1));
  }

  private async checkParent(): Promise<void> {
    if (this.parent && !(await new SnapshotCatalog(this.repo).exists(this.parent, this.vm))) {
      throw new UserError(`the parent snapshot ${this.parent} was forgotten while this backup ran; nothing was committed, run the backup again`, 6);
    }
  }

  private throwIfFenced(what: string): void {
    if (this.lease.fenced) throw new FencedError(what);
    if (this.failure) throw this.failure;
  }

  /** ReuseFilter: which index hits the run may deduplicate against (and logs those it does). */
  async accept(found: (IndexEntry | null)[]): Promise<boolean[]> {
    const out: boolean[] = [];
    for (const e of found) {
      if (!e) {
        out.push(false);
        continue;
      }
      const hex = e.packId.toString('hex');
      if (this.condemned.has(hex)) {
        out.push(false);
        continue;
      }
      let exists = this.packChecked.get(hex);
      if (exists === undefined) {
        exists = (await this.repo.store.head(packObjectName(e.type, hex))) !== null;
        this.packChecked.set(hex, exists);
      }
      // a pack condemned while we asked: the epoch handler has scanned the log already
      if (exists && this.condemned.has(hex)) exists = false;
      if (exists) this.log.add(e);
      out.push(exists);
    }
    return out;
  }

  /** Applies GC epochs published since the last check (serialised). */
  checkEpochs(): Promise<void> {
    const next = this.chain.then(() => this.applyNewEpochs());
    this.chain = next.catch(() => {});
    return next;
  }

  private async applyNewEpochs(): Promise<void> {
    if (this.lease.fenced || (await fenceExists(this.repo.store, this.lease.id))) {
      this.lease.fenced = true;
      return;
    }
    const intents = await epochsAfter(this.repo.store, this.repo.sealer, this.seen);
    for (const intent of intents) {
      const before = new Set(this.condemned);
      this.addCondemned(intent); // lookups from now on miss these packs
      await this.checkParent();
      for await (const e of this.log.entries()) {
        const hex = e.packId.toString('hex');
        if (before.has(hex) || !this.condemned.has(hex)) continue;
        await this.storeAgain(e);
      }
      this.seen = intent.epoch;
      await this.lease.update({ seenEpoch: intent.epoch });
      if (this.lease.fenced) return;
    }
  }

  private async storeAgain(e: IndexEntry): Promise<void> {
    let plain: Buffer;
    try {
      plain = await this.repo.readIndexed(e, 'reused blob'); // verified against its id
    } catch (err) {
      if (await fenceExists(this.repo.store, this.lease.id)) {
        this.lease.fenced = true;
        throw new FencedError('storing a condemned blob again');
      }
      throw err;
    }
    const w = this.writer!;
    if (!w.claim(e.id)) return; // stored again already
    await w.add(e.type, Buffer.from(e.id), this.repo.codec.encode(this.repo.defaultCodec, plain, e.type, e.id), plain.length);
    this.restored++;
  }

  /** Before the record is put: epochs applied, everything added is uploaded and indexed, not fenced. */
  async beforeCommit(): Promise<void> {
    this.throwIfFenced('before commit');
    await this.checkEpochs();
    this.committing = true; // no acknowledgement after this point: what we put must be uploaded first
    await this.chain;
    await this.writer!.finish();
    if (await fenceExists(this.repo.store, this.lease.id)) this.lease.fenced = true;
    this.throwIfFenced('before commit');
  }

  /** After the record is put: a fence written meanwhile means the record does not count; remove it and fail. */
  async afterCommit(recordId: string): Promise<void> {
    if (await fenceExists(this.repo.store, this.lease.id)) {
      await new SnapshotCatalog(this.repo).delete(recordId, this.vm).catch(() => {});
      throw new FencedError(`after writing snapshot ${recordId} (removed again)`);
    }
  }

  async close(): Promise<void> {
    await this.chain.catch(() => {});
    await this.log.close();
    await this.lease.release().catch(() => {});
  }
}
