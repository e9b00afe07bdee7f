/**
 * The one retry policy of pilotlight: which errors are transient, and how long to wait
 * before the next attempt. The repository's stores (RetryingStore), the cloud paths
 * (EBS direct APIs, EC2, S3 image uploads) and the service's job retries all use it.
 *
 * Transient (retried): HTTP 5xx (including 503 SlowDown), 429, 408, throttling codes
 * (S3 SlowDown, EBS/EC2 RequestThrottledException, RequestLimitExceeded, ...), the S3
 * error codes RequestTimeout / InternalError / BadDigest (the body was damaged on the
 * way; the bytes in memory are fine, so sending them again is right) and
 * ConditionalRequestConflict (409, concurrent conditional writes on AWS), connection
 * resets, refused connections (a server restarting), timeouts and unreachable
 * networks, and AWS SDK errors marked `$retryable`. Never retried: every other 4xx
 * (access denied, missing bucket or object, failed precondition, bad request: sending
 * the same request again cannot help), BlobNotFoundError / BlobExistsError /
 * BlobRangeError, an aborted operation, and DNS names that do not resolve (ENOTFOUND:
 * a typo in an endpoint does not heal; EAI_AGAIN, a resolver that is down, does).
 *
 * An error may decide for itself with a boolean `retryable` property (S3Store sets it).
 *
 * Backoff is "equal jitter": delay = c/2 + random(0, c/2), c = min(maxDelay,
 * baseDelay * 2^(attempt-1)). Half of each delay is fixed so that the retries of one
 * operation always span at least half the exponential sum, the random half spreads
 * clients apart.
 */
export interface RetryPolicy {
  /** Total attempts, the first one included. */
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
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

const TRANSIENT_CODES = new Set([
  // S3
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
  // EBS direct APIs and EC2
  'RequestThrottledException',
  'ThrottledException',
  'RequestLimitExceeded',
  'ConcurrentLimitExceededException',
  'InternalServerException',
  'InternalFailure',
  'ServiceUnavailableException',
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
  const e = err as { retryable?: unknown; code?: unknown; name?: unknown; Code?: unknown; message?: unknown; $retryable?: unknown };
  if (!e) return false;
  if (e.name === 'AbortError') return false;
  if (typeof e.retryable === 'boolean') return e.retryable;
  if (typeof e.code === 'string' && NEVER_RETRY_CODES.has(e.code)) return false;
  const errno = errnoCode(err);
  if (errno === 'ENOTFOUND') return false;
  if (errno && TRANSIENT_ERRNO.has(errno)) return true;
  const code = [e.Code, e.name, e.code].find((v) => typeof v === 'string' && TRANSIENT_CODES.has(v));
  if (code) return true;
  const status = errorStatus(err);
  if (status !== undefined) return status >= 500 || status === 429 || status === 408;
  if (e.$retryable) return true;
  // Node's HTTP client reports a dropped connection without an errno in some paths.
  if (typeof e.message === 'string' && /socket hang up|other side closed|ECONNRESET/i.test(e.message)) return true;
  return false;
}

/** A throttling answer (counted apart by the EBS push, which slows down on them). */
export function isThrottle(err: unknown): boolean {
  const name = (err as { name?: string })?.name ?? '';
  return /Throttl|RequestLimitExceeded|SlowDown|ConcurrentLimitExceeded|TooManyRequests/.test(name);
}

/** The wait before attempt `attempt + 1` (equal jitter). */
export function backoffDelay(policy: Omit<RetryPolicy, 'attempts'>, attempt: number, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

export interface RetryHooks {
  signal?: AbortSignal;
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  /** Replaces setTimeout-based sleeping (tests). */
  sleep?: (ms: number) => Promise<void>;
  /** Replaces Math.random (tests). */
  random?: () => number;
  /** Replaces isTransientError (e.g. the service retries a whole job on any error but a user error). */
  retryable?: (err: unknown) => boolean;
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Runs fn until it succeeds, fails with a permanent error, or runs out of attempts. */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, policy: RetryPolicy, hooks: RetryHooks = {}): Promise<T> {
  const retryable = hooks.retryable ?? isTransientError;
  for (let attempt = 1; ; attempt++) {
    hooks.signal?.throwIfAborted();
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= policy.attempts || !retryable(err) || hooks.signal?.aborted) throw err;
      const delay = backoffDelay(policy, attempt, hooks.random);
      hooks.onRetry?.(err, attempt, delay);
      await (hooks.sleep ? hooks.sleep(delay) : sleep(delay, hooks.signal));
    }
  }
}
