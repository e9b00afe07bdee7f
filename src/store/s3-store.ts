import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import {
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  GetObjectLockConfigurationCommand,
  GetObjectRetentionCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectVersionsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  PutObjectRetentionCommand,
  S3Client,
  StorageClass,
} from '@aws-sdk/client-s3';
import {
  AppendingPut,
  BlobExistsError,
  BlobInfo,
  BlobLockedError,
  BlobNotFoundError,
  BlobRangeError,
  BlobStore,
  ByteRange,
  ObjectLockControl,
  ObjectLockSettings,
  PutOptions,
  StoreCapabilities,
  checkBlobName,
} from './blob-store.js';
import { HeapGrowthPacer } from '../runtime/gc-pacer.js';
import { RequestClass, RequestReporter, WireRequest } from './metered-store.js';
import { errnoCode, errorStatus, isTransientError } from './retry.js';
import { AppendFile } from './append-file.js';
import { pidAlive } from './fs-store.js';
import { MultipartUpload } from './multipart-upload.js';
import { createS3Client } from './s3-client.js';
import { checkPackStorageClass } from './storage-class.js';

// The SDK warns on every start under Node 20 that its releases after January 2027 will
// need Node 22. That is for whoever bumps the pinned SDK version, not for users of the
// CLI: keep it out of their stderr unless they asked for it.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const MiB = 1024 * 1024;
/** S3's limits: parts of 5 MiB..5 GiB (the last may be smaller), at most 10,000 of them. */
const MIN_PART = 5 * MiB;
const MAX_PARTS = 10_000;
const MAX_SINGLE_PUT = 5 * 1024 * MiB;

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix inside the bucket, `''` or without leading slash; a trailing `/` is added. */
  prefix?: string;
  /** A ready client (then endpoint/region/credentials/forcePathStyle are ignored). */
  client?: S3Client;
  /** `http://127.0.0.1:7480` for an S3-compatible server; unset for AWS. */
  endpoint?: string;
  region?: string;
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Path-style addressing (`endpoint/bucket/key`); defaults to true when an endpoint is given. */
  forcePathStyle?: boolean;
  /** Storage class for puts with `kind: 'data'` (e.g. STANDARD_IA, GLACIER_IR); others stay STANDARD. */
  storageClass?: string;
  /** Objects larger than this go up as multipart uploads. Default 32 MiB. */
  multipartThreshold?: number;
  /** Part size of multipart uploads (at least 5 MiB). Default 16 MiB. */
  partSize?: number;
  /** Parts of one multipart upload sent in parallel. Default 4. */
  partConcurrency?: number;
  /** Connections kept per host, all operations together. Default 64. */
  maxSockets?: number;
  /**
   * Whether the server honours `If-None-Match: *` on PUT atomically. Unset: the server is
   * probed (probeConditionalPut) before the first put with ifNotExists, and
   * `capabilities.conditionalPut` is false until then.
   */
  conditionalPut?: boolean;
  /** Milliseconds to establish a connection. Default 10 s. */
  connectTimeoutMs?: number;
  /** Milliseconds a request may go without sending or receiving a byte. Default 60 s. */
  idleTimeoutMs?: number;
  /** Milliseconds one request may take in total. Default 15 min. */
  requestTimeoutMs?: number;
  /** Directory of the spool files of puts in pieces (openAppend). Default: $PILOTLIGHT_SPOOL_DIR, else the system's temporary directory. */
  spoolDir?: string;
}

/** An S3 failure translated into something a user can act on. */
export class S3StoreError extends Error {
  constructor(
    message: string,
    /**
     * S3_NO_SUCH_BUCKET, S3_ACCESS_DENIED, S3_NO_CREDENTIALS, S3_NO_REGION, S3_WRONG_REGION,
     * S3_ENDPOINT_NOT_FOUND, S3_UNREACHABLE, S3_NETWORK, S3_SERVER_ERROR, S3_INTEGRITY, S3_ARCHIVED, S3_ERROR
     */
    readonly code: string,
    readonly retryable: boolean,
    readonly status?: number,
    /** The error code the server gave (`NoSuchBucket`, `SlowDown`, ...) or the errno. */
    readonly s3Code?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'S3StoreError';
  }
}

function md5(data: Uint8Array): Buffer {
  return createHash('md5').update(data).digest();
}

/** What a put sends: its length, its MD5, a fresh stream of it for each attempt, and its byte ranges (multipart parts). */
interface PutBody {
  size: number;
  md5(): Buffer;
  stream(): Buffer | Readable;
  part(start: number, end: number): Promise<Buffer>;
}

/** Spool files of openAppend: `pilotlight-spool-<pid>-<random>` in the spool directory. */
const SPOOL_PREFIX = 'pilotlight-spool-';
const SPOOL_NAME = new RegExp(`^${SPOOL_PREFIX}([0-9]+)-[0-9a-f]+$`);

