import { constants as fsConstants, promises as fsp } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { UserError } from '../repo/errors.js';
import { FsStore } from './fs-store.js';
import { MeteredStore } from './metered-store.js';
import { RetryOptions, RetryingStore } from './retrying-store.js';
import type { S3StoreOptions } from './s3-store.js';
import { checkPackStorageClass } from './storage-class.js';

export interface OpenStoreOptions {
  /** `http://127.0.0.1:7480`; else AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS itself. */
  s3Endpoint?: string;
  /** Storage class of data packs (STANDARD_IA, GLACIER_IR, ...); metadata stays STANDARD. */
  storageClass?: string;
  /** Requests one multipart upload sends in parallel (the engine decides how many puts run at once). Default 4. */
  concurrency?: number;
  /** Retry policy of the S3 store (tests shorten it). */
  retry?: RetryOptions;
  /** Further S3Store settings (multipart threshold, part size, credentials, ...). */
  s3?: Partial<S3StoreOptions>;
  /** Probe conditional-put support at open instead of before the first conditional put. */
  probeConditionalPut?: boolean;
}

export interface ParsedLocation {
  kind: 'fs' | 's3';
  /** fs: the directory. */
  path?: string;
  bucket?: string;
  prefix?: string;
}

export function parseLocation(location: string): ParsedLocation {
  if (/^s3:\/\//i.test(location)) {
    const rest = location.slice('s3://'.length);
    const slash = rest.indexOf('/');
    const bucket = slash < 0 ? rest : rest.slice(0, slash);
    const prefix = slash < 0 ? '' : rest.slice(slash + 1).replace(/^\/+|\/+$/g, '');
    if (!bucket) throw new Error(`repository location ${JSON.stringify(location)} names no bucket: write s3://BUCKET/PREFIX`);
    if (prefix && !/^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/.test(prefix)) {
      throw new Error(`S3 prefix ${JSON.stringify(prefix)} in ${location}: use '/'-separated segments of A-Z a-z 0-9 . _ -`);
    }
    return { kind: 's3', bucket, prefix };
  }
  if (/^file:\/\//i.test(location)) return { kind: 'fs', path: fileURLToPath(location) };
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) {
    throw new Error(`unsupported repository location ${JSON.stringify(location)}: use a directory path, file://PATH or s3://BUCKET/PREFIX`);
  }
  if (!location) throw new Error('no repository location given: pass --repo PATH or --repo s3://BUCKET/PREFIX (or set PILOTLIGHT_REPO)');
  return { kind: 'fs', path: location };
}

function endpointFromEnv(): string | undefined {
  return process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL || undefined;
}

/**
 * Opens the store a repository location names:
 * - a path or file://PATH: FsStore;
 * - s3://BUCKET/PREFIX: S3Store (path-style addressing when an endpoint is given),
 *   wrapped in RetryingStore and MeteredStore. Credentials come from the standard AWS
 *   chain (env, profile, SSO, instance role); the region from AWS_REGION /
 *   AWS_DEFAULT_REGION / the profile, `us-east-1` for a custom endpoint without one.
 *   Opening checks that the bucket exists (one HeadBucket). Whether the server honours
 *   `If-None-Match: *` (capabilities.conditionalPut) is probed before the first
 *   conditional put (two PUTs and a DELETE of a probe object), or at open with
 *   `probeConditionalPut: true`.
 *
 * Every store returned is a MeteredStore: `metrics()` (see metered-store.ts) and
 * `deleteMany()` (one DeleteObjects per 1,000 names on S3).
 */
export async function openStore(location: string, options: OpenStoreOptions = {}): Promise<MeteredStore> {
  const parsed = parseLocation(location);
  if (options.storageClass) checkPackStorageClass(options.storageClass);
  if (parsed.kind === 'fs') return new MeteredStore(new FsStore(parsed.path!));

  const endpoint = options.s3Endpoint || endpointFromEnv();
  if (endpoint) {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw new Error(`S3 endpoint ${JSON.stringify(endpoint)} is not a URL: write it as http://HOST:PORT or https://HOST`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new Error(`S3 endpoint ${JSON.stringify(endpoint)} must start with http:// or https://`);
    }
  }
  const region = process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || (endpoint ? 'us-east-1' : undefined);
  const concurrency = Math.max(1, options.concurrency ?? 4);
  const spoolDir = options.s3?.spoolDir ?? (process.env.PILOTLIGHT_SPOOL_DIR || undefined);
  if (spoolDir) await checkSpoolDir(spoolDir);
  // loaded on use, so local repositories do not pay the AWS SDK's start-up time and memory
  const { S3Store, S3StoreError } = await import('./s3-store.js');
  const s3 = new S3Store({
    bucket: parsed.bucket!,
    prefix: parsed.prefix,
    endpoint,
    region,
    forcePathStyle: endpoint ? true : undefined,
    storageClass: options.storageClass,
    partConcurrency: concurrency,
    maxSockets: Math.max(64, concurrency * 8),
    ...options.s3, // the spool directory checked above: options.s3.spoolDir, else S3Store reads the same variable
  });
  let meter: MeteredStore | undefined;
  const retrying = new RetryingStore(s3, {
    ...options.retry,
    onRetry: (info) => {
      meter?.noteRetry();
      options.retry?.onRetry?.(info);
    },
  });
  meter = new MeteredStore(retrying);
  try {
    await retrying.retry('open', 'HeadBucket', () => s3.checkBucket());
    if (options.probeConditionalPut && options.s3?.conditionalPut === undefined) {
      await retrying.retry('probe', 'If-None-Match', () => s3.probeConditionalPut());
    }
  } catch (err) {
    await s3.close();
    if (err instanceof S3StoreError) throw err;
    throw s3.translate(err, `opening ${s3.location}`);
  }
  return meter;
}

/** A spool directory that is not a writable directory is refused at open, before a backup reads anything. */
async function checkSpoolDir(dir: string): Promise<void> {
  const st = await fsp.stat(dir).catch(() => null);
  if (!st?.isDirectory()) throw new UserError(`spool directory ${dir} is not a directory (--spool-dir, PILOTLIGHT_SPOOL_DIR or spoolDir)`);
  await fsp.access(dir, fsConstants.W_OK | fsConstants.X_OK).catch(() => {
    throw new UserError(`spool directory ${dir} is not writable (--spool-dir, PILOTLIGHT_SPOOL_DIR or spoolDir)`);
  });
}
