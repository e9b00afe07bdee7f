/**
 * The cloud paths retry with the one policy of src/store/retry.ts (the same classification
 * of transient errors and the same backoff as the repository's stores); only the budget
 * differs: EBS direct APIs throttle by design, so they get more attempts and longer waits.
 */
import { RetryPolicy } from '../store/retry.js';

export { isThrottle, isTransientError as isRetryable, withRetry } from '../store/retry.js';
export type { RetryPolicy } from '../store/retry.js';

export const DEFAULT_RETRY: RetryPolicy = { attempts: 8, baseDelayMs: 100, maxDelayMs: 20_000 };