/** Removes the spool files of processes of this host that are gone (the spool directory is local). */
async function sweepSpools(dir: string): Promise<void> {
  for (const name of await fsp.readdir(dir)) {
    const m = SPOOL_NAME.exec(name);
    if (m && !pidAlive(Number(m[1]))) await fsp.rm(path.join(dir, name), { force: true });
  }
}

function bufferBody(body: Buffer): PutBody {
  return { size: body.length, md5: () => md5(body), stream: () => body, part: async (start, end) => body.subarray(start, end) };
}

function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/**
 * Copies a ranged GET's body into `into` as it arrives (no buffer of its own, no
 * concatenation: a restore reuses a few read buffers instead of faulting in a new
 * one per GET); returns the view of what arrived. More than `length` bytes is an
 * integrity failure (retryable), and the stream is destroyed so the socket is freed.
 */
async function readBodyInto(body: AsyncIterable<Uint8Array> & { destroy?(): void }, into: Uint8Array, length: number, key: string): Promise<Buffer> {
  let at = 0;
  try {
    for await (const piece of body) {
      if (at + piece.length > length) throw new S3StoreError(`GetObject ${key} returned more than the ${length} bytes asked for`, 'S3_INTEGRITY', true);
      into.set(piece, at);
      at += piece.length;
    }
  } catch (err) {
    body.destroy?.();
    throw err;
  }
  return Buffer.from(into.buffer, into.byteOffset, at);
}

function s3ErrorCode(err: unknown): string | undefined {
  const e = err as { Code?: unknown; name?: unknown };
  if (typeof e?.Code === 'string') return e.Code;
  if (typeof e?.name === 'string' && e.name !== 'Error' && !e.name.endsWith('ServiceException')) return e.name;
  return undefined;
}

const OPERATION_CLASS: Record<string, RequestClass> = {
  PutObject: 'put',
  CreateMultipartUpload: 'put',
  UploadPart: 'put',
  CompleteMultipartUpload: 'put',
  GetObject: 'get',
  HeadObject: 'head',
  HeadBucket: 'head',
  ListObjectsV2: 'list',
  ListObjectVersions: 'list',
  GetObjectLockConfiguration: 'get',
  GetObjectRetention: 'get',
  PutObjectRetention: 'put',
  ListParts: 'list',
  ListMultipartUploads: 'list',
  DeleteObject: 'delete',
  DeleteObjects: 'delete',
  AbortMultipartUpload: 'delete',
};

/**
 * A bucket (and key prefix) of Amazon S3 or an S3-compatible service (tested against
 * Ceph RADOS Gateway 16.2). Object `name` is stored under key `prefix + name`.
 *
 * - put: one PutObject up to `multipartThreshold`, else a multipart upload whose parts
 *   go up `partConcurrency` at a time. Every PutObject/UploadPart carries Content-MD5,
 *   computed here (the SDK's own flexible checksums are switched off with
 *   `WHEN_REQUIRED`: several S3-compatible servers reject or mishandle them). After
 *   CompleteMultipartUpload the object's ETag is checked against the MD5s of the parts
 *   (RGW returns an empty ETag from Complete, so it is read with HeadObject then).
 *   A failed multipart upload is aborted; S3 never lists incomplete uploads, so a put
 *   is atomic either way.
 * - put with ifNotExists: `If-None-Match: *` (412 -> BlobExistsError) when the server
 *   honours it (probed once, before the first such put), else HEAD then PUT (not
 *   atomic against a concurrent writer: `capabilities.conditionalPut` is false then).
 *   Always a single PutObject (<= 5 GiB).
 * - get: GetObject, with `Range` for a range; a short answer is BlobRangeError. A range
 *   with `into` is copied into that buffer as the body arrives (readsInto).
 * - list: ListObjectsV2, page by page; keys that are not valid blob names (folder
 *   markers, `.tmp-` probe objects) are skipped.
 * - delete: DeleteObject; deleteMany: DeleteObjects, 1,000 keys a request, Content-MD5.
 * - checkBucket: HeadBucket, so that a missing bucket is reported before anything else.
 * - The client's own retries are off (maxAttempts 1): RetryingStore retries, so that
 *   every attempt is visible to it and to the request meter.
 */
export class S3Store implements BlobStore, RequestReporter {
  readonly location: string;
  readonly bucket: string;
  readonly prefix: string;
  readonly client: S3Client;
  private readonly caps: StoreCapabilities;
  private readonly autoProbe: boolean;
  private probing?: Promise<boolean>;
  private readonly ownsClient: boolean;
  private readonly storageClass?: string;
  private readonly multipartThreshold: number;
  private readonly partSize: number;
  private readonly partConcurrency: number;
  private readonly spoolDir: string;
  private spoolSwept = false;
  private readonly endpointText: string;
  private readonly listeners: ((r: WireRequest) => void)[] = [];
  /** The SDK's per-request objects are promoted garbage: bounded by a collection when the heap has grown (gc-pacer.ts). */
  private readonly heapPacer = new HeapGrowthPacer();
  private lock?: ObjectLockSettings;
  /** Object Lock retention (see ObjectLockControl and docs/FORMAT.md, "Object Lock"). */
  readonly objectLock: ObjectLockControl;

