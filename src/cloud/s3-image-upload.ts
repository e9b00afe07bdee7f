/**
 * Streams a point-in-time raw disk image into one S3 object with a multipart upload,
 * for EC2 ImportSnapshot / ImportImage. No local copy: chunks are copied into part
 * buffers in disk order, holes are sent as zeros (S3 objects are not sparse), every
 * part carries Content-MD5 (the one multipart uploader, src/store/multipart-upload.ts, which
 * also checks the assembled object against the parts sent), and at most `concurrency` parts (+1 being filled) are in
 * memory at once. On any failure the upload is aborted so no parts are left billed.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { DiskImage } from '../engine/disk-image.js';
import { explainAwsError } from './errors.js';
import { MultipartUpload, SendFn } from '../store/multipart-upload.js';
import { DEFAULT_RETRY, RetryPolicy, withRetry } from './retry.js';

const MiB = 1024 * 1024;
export const MIN_PART_SIZE = 5 * MiB;
export const MAX_PARTS = 10_000;
/** Memory is about (concurrency + 1) x part size: 80 MiB with the defaults, whatever the disk size. */
export const DEFAULT_PART_SIZE = 16 * MiB;

export { createS3Client } from '../store/s3-client.js';

/** `s3://BUCKET/KEY` -> bucket and key. */
export function parseS3Url(url: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(url);
  if (!m) throw new Error(`${JSON.stringify(url)} is not s3://BUCKET/KEY`);
  return { bucket: m[1], key: m[2] };
}

/** Part size: at least `wanted` (and 5 MiB), large enough that the image fits in 10,000 parts, a multiple of 1 MiB. */
export function choosePartSize(capacity: number, wanted = DEFAULT_PART_SIZE): number {
  const min = Math.max(MIN_PART_SIZE, wanted, Math.ceil(capacity / MAX_PARTS));
  return Math.ceil(min / MiB) * MiB;
}

export interface UploadImageOptions {
  s3: S3Client;
  bucket: string;
  key: string;
  image: DiskImage;
  partSize?: number;
  /** Parts uploading at once (default 4). Memory ~ (concurrency + 1) x partSize. */
  concurrency?: number;
  retry?: Partial<RetryPolicy>;
  storageClass?: string;
  metadata?: Record<string, string>;
  signal?: AbortSignal;
  /** Bytes of the image uploaded so far (after each part). */
  onProgress?: (bytesDone: number, total: number) => void;
}

export interface UploadImageResult {
  bucket: string;
  key: string;
  size: number;
  parts: number;
  partSize: number;
  etag?: string;
  /** Bytes of the image that were holes and were sent as zeros. */
  zeroBytes: number;
  retries: number;
  durationMs: number;
}

export async function uploadImageToS3(o: UploadImageOptions): Promise<UploadImageResult> {
  const t0 = performance.now();
  const { s3, bucket, key, image } = o;
  const total = image.capacity;
  const partSize = choosePartSize(total, o.partSize);
  if (partSize % image.chunkSize !== 0) throw new Error(`part size ${partSize} is not a multiple of the chunk size ${image.chunkSize}`);
  const nParts = Math.max(1, Math.ceil(total / partSize));
  if (nParts > MAX_PARTS) throw new Error(`${total} bytes need ${nParts} parts of ${partSize}; S3 allows ${MAX_PARTS}`);
  const concurrency = Math.max(1, o.concurrency ?? 4);
  const policy: RetryPolicy = { ...DEFAULT_RETRY, ...o.retry };
  let retries = 0;
  const onRetry = () => void retries++;
  const where = `s3://${bucket}/${key}`;

  const actions: Record<string, string> = {
    CreateMultipartUpload: 's3:PutObject (CreateMultipartUpload)',
    UploadPart: 's3:PutObject (UploadPart)',
    CompleteMultipartUpload: 's3:PutObject (CompleteMultipartUpload)',
    HeadObject: 's3:GetObject (HeadObject)',
    DeleteObject: 's3:DeleteObject',
  };
  // the cloud paths' retry budget and their explained AWS errors, through the one multipart uploader
  const send: SendFn = async <T>(command: { input: unknown }, what: string): Promise<T> => {
    try {
      return (await withRetry(() => s3.send(command as never, { abortSignal: o.signal }), policy, { signal: o.signal, onRetry })) as T;
    } catch (err) {
      const op = what.split(' ')[0]!;
      throw explainAwsError(err, actions[op] ?? `s3:${op}`, op === 'UploadPart' ? `${where} part ${what.split(' ')[1]!.split('/')[0]}` : where);
    }
  };
  const upload = await MultipartUpload.start({
    client: s3,
    bucket,
    key,
    send,
    create: { ContentType: 'application/octet-stream', StorageClass: o.storageClass, Metadata: o.metadata },
  });

  const inflight = new Set<Promise<void>>();
  let failure: unknown;
  let done = 0;
  let zeroBytes = 0;
  const sendPart = async (n: number, body: Buffer) => {
    await upload.uploadPart(n, body, nParts);
    done += body.length;
    o.onProgress?.(done, total);
  };
  const launch = async (n: number, body: Buffer) => {
    const p: Promise<void> = sendPart(n, body).then(
      () => void inflight.delete(p),
      (err) => {
        inflight.delete(p);
        failure ??= err;
      },
    );
    inflight.add(p);
    if (inflight.size >= concurrency) await Promise.race(inflight);
  };

  try {
    let partNo = 1;
    let part = Buffer.alloc(Math.min(partSize, total));
    let partStart = 0;
    let expected = 0;
    for await (const ch of image.chunks()) {
      if (failure) break;
      o.signal?.throwIfAborted();
      if (ch.offset !== expected) throw new Error(`the image skipped from byte ${expected} to ${ch.offset}`);
      expected = ch.offset + ch.length;
      const at = ch.offset - partStart;
      if (ch.data) ch.data.copy(part, at, 0, ch.length);
      else zeroBytes += ch.length;
      if (at + ch.length === part.length) {
        await launch(partNo, part);
        partNo++;
        partStart += part.length;
        // A fresh zero-filled buffer: holes need no copy.
        part = partStart < total ? Buffer.alloc(Math.min(partSize, total - partStart)) : Buffer.alloc(0);
      }
    }
    if (!failure && expected !== total) throw new Error(`the image ended at byte ${expected} of ${total}`);
    await Promise.all(inflight);
    if (failure) throw failure;
    const etag = await upload.complete();
    return { bucket, key, size: total, parts: nParts, partSize, etag, zeroBytes, retries, durationMs: Math.round(performance.now() - t0) };
  } catch (err) {
    await Promise.allSettled(inflight);
    await upload.abort();
    throw err;
  }
}
