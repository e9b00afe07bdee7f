import {
  BlobInfo,
  BlobStore,
  ByteRange,
  ObjectLockControl,
  PutOptions,
  StoreCapabilities,
} from './blob-store.js';

/**
 * Retries the operations of any BlobStore on transient failures, with exponential
 * backoff and "equal jitter": delay = c/2 + random(0, c/2), c = min(maxDelay,
 * baseDelay * 2^(attempt-1)). Half of each delay is fixed so that the retries
 * of one operation always span at least half the exponential sum (with the defaults:
 * 3.1 s of outage are always ridden out), the random half spreads clients apart.
 *
 * Transient (retried): HTTP 5xx (including 503 SlowDown), 429, 408, the S3 error codes
 * RequestTimeout / SlowDown / InternalError / BadDigest (the body was damaged on the
 * way; the bytes in memory are fine, so sending them again is right) and
 * ConditionalRequestConflict (409, concurrent conditional writes on AWS), connection
 * resets, refused connections (a server restarting), timeouts and unreachable
 * networks. Never retried: every other 4xx (access denied, missing bucket or object,
 * failed precondition, bad request: sending the same request again cannot help),
 * BlobNotFoundError / BlobExistsError / BlobRangeError, invalid names, and DNS names
 * that do not resolve.
 *
 * An error may decide for itself with a boolean `retryable` property (S3Store sets it).
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

const TRANSIENT_ERRNO = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'EHOSTDOWN',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
]);

const TRANSIENT_S3_CODES = new Set([
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'TooManyRequests',
  'TooManyRequestsException',
  'RequestTimeout',
  'RequestTimeTooSkewed',
  'InternalError',
  'ServiceUnavailable',
  'BadDigest',
  'TimeoutError',
  'RequestTimeoutException',
  // AWS: concurrent conditional writes of one key; the retry then gets 412 or succeeds.
  'ConditionalRequestConflict',
  'OperationAborted',
]);

const NEVER_RETRY_CODES = new Set(['BLOB_NOT_FOUND', 'BLOB_EXISTS', 'BLOB_RANGE']);

/** HTTP status carried by an error from the AWS SDK, from S3Store, or from a test double. */
export function errorStatus(err: unknown): number | undefined {
  const e = err as { status?: unknown; statusCode?: unknown; $metadata?: { httpStatusCode?: unknown } };
  for (const v of [e?.status, e?.statusCode, e?.$metadata?.httpStatusCode]) {
    if (typeof v === 'number') return v;
  }
  return undefined;
}

/** errno-style code of the error or any error in its `cause` chain. */
export function errnoCode(err: unknown): string | undefined {
  let e = err as { code?: unknown; errno?: unknown; cause?: unknown } | undefined;
  for (let depth = 0; e && depth < 5; depth++) {
    if (typeof e.code === 'string' && /^E[A-Z_]+$|^UND_ERR/.test(e.code)) return e.code;
    e = e.cause as typeof e;
  }
  return undefined;
}

/** Whether sending the same request again may succeed. */
export function isTransientError(err: unknown): boolean {
  const e = err as { retryable?: unknown; code?: unknown; name?: unknown; Code?: unknown; message?: unknown };
  if (typeof e?.retryable === 'boolean') return e.retryable;
  if (typeof e?.code === 'string' && NEVER_RETRY_CODES.has(e.code)) return false;
  const errno = errnoCode(err);
  if (errno && TRANSIENT_ERRNO.has(errno)) return true;
  const s3code = [e?.Code, e?.name, e?.code].find((v) => typeof v === 'string') as string | undefined;
  if (s3code && TRANSIENT_S3_CODES.has(s3code)) return true;
  const status = errorStatus(err);
  if (status !== undefined) return status >= 500 || status === 429 || status === 408;
  // Node's HTTP client reports a dropped connection without an errno in some paths.
  if (typeof e?.message === 'string' && /socket hang up|other side closed|ECONNRESET/i.test(e.message)) return true;
  return false;
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
        const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1));
        const delayMs = Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
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
        const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1));
        const delayMs = Math.round(ceiling / 2 + (this.random() * ceiling) / 2);
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
