import { AppendingPut, BlobInfo, BlobStore, ByteRange, ObjectLockControl, PutOptions, StoreCapabilities, withCommit } from './blob-store.js';

/**
 * Request accounting, so that users can estimate their bill: how many requests of
 * each billing class went out and how many bytes moved.
 *
 * Two ways of counting, chosen per wrapped store:
 * - A store that speaks a wire protocol (S3Store, found through any decorators
 *   between it and this one) reports every HTTP request it sends,
 *   retries and multipart parts included, through `addRequestListener`; MeteredStore
 *   then counts exactly those (a 48 MiB multipart put is CreateMultipartUpload +
 *   3 UploadPart + CompleteMultipartUpload (+ a HeadObject on RGW) = 4 PUT-class
 *   requests + 1 HEAD, not one "put").
 * - Any other store (FsStore) is counted per BlobStore call: one put = one PUT, one
 *   list = one LIST, and so on.
 *
 * `metrics()` returns a plain JSON-able snapshot; the engine puts it into
 * `backup --json` / `stats --json` as `requests`.
 */
export type RequestClass = 'put' | 'get' | 'head' | 'list' | 'delete';

export interface WireRequest {
  /** The billing class: S3 bills PUT, COPY, POST, LIST as one tier, GET and HEAD as another. */
  kind: RequestClass;
  /** Protocol operation, e.g. `PutObject`, `UploadPart`, `ListObjectsV2`. */
  operation: string;
  bytesUp: number;
  bytesDown: number;
  /** False when the request failed (error status or no response). */
  ok: boolean;
  status?: number;
}

/** Implemented by stores that report each request they send. */
export interface RequestReporter {
  addRequestListener(listener: (req: WireRequest) => void): void;
}

export function isRequestReporter(store: unknown): store is RequestReporter {
  return typeof (store as RequestReporter)?.addRequestListener === 'function';
}

/** The first store down a chain of decorators (each with an `inner`) that reports its requests. */
export function findRequestReporter(store: BlobStore): RequestReporter | undefined {
  let s: unknown = store;
  for (let depth = 0; s && depth < 16; depth++) {
    if (isRequestReporter(s)) return s;
    s = (s as { inner?: unknown }).inner;
  }
  return undefined;
}

export interface StoreMetrics {
  /** Requests sent, per billing class. */
  put: number;
  get: number;
  head: number;
  list: number;
  delete: number;
  total: number;
  /** Of those, how many failed (an error answer, or no answer). */
  failed: number;
  /** Retries made by a RetryingStore reporting into this meter. */
  retries: number;
  /** Body bytes sent and received. */
  bytesUp: number;
  bytesDown: number;
  /** Requests per protocol operation (`PutObject`, `UploadPart`, ...), when the store reports them. */
  operations: Record<string, number>;
  /** 'wire' when counted per HTTP request, 'call' when counted per BlobStore call. */
  countedPer: 'wire' | 'call';
}

export function emptyMetrics(countedPer: 'wire' | 'call' = 'call'): StoreMetrics {
  return {
    put: 0,
    get: 0,
    head: 0,
    list: 0,
    delete: 0,
    total: 0,
    failed: 0,
    retries: 0,
    bytesUp: 0,
    bytesDown: 0,
    operations: {},
    countedPer,
  };
}

/** The metrics of a store returned by openStore (or any MeteredStore), else undefined. */
export function storeMetrics(store: BlobStore): StoreMetrics | undefined {
  const m = (store as { metrics?: unknown }).metrics;
  return typeof m === 'function' ? (m.call(store) as StoreMetrics) : undefined;
}

export class MeteredStore implements BlobStore {
  readonly location: string;
  private readonly wire: boolean;
  private m: StoreMetrics;

  /** Passed through when the inner store has it; the commit counts as one put of all the bytes. */
  readonly openAppend?: (near: string) => Promise<AppendingPut>;

  constructor(readonly inner: BlobStore) {
    this.location = inner.location;
    if (inner.openAppend) {
      const open = inner.openAppend.bind(inner);
      this.openAppend = async (near) => {
        const a = await open(near);
        return withCommit(a, (run) => this.count('put', 'put', a.size, run, () => 0));
      };
    }
    const reporter = findRequestReporter(inner);
    this.wire = reporter !== undefined;
    this.m = emptyMetrics(this.wire ? 'wire' : 'call');
    reporter?.addRequestListener((r) => this.record(r));
  }

  get capabilities(): StoreCapabilities {
    return this.inner.capabilities;
  }

  /** Passed through: its requests are counted on the wire (S3 reports every request). */
  get objectLock(): ObjectLockControl | undefined {
    return this.inner.objectLock;
  }

  /** A snapshot (a copy): later requests do not change it. */
  metrics(): StoreMetrics {
    return { ...this.m, operations: { ...this.m.operations } };
  }

  /** Counts one retry (wired to RetryingStore's onRetry by openStore). */
  noteRetry(): void {
    this.m.retries++;
  }

  resetMetrics(): void {
    this.m = emptyMetrics(this.m.countedPer);
  }

  record(r: WireRequest): void {
    this.m[r.kind]++;
    this.m.total++;
    if (!r.ok) this.m.failed++;
    this.m.bytesUp += r.bytesUp;
    this.m.bytesDown += r.bytesDown;
    this.m.operations[r.operation] = (this.m.operations[r.operation] ?? 0) + 1;
  }

  private async count<T>(kind: RequestClass, operation: string, up: number, fn: () => Promise<T>, down: (v: T) => number): Promise<T> {
    if (this.wire) return fn();
    try {
      const v = await fn();
      this.record({ kind, operation, bytesUp: up, bytesDown: down(v), ok: true });
      return v;
    } catch (err) {
      this.record({ kind, operation, bytesUp: up, bytesDown: 0, ok: false });
      throw err;
    }
  }

  put(name: string, data: Uint8Array, options?: PutOptions): Promise<void> {
    return this.count('put', 'put', data.byteLength, () => this.inner.put(name, data, options), () => 0);
  }

  get(name: string, range?: ByteRange): Promise<Buffer> {
    return this.count('get', 'get', 0, () => this.inner.get(name, range), (b) => b.length);
  }

  head(name: string): Promise<BlobInfo | null> {
    return this.count('head', 'head', 0, () => this.inner.head(name), () => 0);
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    if (this.wire) {
      yield* this.inner.list(prefix);
      return;
    }
    let ok = false;
    try {
      yield* this.inner.list(prefix);
      ok = true;
    } finally {
      this.record({ kind: 'list', operation: 'list', bytesUp: 0, bytesDown: 0, ok });
    }
  }

  delete(name: string): Promise<void> {
    return this.count('delete', 'delete', 0, () => this.inner.delete(name), () => 0);
  }

  /** Deletes many objects: one batch call when the inner store has one (S3 DeleteObjects), else one delete each. */
  async deleteMany(names: string[]): Promise<void> {
    const batch = (this.inner as { deleteMany?: (n: string[]) => Promise<void> }).deleteMany;
    if (typeof batch === 'function') {
      await this.count('delete', 'deleteMany', 0, () => batch.call(this.inner, names), () => 0);
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
