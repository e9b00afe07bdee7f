import {
  AppendingPut,
  BlobInfo,
  BlobStore,
  ByteRange,
  ObjectLockControl,
  PutOptions,
  StoreCapabilities,
  withCommit,
} from './blob-store.js';

import { backoffDelay, isTransientError } from './retry.js';

export { errnoCode, errorStatus, isTransientError } from './retry.js';

/**
 * Retries the operations of any BlobStore on transient failures, with the one retry
 * policy of src/store/retry.ts (what is transient, equal-jitter backoff).
 *
 * put with ifNotExists is safe to retry: when an earlier attempt failed transiently
 * (its response may have been lost after the server stored the object) and a later
 * attempt finds the name taken, the object is read back, and if it holds exactly our
 * bytes the put counts as done.
 *
 * A listing that fails midway is started again and skips the names it already
 * yielded, so each object is still yielded once.
 */
export interface RetryOptions {
  /** Total attempts per operation, the first included. Default 6. */
  maxAttempts?: number;
  /** Default 200 ms. */
  baseDelayMs?: number;
  /** Default 10 s. */
  maxDelayMs?: number;
  /** Called before each retry (for metrics and logs). */
  onRetry?: (info: RetryInfo) => void;
  /** Replaces setTimeout-based sleeping (tests). */
  sleep?: (ms: number) => Promise<void>;
  /** Replaces Math.random (tests). */
  random?: () => number;
}

export interface RetryInfo {
  op: string;
  name: string;
  attempt: number;
  delayMs: number;
  error: unknown;
}

export class RetryingStore implements BlobStore {
  readonly location: string;
  private readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly sleep: (ms: number) => Promise<void>;
  private readonly random: () => number;
  private retries = 0;

  constructor(
    readonly inner: BlobStore,
    private readonly options: RetryOptions = {},
  ) {
    this.location = inner.location;
    this.maxAttempts = Math.max(1, options.maxAttempts ?? 6);
    this.baseDelayMs = options.baseDelayMs ?? 200;
    this.maxDelayMs = options.maxDelayMs ?? 10_000;
    this.sleep = options.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
    this.random = options.random ?? Math.random;
  }

  get capabilities(): StoreCapabilities {
    return this.inner.capabilities;
  }

  /** The inner store's Object Lock control, its calls retried like every other. */
  get objectLock(): ObjectLockControl | undefined {
    const c = this.inner.objectLock;
    if (!c) return undefined;
    return {
      bucketLockEnabled: () => this.retry('objectLock', 'GetObjectLockConfiguration', () => c.bucketLockEnabled()),
      configure: (settings) => c.configure(settings),
      get settings() {
        return c.settings;
      },
      retainUntil: (name) => this.retry('objectLock', `retention of ${name}`, () => c.retainUntil(name)),
      extend: (name, until) => this.retry('objectLock', `extend retention of ${name}`, () => c.extend(name, until)),
    };
  }

  /**
   * Passed through when the inner store has it: opening and commit are retried like a
   * put (the inner put keeps its bytes until a commit succeeds: S3Store's spool), the
   * appends are local writes and are not.
   */
  get openAppend(): ((near: string) => Promise<AppendingPut>) | undefined {
    const open = this.inner.openAppend?.bind(this.inner);
    if (!open) return undefined;
    return async (near) => withCommit(await this.retry('openAppend', near, () => open(near)), (run, name) => this.retry('put', name, run));
  }

  /** Retries performed so far, all operations together. */
  get retryCount(): number {
    return this.retries;
  }

  /** Runs fn with this store's retry policy (also used for calls outside the BlobStore interface). */
  async retry<T>(op: string, name: string, fn: (attempt: number) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn(attempt);
      } catch (err) {
        if (attempt >= this.maxAttempts || !isTransientError(err)) throw err;
        const delayMs = backoffDelay({ baseDelayMs: this.baseDelayMs, maxDelayMs: this.maxDelayMs }, attempt, this.random);
        this.retries++;
        this.options.onRetry?.({ op, name, attempt, delayMs, error: err });
        await this.sleep(delayMs);
      }
    }
  }

  async put(name: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    let hadTransientFailure = false;
    try {
      await this.retry('put', name, async () => {
        try {
          await this.inner.put(name, data, options);
        } catch (err) {
          if (isTransientError(err)) hadTransientFailure = true;
          throw err;
        }
      });
    } catch (err) {
      if (options?.ifNotExists && hadTransientFailure && (err as { code?: string })?.code === 'BLOB_EXISTS') {
        // Our earlier attempt may have stored the object and lost only the answer.
        const existing = await this.retry('get', name, () => this.inner.get(name)).catch(() => null);
        if (existing && Buffer.from(data.buffer, data.byteOffset, data.byteLength).equals(existing)) return;
      }
      throw err;
    }
  }

  get(name: string, range?: ByteRange): Promise<Buffer> {
    return this.retry('get', name, () => this.inner.get(name, range));
  }

  head(name: string): Promise<BlobInfo | null> {
    return this.retry('head', name, () => this.inner.head(name));
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    // A listing that fails midway starts over and skips what it already yielded.
    const seen = new Set<string>();
    for (let attempt = 1; ; attempt++) {
      try {
        for await (const info of this.inner.list(prefix)) {
          if (seen.has(info.name)) continue;
          seen.add(info.name);
          yield info;
        }
        return;
      } catch (err) {
        if (attempt >= this.maxAttempts || !isTransientError(err)) throw err;
        const delayMs = backoffDelay({ baseDelayMs: this.baseDelayMs, maxDelayMs: this.maxDelayMs }, attempt, this.random);
        this.retries++;
        this.options.onRetry?.({ op: 'list', name: prefix, attempt, delayMs, error: err });
        await this.sleep(delayMs);
      }
    }
  }

  delete(name: string): Promise<void> {
    return this.retry('delete', name, () => this.inner.delete(name));
  }

  /** Deletes many objects: one batch call when the inner store has one (S3), else one delete each. */
  async deleteMany(names: string[]): Promise<void> {
    const batch = (this.inner as { deleteMany?: (n: string[]) => Promise<void> }).deleteMany;
    if (typeof batch === 'function') {
      await this.retry('deleteMany', `${names.length} objects`, () => batch.call(this.inner, names));
      return;
    }
    for (let i = 0; i < names.length; i += 16) {
      await Promise.all(names.slice(i, i + 16).map((n) => this.delete(n)));
    }
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
