/**
 * BlobStore: named, immutable byte objects. The only thing the repository layer
 * knows about where bytes live.
 *
 * Every backend (fs, s3, and every decorator wrapping one) guarantees:
 *
 * - Names are relative, '/'-separated paths of [A-Za-z0-9._-] segments
 *   (`data/3f/3f9a...`). A backend may map them to keys or files, but `list`
 *   returns them exactly as they were put.
 * - put is atomic: a reader sees either no object or the whole object, never a
 *   prefix of it, even when the writer crashes mid-put. A put that returned has
 *   made the object durable (fsync / a 200 from the server).
 * - put with `ifNotExists` fails with BlobExistsError when the name is taken, and
 *   two such puts racing for one name cannot both succeed (where the backend can
 *   promise it; `capabilities.conditionalPut` says whether it can).
 *   Without `ifNotExists`, put overwrites; callers only overwrite with identical
 *   content (content-addressed names), so last-writer-wins is harmless.
 * - read-after-write: once put returned, get/head/list in this or any other
 *   process see the object.
 * - get returns exactly the bytes put, or the requested range of them; a range
 *   that runs past the end is an error (BlobRangeError), never a short read.
 *   A missing object is BlobNotFoundError.
 * - list(prefix) yields every object whose name starts with prefix, each once,
 *   in no particular order, with its size. Incomplete uploads are never listed.
 * - delete of a missing object succeeds (idempotent).
 *
 * Errors that a user can act on carry a message that says what to do.
 */
export interface BlobStore {
  /** Human-readable location, for messages: `/srv/repo`, `s3://bucket/prefix`. */
  readonly location: string;
  readonly capabilities: StoreCapabilities;

  put(name: string, data: Uint8Array, options?: PutOptions): Promise<void>;
  get(name: string, range?: ByteRange): Promise<Buffer>;
  head(name: string): Promise<BlobInfo | null>;
  list(prefix: string): AsyncIterable<BlobInfo>;
  delete(name: string): Promise<void>;
  /** Releases connections and handles. The store is unusable afterwards. */
  close(): Promise<void>;
  /** Object Lock (WORM retention), where the backend has it (S3 with Object Lock); decorators pass it through. */
  readonly objectLock?: ObjectLockControl;
  /**
   * Starts a put whose bytes arrive in pieces and whose name is known only at the end
   * (a content-named pack, written as it fills instead of held in memory), where the
   * backend can (the local directory; decorators pass it through when their inner
   * store has it). `near` is the object's future name, or a prefix of it: the backend
   * keeps the pieces close to it (the local directory: in the same file system).
   */
  openAppend?(near: string): Promise<AppendingPut>;
}

/**
 * A put in pieces (BlobStore.openAppend). Until `commit` returns nothing is visible
 * under any name, in this or any other process, and a writer that dies leaves only
 * a temporary that is never listed and is swept like put's. Once `commit` returns,
 * the object has every guarantee of a put of the same bytes. `append` calls must not
 * overlap; the parts may be reused once its promise resolves.
 */
export interface AppendingPut {
  /** Bytes appended so far. */
  readonly size: number;
  /** Appends the parts, in order. */
  append(parts: readonly Uint8Array[]): Promise<void>;
  /**
   * Makes the bytes durable as `name` (as put with these options). Once it succeeded the
   * handle is spent; after a failure a backend may take another commit (S3Store keeps
   * its spool; RetryingStore retries) or not (the local directory's temporary is gone).
   * abort() is safe either way.
   */
  commit(name: string, options?: PutOptions): Promise<void>;
  /** Drops what was appended (idempotent; a no-op after commit). */
  abort(): Promise<void>;
}

/** `a` with its commit run through `commit` (a decorator's retry or metering); the rest passed through. */
export function withCommit(a: AppendingPut, commit: (run: () => Promise<void>, name: string) => Promise<void>): AppendingPut {
  return {
    get size() {
      return a.size;
    },
    append: (parts) => a.append(parts),
    commit: (name, options) => commit(() => a.commit(name, options), name),
    abort: () => a.abort(),
  };
}

export type ObjectLockMode = 'COMPLIANCE' | 'GOVERNANCE';

