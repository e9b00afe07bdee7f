/**
 * The one S3 multipart uploader: the repository's large puts (S3Store) and the raw
 * images streamed to S3 for EC2 import (src/cloud/s3-image-upload.ts) both use it.
 *
 * Every part carries Content-MD5 (the server checks each part); Complete is checked
 * against what was sent: the multipart ETag is md5(concatenated part MD5s)-N, so a
 * server that assembled other parts than sent is caught (RGW answers Complete with an
 * empty ETag: HeadObject is asked then; with SSE-KMS or SSE-C the ETag is not an MD5 and
 * only the size is checked). A wrong object is deleted, never left under its name.
 * The caller decides how requests are sent (its error translation and retry policy) and
 * aborts the upload on failure (abort() after every part in flight has settled: a part
 * landing after the abort could otherwise leave storage behind).
 */
import { createHash } from 'node:crypto';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  HeadObjectCommand,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';

/** Sends one command the caller's way; `what` names it for error messages. */
export type SendFn = <T>(command: { input: unknown }, what: string) => Promise<T>;

export interface MultipartStart {
  client: S3Client;
  bucket: string;
  key: string;
  send: SendFn;
  /** Extra CreateMultipartUpload fields: StorageClass, Metadata, ContentType, Object Lock. */
  create?: Record<string, unknown>;
  /** The error thrown when the assembled object is not what was sent. */
  mismatch?: (message: string) => Error;
}

function md5(data: Uint8Array): Buffer {
  return createHash('md5').update(data).digest();
}

function unquote(etag: string | undefined): string {
  return (etag ?? '').replace(/^W\//, '').replace(/^"|"$/g, '');
}

export class MultipartUpload {
  private readonly digests: Buffer[] = [];
  private readonly etags: string[] = [];
  private bytes = 0;

  private constructor(
    private readonly o: MultipartStart,
    readonly uploadId: string,
  ) {}

  static async start(o: MultipartStart): Promise<MultipartUpload> {
    const created = await o.send<{ UploadId?: string }>(
      new CreateMultipartUploadCommand({ Bucket: o.bucket, Key: o.key, ...o.create } as never),
      `CreateMultipartUpload ${o.key}`,
    );
    if (!created.UploadId) throw (o.mismatch ?? ((m) => new Error(m)))(`the server returned no UploadId for ${o.key}`);
    return new MultipartUpload(o, created.UploadId);
  }

  /** Uploads part `n` (1-based); parts may be sent concurrently and in any order. */
  async uploadPart(n: number, body: Buffer, total?: number): Promise<void> {
    const digest = md5(body);
    this.digests[n - 1] = digest;
    const out = await this.o.send<{ ETag?: string }>(
      new UploadPartCommand({
        Bucket: this.o.bucket,
        Key: this.o.key,
        UploadId: this.uploadId,
        PartNumber: n,
        Body: body,
        ContentLength: body.length,
        ContentMD5: digest.toString('base64'),
      }),
      `UploadPart ${n}${total ? `/${total}` : ''} of ${this.o.key}`,
    );
    this.etags[n - 1] = out.ETag ?? `"${digest.toString('hex')}"`;
    this.bytes += body.length;
  }

  /** Completes the upload and checks the object is exactly the parts sent; returns its ETag. */
  async complete(): Promise<string> {
    const count = this.etags.length;
    for (let i = 0; i < count; i++) if (this.etags[i] === undefined) throw new Error(`part ${i + 1} of ${this.o.key} was never uploaded`);
    const done = await this.o.send<{ ETag?: string; ServerSideEncryption?: string }>(
      new CompleteMultipartUploadCommand({
        Bucket: this.o.bucket,
        Key: this.o.key,
        UploadId: this.uploadId,
        MultipartUpload: { Parts: this.etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
      `CompleteMultipartUpload ${this.o.key}`,
    );
    const expected = `${md5(Buffer.concat(this.digests)).toString('hex')}-${count}`;
    let etag = unquote(done.ETag);
    let sse = done.ServerSideEncryption;
    let size = this.bytes;
    if (!etag) {
      const h = await this.o.send<{ ETag?: string; ContentLength?: number; ServerSideEncryption?: string; SSECustomerAlgorithm?: string }>(
        new HeadObjectCommand({ Bucket: this.o.bucket, Key: this.o.key }),
        `HeadObject ${this.o.key}`,
      );
      etag = unquote(h.ETag);
      sse = h.ServerSideEncryption ?? (h.SSECustomerAlgorithm ? 'SSE-C' : undefined);
      size = h.ContentLength ?? size;
    }
    const etagIsMd5 = !sse || sse === 'AES256';
    if ((etagIsMd5 && etag !== expected) || size !== this.bytes) {
      await this.o.send(new DeleteObjectCommand({ Bucket: this.o.bucket, Key: this.o.key }), `DeleteObject ${this.o.key}`).catch(() => {});
      throw (this.o.mismatch ?? ((m) => new Error(m)))(
        `multipart upload of ${this.o.key} ended with ETag ${etag || '(none)'} and ${size} bytes, expected ${expected} and ${this.bytes} bytes: ` +
          'the server assembled other parts than sent; the object was deleted, try again',
      );
    }
    return etag;
  }

  /** Aborts the upload (best effort: an upload left over is never listed as an object; a lifecycle rule removes it). */
  async abort(): Promise<void> {
    await this.o.client.send(new AbortMultipartUploadCommand({ Bucket: this.o.bucket, Key: this.o.key, UploadId: this.uploadId })).catch(() => undefined);
  }
}
