import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../repo/errors.js';
import { readFences, writeDecision, fenceExists } from '../repo/fence.js';
import { DATA_PREFIX, INDEX_PREFIX, META_PREFIX } from '../repo/format.js';
import {
  EpochIntent,
  EpochTakenError,
  IdPageWriter,
  listEpochs,
  publishDone,
  publishEnd,
  publishIntent,
  readDone,
  readIntent,
  retiredIndexFiles,
} from '../repo/gc-epoch.js';
import { Lease, LeaseInfo, listLeases } from '../repo/lease.js';
import { LocalCache } from '../repo/local-cache.js';
import { killPoint } from '../repo/kill-point.js';
import { Repository } from '../repo/repository.js';
import { ListingError, listNames, listPacks } from './gc/listing.js';
import { Marker } from './gc/mark.js';
import { IndexFileInfo, account, condemnedBlobIds, decide, loadIndex, supersededFiles } from './gc/plan.js';
import { rewrite } from './gc/rewrite.js';
import { Roots } from './gc/roots.js';
import { leaseIsLive, waitForLeases } from './gc/wait.js';
import { CondemnedDeletion, deleteCondemned } from '../repo/object-lock.js';
import { GcWorkspace } from './gc/workspace.js';

/** Protocol steps, in order (tests pause or kill a prune at each). */
export type PruneStep = 'listed' | 'marked' | 'published' | 'reread' | 'waited' | 'final-reread' | 'rewritten' | 'done' | 'deleted';

export interface PruneOptions {
  /** Repack a pack whose unused share is above this fraction (default 0.05). */
  maxUnused?: number;
  /** Stop choosing packs to repack once their live bytes reach this (default: no limit). */
  maxRepackBytes?: number;
  dryRun?: boolean;
  /** Poll interval while waiting for backups (default: a tenth of the lease expiry, at most 5 s). */
  pollMs?: number;
  /** Called at each protocol step (tests). */
  onStep?: (step: PruneStep) => Promise<void> | void;
  /** Progress lines (the CLI prints them on stderr). */
  log?: (line: string) => void;
}

export interface PruneReport {
  dryRun: boolean;
  epoch: number | null;
  snapshots: number;
  packs: { listed: number; bytes: number; kept: number; protected: number };
  indexFiles: { listed: number; superseded: number; written: number };
  blobs: { indexed: number; live: number; liveBytes: number; condemned: number };
  deleted: { packs: number; bytes: number };
  repacked: { packs: number; bytes: number; blobsCopied: number; bytesCopied: number; packsWritten: number; bytesWritten: number };
  orphans: { deleted: number; kept: number; bytes: number };
  leases: { waitedFor: number; acknowledged: number; ended: number; fenced: string[] };
  rolledForward: number[];
  /**
   * Object Lock repositories only: condemned objects still retained (deleted by a later
   * prune, the latest date among them), and the live objects whose retention was checked
   * and extended to retainUntil.
   */
  objectLock?: { deferred: number; deferredUntil: string | null; checked: number; extended: number; retainUntil: string | null };
  durationMs: number;
  /** Milliseconds from the start to each protocol step reached (where the time goes). */
  stepMs: Partial<Record<PruneStep, number>>;
}

/** Index files with fewer entries than this are merged into compacted ones. */
const MERGE_BELOW = 25_000;

/**
 * Garbage collection that runs beside backups (docs/FORMAT.md, "The prune
 * protocol"): list (checked), mark from the committed snapshots, publish the
 * condemned set as GC epoch E (no-overwrite put), re-read the roots, wait for
 * every backup that predates E to acknowledge it, end, or expire (expired ones
 * are fenced), re-read the roots once more, write repacked packs and compacted
 * index files, publish E.done, and only then delete.
 */