  constructor(options: S3StoreOptions) {
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(options.bucket)) {
      throw new S3StoreError(
        `invalid bucket name ${JSON.stringify(options.bucket)}: S3 bucket names are 3-63 characters of a-z, 0-9, '.' and '-'`,
        'S3_INVALID_BUCKET',
        false,
      );
    }
    this.bucket = options.bucket;
    let prefix = (options.prefix ?? '').replace(/^\/+/, '');
    if (prefix && !prefix.endsWith('/')) prefix += '/';
    this.prefix = prefix;
    this.location = `s3://${this.bucket}/${prefix}`;
    this.caps = { conditionalPut: options.conditionalPut ?? false, readsInto: true };
    this.autoProbe = options.conditionalPut === undefined;
    if (options.storageClass) checkPackStorageClass(options.storageClass);
    this.storageClass = options.storageClass;
    this.multipartThreshold = options.multipartThreshold ?? 32 * MiB;
    this.partSize = Math.max(MIN_PART, options.partSize ?? 16 * MiB);
    this.partConcurrency = Math.max(1, options.partConcurrency ?? 4);
    this.spoolDir = options.spoolDir ?? (process.env.PILOTLIGHT_SPOOL_DIR || os.tmpdir());
    this.endpointText = options.endpoint ?? (options.client ? 'the S3 endpoint' : `AWS S3${options.region ? ` (${options.region})` : ''}`);
    if (options.client) {
      this.client = options.client;
      this.ownsClient = false;
    } else {
      const maxSockets = options.maxSockets ?? 64;
      // the store retries itself (RetryingStore), so the SDK does not (maxAttempts 1)
      this.client = createS3Client({
        endpoint: options.endpoint,
        region: options.region,
        credentials: options.credentials,
        forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
        maxAttempts: 1,
        maxSockets: options.maxSockets ?? 64,
        connectTimeoutMs: options.connectTimeoutMs,
        idleTimeoutMs: options.idleTimeoutMs,
        requestTimeoutMs: options.requestTimeoutMs,
      });
      this.ownsClient = true;
    }
    this.installMeter();
    const store = this;
    this.objectLock = {
      bucketLockEnabled: () => this.bucketLockEnabled(),
      configure: (settings) => {
        this.lock = settings;
      },
      get settings() {
        return store.lock;
      },
      retainUntil: (name) => this.retainUntil(name),
      extend: (name, until) => this.extendRetention(name, until),
    };
  }

  private async bucketLockEnabled(): Promise<boolean> {
    try {
      const out = await this.client.send(new GetObjectLockConfigurationCommand({ Bucket: this.bucket }));
      return out.ObjectLockConfiguration?.ObjectLockEnabled === 'Enabled';
    } catch (err) {
      const code = s3ErrorCode(err);
      if (code === 'ObjectLockConfigurationNotFoundError' || code === 'ObjectLockConfigurationNotFound') return false;
      throw this.translate(err, `GetObjectLockConfiguration ${this.bucket}`);
    }
  }

  /** Object Lock headers for a put of `name`: none unless configured and it applies. */
  private lockFields(name: string): { ObjectLockMode?: 'COMPLIANCE' | 'GOVERNANCE'; ObjectLockRetainUntilDate?: Date } {
    if (!this.lock || !this.lock.appliesTo(name)) return {};
    return { ObjectLockMode: this.lock.mode, ObjectLockRetainUntilDate: new Date(Date.now() + this.lock.periodMs) };
  }

  private async retainUntil(name: string): Promise<Date | null> {
    const key = this.key(name);
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return out.ObjectLockRetainUntilDate ? new Date(out.ObjectLockRetainUntilDate) : null;
    } catch (err) {
      if (errorStatus(err) === 404 || s3ErrorCode(err) === 'NotFound') throw new BlobNotFoundError(name, this.location);
      throw this.translate(err, `HeadObject ${key}`);
    }
  }

  private async extendRetention(name: string, until: Date): Promise<void> {
    const key = this.key(name);
    await this.send(
      new PutObjectRetentionCommand({ Bucket: this.bucket, Key: key, Retention: { Mode: this.lock?.mode ?? 'COMPLIANCE', RetainUntilDate: until } }),
      `PutObjectRetention ${key}`,
    );
  }

  /** Every version and delete marker of exactly `key`. */
  private async versionsOf(key: string): Promise<{ versions: string[]; markers: string[] }> {
    const versions: string[] = [];
    const markers: string[] = [];
    let keyMarker: string | undefined;
    let versionMarker: string | undefined;
    for (;;) {
      const page = await this.send<{
        Versions?: { Key?: string; VersionId?: string }[];
        DeleteMarkers?: { Key?: string; VersionId?: string }[];
        IsTruncated?: boolean;
        NextKeyMarker?: string;
        NextVersionIdMarker?: string;
      }>(
        new ListObjectVersionsCommand({ Bucket: this.bucket, Prefix: key, KeyMarker: keyMarker, VersionIdMarker: versionMarker, MaxKeys: 1000 }),
        `ListObjectVersions ${key}`,
      );
      for (const v of page.Versions ?? []) if (v.Key === key && v.VersionId) versions.push(v.VersionId);
      for (const m of page.DeleteMarkers ?? []) if (m.Key === key && m.VersionId) markers.push(m.VersionId);
      if (!page.IsTruncated) return { versions, markers };
      if (!page.NextKeyMarker || page.NextKeyMarker > key) return { versions, markers };
      keyMarker = page.NextKeyMarker;
      versionMarker = page.NextVersionIdMarker;
    }
  }

  /**
   * Delete under Object Lock: every version of the key, then its delete markers, so that
   * the space is really freed. A retained version fails the delete (AccessDenied "forbidden
   * by object lock"): BlobLockedError with its date, and the object stays readable.
   */
  private async deleteAllVersions(name: string): Promise<void> {
    const key = this.key(name);
    const { versions, markers } = await this.versionsOf(key);
    for (const versionId of versions) {
      try {
        await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key, VersionId: versionId }));
      } catch (err) {
        if (s3ErrorCode(err) === 'NoSuchKey' || s3ErrorCode(err) === 'NoSuchVersion') continue;
        if (errorStatus(err) === 403 || s3ErrorCode(err) === 'AccessDenied') {
          const r = await this.client.send(new GetObjectRetentionCommand({ Bucket: this.bucket, Key: key, VersionId: versionId })).catch(() => undefined);
          const until = r?.Retention?.RetainUntilDate ? new Date(r.Retention.RetainUntilDate) : null;
          if (until || /object lock/i.test(String((err as Error)?.message))) throw new BlobLockedError(name, this.location, until);
        }
        throw this.translate(err, `DeleteObject ${key} version ${versionId}`);
      }
    }
    for (const versionId of markers) {
      await this.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key, VersionId: versionId }), `DeleteObject ${key} (delete marker)`);
    }
  }

  get capabilities(): StoreCapabilities {
    return this.caps;
  }

  addRequestListener(listener: (req: WireRequest) => void): void {
    this.listeners.push(listener);
  }

  /** Reports every HTTP request the client sends (after signing, one per attempt). */
  private installMeter(): void {
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        const operation = String((context as { commandName?: string }).commandName ?? 'Unknown').replace(/Command$/, '');
        const kind = OPERATION_CLASS[operation] ?? 'get';
        const headers = (args.request as { headers?: Record<string, string> })?.headers ?? {};
        const bytesUp = Number(headers['content-length'] ?? headers['Content-Length'] ?? 0) || 0;
        try {
          const out = await next(args);
          const res = out.response as { statusCode?: number; headers?: Record<string, string> };
          const bytesDown = kind === 'head' ? 0 : Number(res?.headers?.['content-length'] ?? 0) || 0;
          this.emit({ kind, operation, bytesUp, bytesDown, ok: true, status: res?.statusCode });
          return out;
        } catch (err) {
          this.emit({ kind, operation, bytesUp, bytesDown: 0, ok: false, status: errorStatus(err) });
          throw err;
        }
      },
      { step: 'finalizeRequest', priority: 'low', name: 'pilotlightRequestMeter' },
    );
  }

  private emit(r: WireRequest): void {
    this.heapPacer.tick();
    for (const l of this.listeners) {
      try {
        l(r);
      } catch {
        // a broken listener must not fail requests
      }
    }
  }

  key(name: string): string {
    checkBlobName(name);
    return this.prefix + name;
  }

  /** Sends a command and turns its failure into an S3StoreError that says what to do. */
  private async send<T>(command: { input: unknown }, what: string): Promise<T> {
    try {
      return (await this.client.send(command as never)) as T;
    } catch (err) {
      throw this.translate(err, what);
    }
  }

  /** Exposed for tests and for openStore's messages. */
  translate(err: unknown, what: string): Error {
    if (err instanceof S3StoreError) return err;
    const status = errorStatus(err);
    const code = s3ErrorCode(err);
    const errno = errnoCode(err);
    const where = this.endpointText;
    const serverSaid = `${code ?? `HTTP ${status ?? '?'}`}${(err as Error)?.message && (err as Error).message !== code ? `: ${(err as Error).message}` : ''}`;
    const make = (message: string, c: string, retryable: boolean) =>
      new S3StoreError(message, c, retryable, status, code ?? errno, { cause: err });

    const msg = String((err as Error)?.message ?? '');
    if ((err as Error)?.name === 'CredentialsProviderError' || /Could not load credentials/i.test(msg)) {
      return make(
        `no AWS credentials found for ${where} (${what}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an instance role is available`,
        'S3_NO_CREDENTIALS',
        false,
      );
    }
    if (/Region is missing/i.test(msg)) {
      return make(
        `no AWS region configured (${what}): set AWS_REGION (for example AWS_REGION=eu-west-1) to the bucket's region, or give --s3-endpoint for an S3-compatible service`,
        'S3_NO_REGION',
        false,
      );
    }
    if (code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed' || status === 301) {
      return make(
        `bucket "${this.bucket}" is in another region than the one configured (${what}): set AWS_REGION to the bucket's region`,
        'S3_WRONG_REGION',
        false,
      );
    }
    if (code === 'NoSuchBucket') {
      return make(
        `bucket "${this.bucket}" does not exist at ${where} (${what}): create it first (for example \`aws s3 mb s3://${this.bucket}\`), or fix the bucket name in --repo`,
        'S3_NO_SUCH_BUCKET',
        false,
      );
    }
    if (code === 'InvalidObjectState') {
      return make(
        `${what}: the object is in an archive storage class (a bucket lifecycle rule may have moved it there) and cannot be read without a restore request: ` +
          `restore it first (aws s3api restore-object), and make the rule use GLACIER_IR or STANDARD_IA for ${this.prefix}data/`,
        'S3_ARCHIVED',
        false,
      );
    }
    if (code === 'InvalidAccessKeyId' || code === 'SignatureDoesNotMatch') {
      return make(
        `${where} refused the credentials (${code}) for ${what}: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and that --s3-endpoint is the service these keys belong to`,
        'S3_ACCESS_DENIED',
        false,
      );
    }
    if (code === 'AccessDenied' || code === 'AllAccessDisabled' || status === 403) {
      return make(
        `access denied by ${where} for ${what}: the credentials in use may not ${/put|upload|delete/i.test(what) ? 'write to' : 'read'} s3://${this.bucket}/${this.prefix}; check the IAM or bucket policy and the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID)`,
        'S3_ACCESS_DENIED',
        false,
      );
    }
    if (errno === 'ENOTFOUND') {
      return make(
        `cannot resolve the host of ${where} (${what}): check --s3-endpoint / AWS_ENDPOINT_URL_S3 and the DNS`,
        'S3_ENDPOINT_NOT_FOUND',
        false,
      );
    }
    if (errno === 'ECONNREFUSED') {
      return make(
        `connection to ${where} refused (${what}): no S3 server listens there; check that it is running and that --s3-endpoint / AWS_ENDPOINT_URL_S3 is right. Anything already uploaded stays valid: run the command again once the server is up`,
        'S3_UNREACHABLE',
        true,
      );
    }
    const timedOut = (err as Error)?.name === 'TimeoutError' || errno === 'ETIMEDOUT';
    if (timedOut || (errno && /^E(NET|HOST)(UNREACH|DOWN)$|^EAI_AGAIN$/.test(errno))) {
      return make(
        `cannot reach ${where} (${errno ?? 'timed out'}, ${what}): the network is down or the endpoint is wrong. Anything already uploaded stays valid: run the command again when the network is back`,
        'S3_NETWORK',
        true,
      );
    }
    if (errno === 'ECONNRESET' || errno === 'EPIPE' || /socket hang up|other side closed/i.test((err as Error)?.message ?? '')) {
      return make(
        `the connection to ${where} was cut during ${what} (${errno ?? 'socket hang up'}). Anything already uploaded stays valid: run the command again`,
        'S3_NETWORK',
        true,
      );
    }
    if (status !== undefined && (status >= 500 || status === 429 || code === 'SlowDown')) {
      return make(
        `${where} failed ${what} with ${serverSaid}: the server is overloaded or failing; try again later`,
        'S3_SERVER_ERROR',
        true,
      );
    }
    return make(`${where} refused ${what}: ${serverSaid}`, 'S3_ERROR', isTransientError(err));
  }

  async put(name: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    await this.putBody(name, bufferBody(toBuffer(data)), options);
  }

  /**
   * A put in pieces, spooled to a local file (in `spoolDir`, mode 0600, sealed bytes
   * only) as they come, then sent from it when committed: a PUT of the whole file, or a
   * multipart upload of its parts over `multipartThreshold`. The pack's name, its hash,
   * is known only at the end, so nothing can be sent earlier. Memory: the parts in
   * flight of a multipart upload, none for a PUT. A commit that failed can be tried
   * again (RetryingStore does): the spool stays until a commit succeeds or the put is
   * aborted. Spools of dead processes are removed by the first openAppend of a process.
   */
  async openAppend(_near: string): Promise<AppendingPut> {
    if (!this.spoolSwept) {
      this.spoolSwept = true;
      await sweepSpools(this.spoolDir).catch(() => {}); // housekeeping: never fails a put
    }
    const file = await AppendFile.create(path.join(this.spoolDir, `${SPOOL_PREFIX}${process.pid}-${randomBytes(8).toString('hex')}`));
    const hash = createHash('md5');
    let digest: Buffer | null = null;
    let state: 'open' | 'committed' | 'aborted' = 'open';
    return {
      get size() {
        return file.size;
      },
      append: async (parts) => {
        if (state !== 'open' || digest) throw new Error('append to a put that was committed or aborted');
        await file.append(parts);
        for (const p of parts) hash.update(p);
      },
      commit: async (name, options = {}) => {
        if (state !== 'open') throw new Error('commit of a put that was committed or aborted');
        digest ??= hash.digest();
        const sum = digest;
        await this.putBody(name, { size: file.size, md5: () => sum, stream: () => createReadStream(file.path), part: (start, end) => file.read(start, end - start) }, options);
        state = 'committed';
        await file.remove();
      },
      abort: async () => {
        if (state !== 'open') return;
        state = 'aborted';
        await file.remove();
      },
    };
  }

  /** put's logic over a body given as a length, its MD5, a fresh stream of it per attempt, and its byte ranges. */
  private async putBody(name: string, body: PutBody, options: PutOptions): Promise<void> {
    const key = this.key(name);
    const storageClass = options.kind === 'data' && this.storageClass ? (this.storageClass as StorageClass) : undefined;
    if (options.ifNotExists) {
      if (body.size > MAX_SINGLE_PUT) {
        throw new S3StoreError(`put ${name} with ifNotExists: ${body.size} bytes is over the 5 GiB single-PUT limit`, 'S3_ERROR', false);
      }
      if (this.autoProbe) await this.probeConditionalPut();
      if (!this.caps.conditionalPut && (await this.head(name))) throw new BlobExistsError(name, this.location);
      try {
        await this.putSingle(key, body, storageClass, `PutObject ${key}`, this.caps.conditionalPut, this.lockFields(name));
      } catch (err) {
        if ((err as S3StoreError).status === 412) throw new BlobExistsError(name, this.location);
        throw err;
      }
      return;
    }
    if (body.size > this.multipartThreshold) await this.putMultipart(key, body, storageClass, this.lockFields(name));
    else await this.putSingle(key, body, storageClass, `PutObject ${key}`, false, this.lockFields(name));
  }

  private async putSingle(
    key: string,
    body: PutBody,
    storageClass: StorageClass | undefined,
    what: string,
    ifNoneMatch: boolean,
    lock: ReturnType<S3Store['lockFields']> = {},
  ): Promise<void> {
    await this.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: key,
        Body: body.stream(),
        ContentLength: body.size,
        ContentMD5: body.md5().toString('base64'),
        StorageClass: storageClass,
        IfNoneMatch: ifNoneMatch ? '*' : undefined,
        ...lock,
      }),
      what,
    );
  }

  /** Part size for an object of `size` bytes: the configured one, grown to stay within 10,000 parts. */
  partSizeFor(size: number): number {
    return Math.max(this.partSize, Math.ceil(size / MAX_PARTS));
  }

  private async putMultipart(key: string, body: PutBody, storageClass: StorageClass | undefined, lock: ReturnType<S3Store['lockFields']> = {}): Promise<void> {
    const partSize = this.partSizeFor(body.size);
    const count = Math.ceil(body.size / partSize);
    const upload = await MultipartUpload.start({
      client: this.client,
      bucket: this.bucket,
      key,
      send: (command, what) => this.send(command, what),
      create: { StorageClass: storageClass, ...lock },
      mismatch: (message) => new S3StoreError(message, 'S3_INTEGRITY', true),
    });
    try {
      let next = 0;
      let failed = false;
      const worker = async () => {
        while (!failed && next < count) {
          const i = next++;
          try {
            await upload.uploadPart(i + 1, await body.part(i * partSize, Math.min(body.size, (i + 1) * partSize)), count);
          } catch (err) {
            failed = true;
            throw err;
          }
        }
      };
      // Wait for every part in flight before aborting: a part landing after the abort
      // could otherwise leave storage behind.
      const settled = await Promise.allSettled(Array.from({ length: Math.min(this.partConcurrency, count) }, worker));
      const firstFailure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (firstFailure) throw firstFailure.reason;
      await upload.complete();
    } catch (err) {
      await upload.abort();
      throw err;
    }
  }

  async get(name: string, range?: ByteRange): Promise<Buffer> {
    const key = this.key(name);
    if (range) {
      if (!Number.isSafeInteger(range.offset) || !Number.isSafeInteger(range.length) || range.offset < 0 || range.length < 0) {
        throw new BlobRangeError(name, range, (await this.head(name))?.size ?? 0);
      }
      if (range.length === 0) {
        const info = await this.head(name);
        if (!info) throw new BlobNotFoundError(name, this.location);
        if (range.offset > info.size) throw new BlobRangeError(name, range, info.size);
        return Buffer.alloc(0);
      }
    }
    let out: { Body?: { transformToByteArray(): Promise<Uint8Array> }; ContentRange?: string; ContentLength?: number };
    try {
      out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Range: range ? `bytes=${range.offset}-${range.offset + range.length - 1}` : undefined,
        }),
      );
    } catch (err) {
      const code = s3ErrorCode(err);
      if (code === 'NoSuchKey' || (errorStatus(err) === 404 && code !== 'NoSuchBucket')) throw new BlobNotFoundError(name, this.location);
      if (range && (errorStatus(err) === 416 || code === 'InvalidRange')) {
        const info = await this.head(name);
        if (!info) throw new BlobNotFoundError(name, this.location);
        throw new BlobRangeError(name, range, info.size);
      }
      throw this.translate(err, `GetObject ${key}`);
    }
    const into = range?.into && range.into.length >= range.length ? range.into : null;
    let buf: Buffer;
    try {
      if (!out.Body) buf = Buffer.alloc(0);
      else if (into) buf = await readBodyInto(out.Body as unknown as AsyncIterable<Uint8Array> & { destroy?(): void }, into, range!.length, key);
      else buf = toBuffer(await out.Body.transformToByteArray());
    } catch (err) {
      if (err instanceof S3StoreError) throw err;
      throw this.translate(err, `GetObject ${key} (reading the body)`);
    }
    if (range) {
      if (buf.length !== range.length) {
        const total = Number(/\/(\d+)$/.exec(out.ContentRange ?? '')?.[1] ?? range.offset + buf.length);
        if (buf.length < range.length && range.offset + buf.length >= total) throw new BlobRangeError(name, range, total);
        throw new S3StoreError(`GetObject ${key} returned ${buf.length} bytes, expected ${range.length}`, 'S3_INTEGRITY', true);
      }
    } else if (out.ContentLength !== undefined && buf.length !== out.ContentLength) {
      throw new S3StoreError(`GetObject ${key} returned ${buf.length} bytes, expected ${out.ContentLength}`, 'S3_INTEGRITY', true);
    }
    return buf;
  }

  async head(name: string): Promise<BlobInfo | null> {
    const key = this.key(name);
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { name, size: out.ContentLength ?? 0 };
    } catch (err) {
      // HEAD answers carry no error code: a 404 is a missing object (or bucket; openStore checks the bucket).
      if (errorStatus(err) === 404 || s3ErrorCode(err) === 'NotFound' || s3ErrorCode(err) === 'NoSuchKey') return null;
      throw this.translate(err, `HeadObject ${key}`);
    }
  }

  async *list(prefix: string): AsyncIterable<BlobInfo> {
    let token: string | undefined;
    do {
      const page = await this.send<{
        Contents?: { Key?: string; Size?: number }[];
        IsTruncated?: boolean;
        NextContinuationToken?: string;
      }>(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + prefix, ContinuationToken: token, MaxKeys: 1000 }),
        `ListObjectsV2 ${this.prefix + prefix}`,
      );
      for (const o of page.Contents ?? []) {
        if (!o.Key?.startsWith(this.prefix)) continue;
        const name = o.Key.slice(this.prefix.length);
        try {
          checkBlobName(name);
        } catch {
          continue; // folder markers, probe objects, foreign keys
        }
        yield { name, size: o.Size ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (page.IsTruncated && !token) {
        throw new S3StoreError(`ListObjectsV2 ${this.prefix + prefix}: truncated page without a continuation token`, 'S3_ERROR', true);
      }
    } while (token);
  }

  async delete(name: string): Promise<void> {
    if (this.lock) return this.deleteAllVersions(name);
    const key = this.key(name);
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
    } catch (err) {
      if (s3ErrorCode(err) === 'NoSuchKey') return;
      throw this.translate(err, `DeleteObject ${key}`);
    }
  }

  /**
   * Deletes many objects with DeleteObjects, 1,000 keys a request. The request carries
   * Content-MD5 computed here (DeleteObjects is one of the operations S3 requires an
   * integrity header for; with WHEN_REQUIRED the SDK would send a CRC32 instead, which
   * some S3-compatible servers do not accept). Missing objects are fine.
   */
  async deleteMany(names: string[]): Promise<void> {
    if (this.lock) {
      // Versions must go one by one (DeleteObjects without version ids only adds delete markers).
      for (const n of names) await this.deleteAllVersions(n);
      return;
    }
    const keys = names.map((n) => this.key(n));
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const cmd = new DeleteObjectsCommand({
        Bucket: this.bucket,
        Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
      });
      cmd.middlewareStack.addRelativeTo(
        // eslint-disable-next-line @typescript-eslint/no-explicit-any -- smithy's handler types are not a direct dependency
        (next: (a: any) => Promise<any>) => async (args: any) => {
          const req = args.request as { headers: Record<string, string>; body?: unknown };
          if (typeof req.body === 'string' || req.body instanceof Uint8Array) {
            for (const h of Object.keys(req.headers)) {
              if (/^x-amz-checksum-|^x-amz-sdk-checksum-algorithm$/i.test(h)) delete req.headers[h];
            }
            req.headers['content-md5'] = md5(typeof req.body === 'string' ? Buffer.from(req.body) : req.body).toString('base64');
          }
          return next(args);
        },
        { relation: 'before', toMiddleware: 'httpSigningMiddleware', name: 'pilotlightDeleteObjectsMd5' },
      );
      const out = await this.send<{ Errors?: { Key?: string; Code?: string; Message?: string }[] }>(
        cmd,
        `DeleteObjects (${batch.length} keys under ${this.location})`,
      );
      const errors = (out.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (errors.length > 0) {
        const first = errors[0];
        throw new S3StoreError(
          `DeleteObjects: ${errors.length} of ${batch.length} objects were not deleted, the first ${first.Key}: ${first.Code} ${first.Message ?? ''}`.trim(),
          errors.some((e) => e.Code === 'AccessDenied') ? 'S3_ACCESS_DENIED' : 'S3_ERROR',
          errors.every((e) => e.Code === 'InternalError' || e.Code === 'SlowDown' || e.Code === 'ServiceUnavailable'),
        );
      }
    }
  }

  /**
   * Tests whether the server honours `If-None-Match: *` on PUT, with a probe object
   * whose name no blob can have (`<prefix>.tmp-probe-<random>`, never listed), and
   * sets `capabilities.conditionalPut`. Throws the clear error for a missing bucket or
   * an unreachable server; read-only credentials just mean "no". Runs once per store
   * (concurrent callers share it; a failed probe is tried again next time).
   *
   * Done lazily, before the first conditional put, rather than at open: read-only
   * commands (restore, verify, stats) then write nothing, which matters for versioned
   * and Object Lock buckets and for read-only credentials.
   */
  probeConditionalPut(): Promise<boolean> {
    this.probing ??= this.runProbe().catch((err) => {
      this.probing = undefined;
      throw err;
    });
    return this.probing;
  }

  /**
   * Checks that the bucket exists (HeadBucket, one request, writes nothing). A 403 is
   * let through: credentials may be allowed to read and write objects without the
   * s3:ListBucket permission HeadBucket needs.
   */
  async checkBucket(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      const status = errorStatus(err);
      if (status === 403) return;
      if (status === 404 || s3ErrorCode(err) === 'NotFound' || s3ErrorCode(err) === 'NoSuchBucket') {
        throw this.translate(Object.assign(new Error('NoSuchBucket'), { Code: 'NoSuchBucket', $metadata: { httpStatusCode: 404 } }), `HeadBucket ${this.bucket}`);
      }
      throw this.translate(err, `HeadBucket ${this.bucket}`);
    }
  }

  private async runProbe(): Promise<boolean> {
    const key = `${this.prefix}.tmp-probe-${randomBytes(8).toString('hex')}`;
    const body = bufferBody(Buffer.from('pilotlight conditional put probe\n'));
    let supported = false;
    try {
      try {
        await this.putSingle(key, body, undefined, `PutObject ${key} (probing If-None-Match)`, true);
      } catch (err) {
        const e = err as S3StoreError;
        if (e.code === 'S3_ACCESS_DENIED') return (this.caps.conditionalPut = false);
        // A server that rejects the header itself (501 NotImplemented, 400) cannot do it.
        if (e.status === 501 || e.status === 400) return (this.caps.conditionalPut = false);
        throw err;
      }
      try {
        await this.putSingle(key, body, undefined, `PutObject ${key} (probing If-None-Match)`, true);
        supported = false; // overwrote: the header was ignored
      } catch (err) {
        const e = err as S3StoreError;
        if (e.status === 412) supported = true;
        else if (e.status === 501 || e.status === 400) supported = false;
        else throw err;
      }
    } finally {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key })).catch(() => {});
    }
    this.caps.conditionalPut = supported;
    return supported;
  }

  async close(): Promise<void> {
    if (this.ownsClient) this.client.destroy();
  }
}
