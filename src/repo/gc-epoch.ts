import { BlobExistsError, BlobStore, isNotFound } from '../store/blob-store.js';
import { AD } from './format.js';
import type { RepoSealer as Sealer } from './repo-sealer.js';
import { IntegrityError } from './errors.js';
import { ID_BYTES } from './format.js';

/**
 * GC epochs (`gc/<epoch, 10 digits>`): what one prune condemns, published with a
 * no-overwrite put before anything is deleted. Epoch numbers are consecutive;
 * two prunes racing for one number: one put wins, the other prune exits.
 *
 *   gc/<E>                 intent (sealed JSON, EpochIntent): condemned packs, the pages of
 *                          condemned blob ids, the index files to be superseded, what the
 *                          listings showed (for the next prune's "settled" rule)
 *   gc/<E>.<lease>.ids-<n> condemned blob ids, 32 bytes each, sealed (written before the intent)
 *   gc/<E>.done            completion (sealed JSON, EpochDone): replacement index files are
 *                          written; deletion may start
 *   gc/<E>.end             deletion finished
 *
 * docs/FORMAT.md, "GC epochs", is the normative text.
 */
export const GC_PREFIX = 'gc/';
export const IDS_PER_PAGE = 65536;

export interface EpochIntent {
  version: 1;
  epoch: number;
  /** The prune's lease id. */
  lease: string;
  host: string;
  created: string;
  /** Pack object names that will be deleted (whole packs: unused, repacked or orphaned). */
  condemnedPacks: string[];
  /** Names of the id pages: blobs in condemned packs that no snapshot referenced when marked. */
  idPages: string[];
  /** Index files this epoch replaces (their replacements are in the .done object). */
  superseded: string[];
  /** Every index file the prune's listing showed (the next prune's "settled" rule). */
  indexSeen: string[];
  /** Packs in no index file when listed (orphans; the next prune may delete them). */
  orphansSeen: string[];
}

export interface EpochDone {
  version: 1;
  epoch: number;
  /** Index files written to replace `superseded` (all written before this object). */
  replacement: string[];
  superseded: string[];
  condemnedPacks: string[];
}

/**
 * The index files an epoch retires (deletes, and caches forget): its superseded files less
 * any name among its replacements. Index files are named by their content, so a compaction
 * that keeps exactly the entries of a superseded file (say a merged replacement of an earlier
 * prune, once the other files merged with it lost every entry) writes that file again under
 * its own name: deleting it as superseded would delete the replacement, and the index with it.
 */
export function retiredIndexFiles(done: Pick<EpochDone, 'superseded' | 'replacement'>): string[] {
  const kept = new Set(done.replacement);
  return done.superseded.filter((n) => !kept.has(n));
}

export interface EpochState {
  epoch: number;
  done: boolean;
  end: boolean;
}

export class EpochTakenError extends Error {
  constructor(readonly epoch: number) {
    super(`another prune published GC epoch ${epoch} first; this prune stops (nothing was deleted)`);
  }
}

export function epochName(epoch: number): string {
  return `${GC_PREFIX}${String(epoch).padStart(10, '0')}`;
}

const EPOCH_RE = /^gc\/(\d{10})(\.done|\.end)?$/;

/** Every epoch, oldest first, from one listing of gc/. */
export async function listEpochs(store: BlobStore): Promise<EpochState[]> {
  const by = new Map<number, EpochState>();
  for await (const b of store.list(GC_PREFIX)) {
    const m = EPOCH_RE.exec(b.name);
    if (!m) continue;
    const e = Number(m[1]);
    const s = by.get(e) ?? { epoch: e, done: false, end: false };
    if (m[2] === '.done') s.done = true;
    else if (m[2] === '.end') s.end = true;
    by.set(e, s);
  }
  // a .done without its intent would be damage; only epochs with an intent count
  return [...by.values()].sort((a, b) => a.epoch - b.epoch);
}