export async function prune(repo: Repository, options: PruneOptions = {}): Promise<PruneReport> {
  const started = Date.now();
  const maxUnused = options.maxUnused ?? 0.05;
  const maxRepackBytes = options.maxRepackBytes ?? Number.POSITIVE_INFINITY;
  const dryRun = options.dryRun ?? false;
  const log = options.log ?? (() => {});
  const step = async (s: PruneStep) => {
    report.stepMs[s] = Date.now() - started;
    log(s);
    killPoint(`prune:${s}`);
    await options.onStep?.(s);
  };
  const store = repo.store;
  const sealer = repo.sealer;
  const report: PruneReport = {
    dryRun,
    epoch: null,
    snapshots: 0,
    packs: { listed: 0, bytes: 0, kept: 0, protected: 0 },
    indexFiles: { listed: 0, superseded: 0, written: 0 },
    blobs: { indexed: 0, live: 0, liveBytes: 0, condemned: 0 },
    deleted: { packs: 0, bytes: 0 },
    repacked: { packs: 0, bytes: 0, blobsCopied: 0, bytesCopied: 0, packsWritten: 0, bytesWritten: 0 },
    orphans: { deleted: 0, kept: 0, bytes: 0 },
    leases: { waitedFor: 0, acknowledged: 0, ended: 0, fenced: [] },
    rolledForward: [],
    durationMs: 0,
    stepMs: {},
  };
  const pollMs = options.pollMs ?? Math.min(5000, Math.max(20, Math.floor(expiryForPoll() / 10)));

  const lease = await Lease.acquire(store, 'prune');
  const ws = await GcWorkspace.open(path.join(repo.cacheRoot ?? LocalCache.defaultRoot(), repo.config.id));
  try {
    // 0. one prune at a time; finish what a killed prune left after its .done
    let epochs = await listEpochs(store);
    const last = epochs.length ? epochs[epochs.length - 1]! : null;
    if (last && !last.done) {
      const intent = await readIntent(store, sealer, last.epoch);
      const holder = intent ? (await listLeases(repo)).find((l) => l.id === intent.lease) : undefined;
      if (holder && !(await fenceExists(store, holder.id)) && (await leaseIsLive(store, holder, pollMs))) {
        throw new UserError(`another prune is running (GC epoch ${last.epoch}, host ${holder.host}, pid ${holder.pid}); this one stops, nothing deleted`);
      }
    }
    if (!dryRun) {
      for (const e of epochs.filter((x) => x.done && !x.end)) {
        const done = await readDone(store, sealer, e.epoch);
        if (!done) continue;
        log(`finishing GC epoch ${e.epoch} (a prune was killed after it was done)`);
        const rolled = await deleteCondemned(repo, [...done.condemnedPacks, ...retiredIndexFiles(done)]);
        noteObjectLock(report, rolled);
        if (rolled.deferred.length > 0) continue; // Object Lock: the rest lapses later; the epoch stays un-ended
        await publishEnd(store, sealer, e.epoch);
        report.rolledForward.push(e.epoch);
      }
      if (report.rolledForward.length) epochs = await listEpochs(store);
    }
    const lastEpoch = epochs.length ? epochs[epochs.length - 1]!.epoch : 0;

    // 1. listings: packs, then index files, then leases (a writer of anything listed is visible)
    const packs = await listPacks(store, ws, [DATA_PREFIX, META_PREFIX]);
    report.packs.listed = packs.count;
    report.packs.bytes = packs.bytes;
    const indexNames = (await listNames(store, INDEX_PREFIX)).sort();
    report.indexFiles.listed = indexNames.length;
    if (indexNames.length === 0 && packs.count > 0) throw new ListingError(`the listing of ${INDEX_PREFIX} is empty while ${packs.count} packs exist`);
    await checkReplacementsListed(repo, epochs, new Set(indexNames));
    const leases = (await listLeases(repo)).filter((l) => l.id !== lease.id);
    const fences0 = await readFences(store);
    const fencedIds = new Set([...fences0.undecided, ...fences0.decided.keys()]);
    const writers = leases.filter((l) => l.operation !== 'prune' && l.operation !== 'forget' && !fencedIds.has(l.id));

    // the settled rule: an index file or orphan pack listed by epoch k <= every running writer's start epoch predates them all
    let settled: (name: string) => boolean = () => true;
    let orphanDeletable: (name: string) => boolean = () => true;
    if (writers.length > 0) {
      const m = Math.min(...writers.map((l) => l.startEpoch ?? lastEpoch), lastEpoch);
      const k = m >= 1 ? await readIntent(store, sealer, m) : null;
      const seen = new Set(k?.indexSeen ?? []);
      // index files that prunes wrote (replacements) hold no running backup's data
      for (let e = Math.max(1, m); e <= lastEpoch; e++) for (const n of (await readDone(store, sealer, e))?.replacement ?? []) seen.add(n);
      const orphansSeen = new Set(k?.orphansSeen ?? []);
      settled = (n) => seen.has(n);
      orphanDeletable = (n) => orphansSeen.has(n);
    }
    const files: IndexFileInfo[] = indexNames.map((name) => ({ name, settled: settled(name), entries: 0 }));
    report.blobs.indexed = await loadIndex(repo, ws, files);
    await step('listed');

    // 2. mark
    const marker = new Marker(repo, ws);
    marker.onMissing = async () => {
      const known = new Set(files.map((f) => f.name));
      const late = (await listNames(store, INDEX_PREFIX)).filter((n) => !known.has(n)).sort();
      if (late.length === 0) return false;
      const from = files.length;
      for (const name of late) files.push({ name, settled: false, entries: 0 });
      report.blobs.indexed += await loadIndex(repo, ws, files, from);
      return true;
    };
    const roots = new Roots(repo, marker);
    await roots.read(fences0, { first: true, packsExist: packs.count > 0 });
    const acc = await account(ws);
    report.blobs.live = acc.liveBlobs;
    report.blobs.liveBytes = acc.liveBytes;
    const plan = await decide(ws, { maxUnused, maxRepackBytes, orphanDeletable });
    const superseded = await supersededFiles(ws, files, MERGE_BELOW);
    report.packs.kept = plan.decisions.keep;
    report.packs.protected = plan.decisions.protected;
    report.deleted = { packs: plan.decisions.delete + plan.orphans.deleted, bytes: plan.deleteBytes + plan.orphans.bytes };
    report.repacked.packs = plan.decisions.repack;
    report.repacked.bytes = plan.repackBytes;
    report.orphans = plan.orphans;
    report.indexFiles.superseded = superseded.size;
    await step('marked');
    if (dryRun) {
      let n = 0;
      for await (const _ of condemnedBlobIds(ws)) n++;
      report.blobs.condemned = n;
      report.snapshots = roots.marked.size;
      return finish(report, started);
    }

    // 3. publish epoch E: the condemned set becomes binding for every backup
    const epoch = lastEpoch + 1;
    const pages = new IdPageWriter(store, sealer, epoch, lease.id);
    for await (const id of condemnedBlobIds(ws)) await pages.add(id);
    await pages.flush();
    report.blobs.condemned = pages.count;
    const intent: EpochIntent = {
      version: 1,
      epoch,
      lease: lease.id,
      host: os.hostname(),
      created: new Date().toISOString(),
      condemnedPacks: plan.condemnedPacks,
      idPages: pages.pages,
      superseded: [...superseded].map((f) => files[f]!.name),
      indexSeen: indexNames,
      orphansSeen: await orphanNames(ws),
    };
    try {
      await publishIntent(store, sealer, intent);
    } catch (err) {
      for (const p of pages.pages) await store.delete(p).catch(() => {});
      if (err instanceof EpochTakenError) throw new UserError(err.message, 5);
      throw err;
    }
    report.epoch = epoch;
    await lease.update({ seenEpoch: epoch });
    await step('published');

    // 4. roots again: records committed meanwhile un-condemn what they reference
    await roots.read(fences0, { first: false, packsExist: true });
    await step('reread');

    // 5. wait for every backup that predates E: ended, acknowledged E, or expired (then fenced)
    // (with nothing condemned there is nothing a backup could have reused: no wait)
    const pending = plan.condemnedPacks.length === 0 ? [] : ((await listLeases(repo)).filter((l) => l.id !== lease.id && l.operation !== 'prune' && l.seenEpoch < epoch) as LeaseInfo[]);
    report.leases.waitedFor = pending.length;
    const outcomes = await waitForLeases(store, pending, epoch, `prune ${lease.id}`, pollMs);
    for (const [id, o] of outcomes) {
      if (o === 'fenced') report.leases.fenced.push(id);
      else if (o === 'acknowledged') report.leases.acknowledged++;
      else report.leases.ended++;
    }
    await step('waited');

    // 6. fences, then the roots a last time; decide every fence not yet decided
    const fences = await readFences(store);
    await roots.read(fences, { first: false, packsExist: true });
    for (const l of fences.undecided) {
      const accepted = [...roots.marked].filter(([, ls]) => ls === l).map(([id]) => id);
      await writeDecision(store, { lease: l, epoch, accepted });
    }
    report.snapshots = roots.marked.size;
    await step('final-reread');

    // 7. new packs and compacted index files before anything old goes
    const rw = await rewrite(repo, ws, files, superseded);
    report.repacked.blobsCopied = rw.blobsCopied;
    report.repacked.bytesCopied = rw.bytesCopied;
    report.repacked.packsWritten = rw.packsWritten;
    report.repacked.bytesWritten = rw.packBytesWritten;
    report.indexFiles.written = rw.replacement.length;
    await step('rewritten');

    // 8. done: from here on, deleting is safe (and a later prune finishes it if we die)
    if (lease.fenced || (await fenceExists(store, lease.id))) {
      throw new UserError(`this prune's lease was removed ('pilotlight unlock --force'); it stops before deleting anything`, 5);
    }
    await publishDone(store, sealer, { version: 1, epoch, replacement: rw.replacement, superseded: intent.superseded, condemnedPacks: intent.condemnedPacks });
    await step('done');
    const deletion = await deleteCondemned(repo, [...intent.condemnedPacks, ...retiredIndexFiles({ superseded: intent.superseded, replacement: rw.replacement })], () => killPoint('prune:deleting'));
    noteObjectLock(report, deletion);
    // Under Object Lock what is still retained is deferred: the epoch stays done but not ended,
    // so caches keep ignoring its superseded index files and the next prune finishes it.
    if (deletion.deferred.length === 0) await publishEnd(store, sealer, epoch);
    await repo.refreshIndex();
    await step('deleted');
    return finish(report, started);
  } finally {
    await ws.close();
    await lease.release().catch(() => {});
  }
}