export interface ObjectLockSettings {
  mode: ObjectLockMode;
  /** Every put of a name `appliesTo` accepts is retained until now + periodMs. */
  periodMs: number;
  appliesTo: (name: string) => boolean;
}

/**
 * Object Lock retention of a store. Once `configure`d:
 * - put of a name `appliesTo` accepts carries a retain-until date (now + periodMs);
 * - delete removes every version of the name (a versioned bucket would otherwise only
 *   hide it behind a delete marker) and fails with BlobLockedError while any version
 *   is retained.
 */
export interface ObjectLockControl {
  /** Whether the bucket has Object Lock enabled (it can only be enabled when the bucket is created). */
  bucketLockEnabled(): Promise<boolean>;
  configure(settings: ObjectLockSettings): void;
  readonly settings: ObjectLockSettings | undefined;
  /** The retain-until date of the current version; null when it has none; BlobNotFoundError when missing. */
  retainUntil(name: string): Promise<Date | null>;
  /** Extends the current version's retention to `until` (Object Lock never shortens one). */
  extend(name: string, until: Date): Promise<void>;
}

export interface StoreCapabilities {
  /** put({ifNotExists}) is atomic against concurrent writers of the same name. */
  conditionalPut: boolean;
  /**
   * get() reads a range into `ByteRange.into` when given one (the local directory, S3).
   * Where it does not, readers should not cut their ranges to the size of such buffers:
   * each range is a request.
   */
  readsInto?: boolean;
}

export interface PutOptions {
  ifNotExists?: boolean;
  /** What the object holds, so a backend may pick a storage class for it. */
  kind?: BlobKind;
}

/** Data packs may live in a colder storage class than everything else. */
export type BlobKind = 'data' | 'metadata';

export interface ByteRange {
  offset: number;
  length: number;
  /**
   * A buffer the range may be read into (at least `length` bytes; may be backed by a
   * SharedArrayBuffer): the local store reads into it and returns a view of it, so a
   * restore reuses a few buffers instead of faulting in a new one per read. Stores
   * that cannot (capabilities.readsInto false) ignore it and return a buffer of their own.
   */
  into?: Uint8Array;
}

export interface BlobInfo {
  name: string;
  size: number;
}

export class BlobNotFoundError extends Error {
  readonly code = 'BLOB_NOT_FOUND';
  constructor(readonly blobName: string, location: string) {
    super(`object ${blobName} not found in ${location}`);
  }
}

export class BlobExistsError extends Error {
  readonly code = 'BLOB_EXISTS';
  constructor(readonly blobName: string, location: string) {
    super(`object ${blobName} already exists in ${location}`);
  }
}

export class BlobRangeError extends Error {
  readonly code = 'BLOB_RANGE';
  constructor(readonly blobName: string, range: ByteRange, size: number) {
    super(`range ${range.offset}+${range.length} is past the end of ${blobName} (${size} bytes)`);
  }
}

/** A delete refused because the object is under Object Lock retention until `retainUntil`. */
export class BlobLockedError extends Error {
  readonly code = 'BLOB_LOCKED';
  constructor(
    readonly blobName: string,
    location: string,
    readonly retainUntil: Date | null,
  ) {
    super(`object ${blobName} in ${location} is under Object Lock retention${retainUntil ? ` until ${retainUntil.toISOString()}` : ''} and cannot be deleted before then`);
  }
}

export function isLocked(err: unknown): err is { code: 'BLOB_LOCKED'; retainUntil: Date | null; message: string } {
  return err instanceof BlobLockedError || (err as { code?: string })?.code === 'BLOB_LOCKED';
}

const NAME_RE = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/;

/** Throws when a name breaks the naming rule above; backends call it on every entry point. */
export function checkBlobName(name: string): void {
  if (!NAME_RE.test(name) || name.split('/').some((s) => s === '.' || s === '..' || s.startsWith('.tmp-'))) {
    throw new Error(`invalid object name: ${JSON.stringify(name)}`);
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof BlobNotFoundError || (err as { code?: string })?.code === 'BLOB_NOT_FOUND';
}
