import { BlobInfo, BlobStore, ByteRange, PutOptions, StoreCapabilities } from './blob-store.js';

/**
 * TEST DOUBLE: a decorator that injects failures into any BlobStore, for tests of
 * retry and crash behaviour. Never used by the product itself.
 *
 *   const faulty = new FaultyStore(store);
 *   faulty.failNext('put', httpError(503, 'SlowDown'), 2);        // the next 2 puts fail
 *   faulty.failNext('get', netError('ECONNRESET'), 1, 'after');   // the get happens, its answer is lost
 *   faulty.setRule((op, name) => name.startsWith('locks/') ? httpError(403, 'AccessDenied') : undefined);
 *
 * `calls` counts the calls per operation (failed ones included).
 */
export type StoreOp = 'put' | 'get' | 'head' | 'list' | 'delete';

/** before: the operation does not reach the inner store. after: it does, then the caller sees the error. */
export type FaultTiming = 'before' | 'after';

export type FaultRule = (op: StoreOp, name: string, call: number) => Error | undefined;

interface Pending {
  error: Error;
  remaining: number;
  timing: FaultTiming;
}

/** An error shaped like an AWS SDK service error with an HTTP status. */
export function httpError(status: number, code: string, message = code): Error {
  const err = new Error(message) as Error & { Code: string; $metadata: { httpStatusCode: number } };
  err.name = code;
  err.Code = code;
  err.$metadata = { httpStatusCode: status };
  return err;
}

/** An error shaped like a Node.js socket error (`ECONNRESET`, `ECONNREFUSED`, `ETIMEDOUT`). */
export function netError(code: string, message = `${code} (injected)`): Error {
  const err = new Error(message) as NodeJS.ErrnoException;
  err.code = code;
  return err;
}

export class FaultyStore implements BlobStore {
  readonly location: string;
  readonly calls: Record<StoreOp, number> = { put: 0, get: 0, head: 0, list: 0, delete: 0 };
  private readonly pending: Record<StoreOp, Pending[]> = { put: [], get: [], head: [], list: [], delete: [] };
  private rule?: FaultRule;

  constructor(readonly inner: BlobStore) {
    this.location = inner.location;
  }

  get capabilities(): StoreCapabilities {
    return this.inner.capabilities;
  }

  /** The next `times` calls of `op` fail with `error`. */
  failNext(op: StoreOp, error: Error, times = 1, timing: FaultTiming = 'before'): this {
    this.pending[op].push({ error, remaining: times, timing });
    return this;
  }

  /** A rule consulted on every call (after failNext); returning an error fails the call before it runs. */
  setRule(rule: FaultRule | undefined): this {
    this.rule = rule;
    return this;
  }

  /** Drops all pending faults and the rule. */
  heal(): this {
    for (const q of Object.values(this.pending)) q.length = 0;
    this.rule = undefined;
    return this;
  }

  private fault(op: StoreOp, name: string): { error: Error; timing: FaultTiming } | undefined {
    const call = ++this.calls[op];
    const q = this.pending[op];
    if (q.length > 0) {
      const p = q[0];
      if (--p.remaining <= 0) q.shift();
      return { error: p.error, timing: p.timing };
    }
    const error = this.rule?.(op, name, call);
    return error ? { error, timing: 'before' } : undefined;
  }

  private async run<T>(op: StoreOp, name: string, fn: () => Promise<T>): Promise<T> {
    const f = this.fault(op, name);
    if (f?.timing === 'before') throw f.error;
    const v = await fn();
    if (f) throw f.error;
    return v;
  }

  put(name: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    return this.run('put', name, () => this.inner.put(name, data, options));
  }

  get(name: string, range?: ByteRange): Promise<Buffer> {
    return this.run('get', name, () => this.inner.get(name, range));
  }

  head(name: string): Promise<BlobInfo | null> {
    return this.run('head', name, () => this.inner.head(name));
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    const f = this.fault('list', prefix);
    if (f?.timing === 'before') throw f.error;
    let n = 0;
    for await (const info of this.inner.list(prefix)) {
      yield info;
      // 'after': the listing breaks after its first item, as a connection cut mid-listing would.
      if (f && ++n === 1) throw f.error;
    }
    if (f) throw f.error;
  }

  delete(name: string): Promise<void> {
    return this.run('delete', name, () => this.inner.delete(name));
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