function expiryForPoll(): number {
  const v = Number(process.env.PILOTLIGHT_LEASE_EXPIRY_MS);
  return Number.isFinite(v) && v > 0 ? v : 30 * 60_000;
}

/** Object Lock figures of one deletion, added up in the report. */
function noteObjectLock(r: PruneReport, d: CondemnedDeletion): void {
  if (!d.extended) return;
  r.objectLock ??= { deferred: 0, deferredUntil: null, checked: 0, extended: 0, retainUntil: null };
  r.objectLock.deferred += d.deferred.length;
  for (const x of d.deferred) if (x.retainUntil && (!r.objectLock.deferredUntil || x.retainUntil > r.objectLock.deferredUntil)) r.objectLock.deferredUntil = x.retainUntil;
  r.objectLock.checked += d.extended.checked;
  r.objectLock.extended += d.extended.extended;
  r.objectLock.retainUntil = d.extended.retainUntil;
}

function finish(r: PruneReport, started: number): PruneReport {
  r.durationMs = Date.now() - started;
  return r;
}

async function orphanNames(ws: GcWorkspace): Promise<string[]> {
  const out: string[] = [];
  for await (const k of ws.packs.keys()) {
    const name = k.toString();
    const id = Buffer.from(name.slice(name.lastIndexOf('/') + 1), 'hex');
    if ((await ws.indexed.get(id)) === undefined) out.push(name);
  }
  return out;
}

/**
 * The index files the last done epoch wrote must be listed unless a later epoch
 * superseded them: one missing from the listing that a HEAD still finds means
 * the listing is short.
 */
async function checkReplacementsListed(repo: Repository, epochs: { epoch: number; done: boolean }[], listed: Set<string>): Promise<void> {
  const lastDone = [...epochs].reverse().find((e) => e.done);
  if (!lastDone) return;
  const done = await readDone(repo.store, repo.sealer, lastDone.epoch);
  for (const n of done?.replacement ?? []) {
    if (listed.has(n)) continue;
    if (await repo.store.head(n)) throw new ListingError(`index file ${n} exists but the listing of ${INDEX_PREFIX} did not return it (a short listing)`);
    throw new ListingError(`index file ${n}, written by GC epoch ${lastDone.epoch}, is missing: run 'pilotlight verify'`);
  }
}
