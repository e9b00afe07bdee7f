import { createHash, randomBytes } from 'node:crypto';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  StorageClass,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import {
  BlobExistsError,
  BlobInfo,
  BlobNotFoundError,
  BlobRangeError,
  BlobStore,
  ByteRange,
  PutOptions,
  StoreCapabilities,
  checkBlobName,
} from './blob-store.js';
import { RequestClass, RequestReporter, WireRequest } from './metered-store.js';
import { errnoCode, errorStatus, isTransientError } from './retrying-store.js';
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

function toBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^W\//, '').replace(/^"|"$/g, '');
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
 * - get: GetObject, with `Range` for a range; a short answer is BlobRangeError.
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
  private readonly endpointText: string;
  private readonly listeners: ((r: WireRequest) => void)[] = [];

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
    this.caps = { conditionalPut: options.conditionalPut ?? false };
    this.autoProbe = options.conditionalPut === undefined;
    if (options.storageClass) checkPackStorageClass(options.storageClass);
    this.storageClass = options.storageClass;
    this.multipartThreshold = options.multipartThreshold ?? 32 * MiB;
    this.partSize = Math.max(MIN_PART, options.partSize ?? 16 * MiB);
    this.partConcurrency = Math.max(1, options.partConcurrency ?? 4);
    this.endpointText = options.endpoint ?? (options.client ? 'the S3 endpoint' : `AWS S3${options.region ? ` (${options.region})` : ''}`);
    if (options.client) {
      this.client = options.client;
      this.ownsClient = false;
    } else {
      const maxSockets = options.maxSockets ?? 64;
      this.client = new S3Client({
        endpoint: options.endpoint,
        region: options.region,
        credentials: options.credentials,
        forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
        requestChecksumCalculation: 'WHEN_REQUIRED',
        responseChecksumValidation: 'WHEN_REQUIRED',
        maxAttempts: 1,
        requestHandler: {
          httpAgent: new HttpAgent({ keepAlive: true, maxSockets }),
          httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets }),
          connectionTimeout: options.connectTimeoutMs ?? 10_000,
          // An answer that stops flowing (a hung server) fails after this much silence...
          socketTimeout: options.idleTimeoutMs ?? 60_000,
          // ... and no request runs longer than this in total. Without throwOnRequestTimeout
          // this SDK only logs a warning when requestTimeout passes and waits forever.
          requestTimeout: options.requestTimeoutMs ?? 15 * 60_000,
          throwOnRequestTimeout: true,
        },
      });
      this.ownsClient = true;
    }
    this.installMeter();
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
    const key = this.key(name);
    const body = toBuffer(data);
    const storageClass = options.kind === 'data' && this.storageClass ? (this.storageClass as StorageClass) : undefined;
    if (options.ifNotExists) {
      if (body.length > MAX_SINGLE_PUT) {
        throw new S3StoreError(`put ${name} with ifNotExists: ${body.length} bytes is over the 5 GiB single-PUT limit`, 'S3_ERROR', false);
      }
      if (this.autoProbe) await this.probeConditionalPut();
      if (!this.caps.conditionalPut && (await this.head(name))) throw new BlobExistsError(name, this.location);
      try {
        await this.putSingle(key, body, storageClass, `PutObject ${key}`, this.caps.conditionalPut);
      } catch (err) {
        if ((err as S3StoreError).status === 412) throw new BlobExistsError(name, this.location);
        throw err;
      }
      return;
    }
    if (body.length > this.multipartThreshold) await this.putMultipart(key, body, storageClass);
    else await this.putSingle(key, body, storageClass, `PutObject ${key}`, false);
  }

  private async putSingle(key: string, body: Buffer, storageClass: StorageClass | undefined, what: string, ifNoneMatch: boolean): Promise<void> {
    await this.send(
      new PutObjectCommand({
        Bucket: this.bucket,
        Key: key,
        Body: body,
        ContentLength: body.length,
        ContentMD5: md5(body).toString('base64'),
        StorageClass: storageClass,
        IfNoneMatch: ifNoneMatch ? '*' : undefined,
      }),
      what,
    );
  }

  /** Part size for an object of `size` bytes: the configured one, grown to stay within 10,000 parts. */
  partSizeFor(size: number): number {
    return Math.max(this.partSize, Math.ceil(size / MAX_PARTS));
  }

  private async putMultipart(key: string, body: Buffer, storageClass: StorageClass | undefined): Promise<void> {
    const partSize = this.partSizeFor(body.length);
    const count = Math.ceil(body.length / partSize);
    const created = await this.send<{ UploadId?: string }>(
      new CreateMultipartUploadCommand({ Bucket: this.bucket, Key: key, StorageClass: storageClass }),
      `CreateMultipartUpload ${key}`,
    );
    const uploadId = created.UploadId;
    if (!uploadId) throw new S3StoreError(`${this.endpointText} returned no UploadId for ${key}`, 'S3_ERROR', true);
    const digests: Buffer[] = new Array(count);
    const etags: string[] = new Array(count);
    try {
      let next = 0;
      let failed = false;
      const worker = async () => {
        while (!failed && next < count) {
          const i = next++;
          const part = body.subarray(i * partSize, Math.min(body.length, (i + 1) * partSize));
          digests[i] = md5(part);
          try {
            const out = await this.send<{ ETag?: string }>(
              new UploadPartCommand({
                Bucket: this.bucket,
                Key: key,
                UploadId: uploadId,
                PartNumber: i + 1,
                Body: part,
                ContentLength: part.length,
                ContentMD5: digests[i].toString('base64'),
              }),
              `UploadPart ${i + 1}/${count} of ${key}`,
            );
            etags[i] = out.ETag ?? `"${digests[i].toString('hex')}"`;
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
      const done = await this.send<{ ETag?: string; ServerSideEncryption?: string }>(
        new CompleteMultipartUploadCommand({
          Bucket: this.bucket,
          Key: key,
          UploadId: uploadId,
          MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
        }),
        `CompleteMultipartUpload ${key}`,
      );
      // The multipart ETag is md5(concatenated part MD5s)-N: check that the server
      // assembled exactly our parts. RGW answers Complete with an empty ETag: ask HeadObject.
      // With SSE-KMS (or SSE-C) ETags are not MD5s: then only the size is checked (every
      // part's Content-MD5 was verified by the server anyway).
      const expected = `${md5(Buffer.concat(digests)).toString('hex')}-${count}`;
      let etag = unquote(done.ETag);
      let sse = done.ServerSideEncryption;
      let size = body.length;
      if (!etag) {
        const h = await this.send<{ ETag?: string; ContentLength?: number; ServerSideEncryption?: string; SSECustomerAlgorithm?: string }>(
          new HeadObjectCommand({ Bucket: this.bucket, Key: key }),
          `HeadObject ${key}`,
        );
        etag = unquote(h.ETag);
        sse = h.ServerSideEncryption ?? (h.SSECustomerAlgorithm ? 'SSE-C' : undefined);
        size = h.ContentLength ?? size;
      }
      const etagIsMd5 = !sse || sse === 'AES256';
      if ((etagIsMd5 && etag !== expected) || size !== body.length) {
        // Not ours: never leave a wrong object under a content-addressed name.
        await this.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }), `DeleteObject ${key}`).catch(() => {});
        throw new S3StoreError(
          `multipart upload of ${key} ended with ETag ${etag || '(none)'} and ${size} bytes, expected ${expected} and ${body.length} bytes: the server assembled other parts than sent; the object was deleted, try again`,
          'S3_INTEGRITY',
          true,
        );
      }
    } catch (err) {
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.bucket, Key: key, UploadId: uploadId }))
        .catch(() => {
          // Left for a lifecycle rule (AbortIncompleteMultipartUpload); never listed as an object.
        });
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
    let bytes: Uint8Array;
    try {
      bytes = out.Body ? await out.Body.transformToByteArray() : new Uint8Array(0);
    } catch (err) {
      throw this.translate(err, `GetObject ${key} (reading the body)`);
    }
    const buf = toBuffer(bytes);
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
    const body = Buffer.from('pilotlight conditional put probe\n');
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