/** Epochs above `after`, found by reading gc/<after+1>, gc/<after+2>, ... (no listing). */
export async function epochsAfter(store: BlobStore, sealer: Sealer, after: number): Promise<EpochIntent[]> {
  const out: EpochIntent[] = [];
  for (let e = after + 1; ; e++) {
    const intent = await readIntent(store, sealer, e);
    if (!intent) return out;
    out.push(intent);
  }
}

function sealJson(sealer: Sealer, name: string, v: unknown): Buffer {
  return sealer.seal([Buffer.from(JSON.stringify(v))], AD.gc(name));
}

async function getSealed<T>(store: BlobStore, sealer: Sealer, name: string): Promise<T | null> {
  let bytes: Buffer;
  try {
    bytes = await store.get(name);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
  return JSON.parse(sealer.openEither(bytes, AD.gc(name), name).plain.toString('utf8')) as T;
}

export function readIntent(store: BlobStore, sealer: Sealer, epoch: number): Promise<EpochIntent | null> {
  return getSealed<EpochIntent>(store, sealer, epochName(epoch));
}

export function readDone(store: BlobStore, sealer: Sealer, epoch: number): Promise<EpochDone | null> {
  return getSealed<EpochDone>(store, sealer, `${epochName(epoch)}.done`);
}

async function putOnce(store: BlobStore, name: string, bytes: Buffer, epoch: number): Promise<void> {
  try {
    await store.put(name, bytes, { ifNotExists: true, kind: 'metadata' });
  } catch (err) {
    if (err instanceof BlobExistsError || (err as { code?: string }).code === 'BLOB_EXISTS') throw new EpochTakenError(epoch);
    throw err;
  }
}

/** Publishes an epoch: the no-overwrite put that makes its condemned set binding. */
export async function publishIntent(store: BlobStore, sealer: Sealer, intent: EpochIntent): Promise<void> {
  await putOnce(store, epochName(intent.epoch), sealJson(sealer, epochName(intent.epoch), intent), intent.epoch);
}

export async function publishDone(store: BlobStore, sealer: Sealer, done: EpochDone): Promise<void> {
  await putOnce(store, `${epochName(done.epoch)}.done`, sealJson(sealer, `${epochName(done.epoch)}.done`, done), done.epoch);
}

export async function publishEnd(store: BlobStore, sealer: Sealer, epoch: number): Promise<void> {
  try {
    await putOnce(store, `${epochName(epoch)}.end`, sealJson(sealer, `${epochName(epoch)}.end`, { version: 1, epoch, ended: new Date().toISOString() }), epoch);
  } catch (err) {
    if (!(err instanceof EpochTakenError)) throw err; // a roll-forward that ended it already
  }
}

/** Writes condemned ids in pages; returns the page names (to go in the intent). */
export class IdPageWriter {
  private buf: Buffer[] = [];
  readonly pages: string[] = [];
  count = 0;

  constructor(
    private readonly store: BlobStore,
    private readonly sealer: Sealer,
    private readonly epoch: number,
    private readonly lease: string,
  ) {}

  async add(id: Buffer): Promise<void> {
    this.buf.push(id);
    this.count++;
    if (this.buf.length >= IDS_PER_PAGE) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.buf.length === 0) return;
    const name = `${epochName(this.epoch)}.${this.lease}.ids-${this.pages.length}`;
    await this.store.put(name, this.sealer.seal([Buffer.concat(this.buf)], AD.gc(name)), { kind: 'metadata' });
    this.pages.push(name);
    this.buf = [];
  }
}

/** The condemned ids of an epoch, one page at a time. */
export async function* condemnedIds(store: BlobStore, sealer: Sealer, intent: EpochIntent): AsyncIterable<Buffer[]> {
  for (const name of intent.idPages) {
    const { plain } = sealer.openEither(await store.get(name), AD.gc(name), name);
    if (plain.length % ID_BYTES !== 0) throw new IntegrityError(`${name}: not a page of ids`);
    const ids: Buffer[] = [];
    for (let o = 0; o < plain.length; o += ID_BYTES) ids.push(plain.subarray(o, o + ID_BYTES));
    yield ids;
  }
}
