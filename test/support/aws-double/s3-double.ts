/**
 * A minimal S3 TEST DOUBLE (path-style, in memory), for tests only: the fallback when
 * no real S3-compatible server (Ceph RGW, see test/support/rgw.ts) is configured.
 * Implements what the restore-to-S3 path and the ImportSnapshot double use:
 * CreateBucket, PutObject, GetObject (with Range), HeadObject, DeleteObject,
 * CreateMultipartUpload, UploadPart (Content-MD5 verified), CompleteMultipartUpload
 * (5 MiB minimum part size except the last, as S3 enforces), AbortMultipartUpload,
 * ListMultipartUploads (keys and upload ids only, for leak checks).
 */
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

const MIN_PART = 5 * 1024 * 1024;

export interface S3Double {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  objects: Map<string, Buffer>;
  uploads: Map<string, { bucket: string; key: string; parts: Map<number, { data: Buffer; etag: string }> }>;
  stats: { uploadParts: number; maxPartBytes: number; badMd5: number };
  close(): Promise<void>;
}

function err(res: http.ServerResponse, status: number, code: string, message: string): void {
  const text = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message><RequestId>${randomBytes(6).toString('hex')}</RequestId></Error>`;
  res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function ok(res: http.ServerResponse, body: string, headers: Record<string, string> = {}): void {
  const text = `<?xml version="1.0" encoding="UTF-8"?>${body}`;
  res.writeHead(200, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

export async function startS3Double(): Promise<S3Double> {
  const buckets = new Set<string>();
  const objects = new Map<string, Buffer>();
  const uploads: S3Double['uploads'] = new Map();
  const stats = { uploadParts: 0, maxPartBytes: 0, badMd5: 0 };

  const server = http.createServer(async (req, res) => {
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      const body = Buffer.concat(chunks);
      const url = new URL(req.url ?? '/', 'http://double');
      const [bucket, ...rest] = url.pathname.slice(1).split('/');
      const key = rest.map(decodeURIComponent).join('/');
      const q = url.searchParams;
      const m = req.method;
      if (!req.headers.authorization) return err(res, 403, 'AccessDenied', 'Anonymous access is forbidden');
      if (!key) {
        if (m === 'PUT') {
          buckets.add(bucket);
          res.writeHead(200, { 'content-length': 0 });
          return res.end();
        }
        if (m === 'HEAD') {
          res.writeHead(buckets.has(bucket) ? 200 : 404, { 'content-length': 0 });
          return res.end();
        }
        if (m === 'GET' && q.has('uploads')) {
          const items = [...uploads.entries()]
            .filter(([, u]) => u.bucket === bucket)
            .map(([id, u]) => `<Upload><Key>${u.key}</Key><UploadId>${id}</UploadId></Upload>`)
            .join('');
          return ok(res, `<ListMultipartUploadsResult><Bucket>${bucket}</Bucket>${items}</ListMultipartUploadsResult>`);
        }
        return err(res, 501, 'NotImplemented', 'not implemented by the S3 test double');
      }
      if (!buckets.has(bucket)) return err(res, 404, 'NoSuchBucket', 'The specified bucket does not exist');
      const full = `${bucket}/${key}`;
      const md5 = req.headers['content-md5'];
      if (md5 !== undefined && createHash('md5').update(body).digest('base64') !== md5) {
        stats.badMd5++;
        return err(res, 400, 'BadDigest', 'The Content-MD5 you specified did not match what we received.');
      }
      if (m === 'POST' && q.has('uploads')) {
        const id = randomBytes(12).toString('hex');
        uploads.set(id, { bucket, key, parts: new Map() });
        return ok(res, `<InitiateMultipartUploadResult><Bucket>${bucket}</Bucket><Key>${key}</Key><UploadId>${id}</UploadId></InitiateMultipartUploadResult>`);
      }
      if (m === 'PUT' && q.has('uploadId')) {
        const up = uploads.get(q.get('uploadId')!);
        if (!up) return err(res, 404, 'NoSuchUpload', 'The specified upload does not exist.');
        const n = Number(q.get('partNumber'));
        if (!(n >= 1 && n <= 10000)) return err(res, 400, 'InvalidArgument', 'Part number must be an integer between 1 and 10000');
        const etag = `"${createHash('md5').update(body).digest('hex')}"`;
        up.parts.set(n, { data: body, etag });
        stats.uploadParts++;
        stats.maxPartBytes = Math.max(stats.maxPartBytes, body.length);
        res.writeHead(200, { etag, 'content-length': 0 });
        return res.end();
      }
      if (m === 'POST' && q.has('uploadId')) {
        const id = q.get('uploadId')!;
        const up = uploads.get(id);
        if (!up) return err(res, 404, 'NoSuchUpload', 'The specified upload does not exist.');
        const listed = [...body.toString().matchAll(/<Part>[\s\S]*?<ETag>([^<]*)<\/ETag>[\s\S]*?<PartNumber>(\d+)<\/PartNumber>[\s\S]*?<\/Part>|<Part>[\s\S]*?<PartNumber>(\d+)<\/PartNumber>[\s\S]*?<ETag>([^<]*)<\/ETag>[\s\S]*?<\/Part>/g)].map(
          (x) => ({ n: Number(x[2] ?? x[3]), etag: (x[1] ?? x[4]).replace(/&quot;/g, '"') }),
        );
        if (listed.length === 0) return err(res, 400, 'MalformedXML', 'no parts listed');
        const datas: Buffer[] = [];
        for (let i = 0; i < listed.length; i++) {
          const p = up.parts.get(listed[i].n);
          if (!p || p.etag !== listed[i].etag) return err(res, 400, 'InvalidPart', `part ${listed[i].n} not found or ETag mismatch`);
          if (i > 0 && listed[i].n <= listed[i - 1].n) return err(res, 400, 'InvalidPartOrder', 'parts must be ascending');
          if (i < listed.length - 1 && p.data.length < MIN_PART) return err(res, 400, 'EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.');
          datas.push(p.data);
        }
        objects.set(full, Buffer.concat(datas));
        uploads.delete(id);
        const etag = `"${createHash('md5').update(Buffer.concat(listed.map((l) => Buffer.from(l.etag.replace(/"/g, ''), 'hex')))).digest('hex')}-${listed.length}"`;
        return ok(res, `<CompleteMultipartUploadResult><Location>/${full}</Location><Bucket>${bucket}</Bucket><Key>${key}</Key><ETag>${etag.replace(/"/g, '&quot;')}</ETag></CompleteMultipartUploadResult>`);
      }
      if (m === 'DELETE' && q.has('uploadId')) {
        uploads.delete(q.get('uploadId')!);
        res.writeHead(204);
        return res.end();
      }
      if (m === 'PUT') {
        objects.set(full, body);
        res.writeHead(200, { etag: `"${createHash('md5').update(body).digest('hex')}"`, 'content-length': 0 });
        return res.end();
      }
      if (m === 'DELETE') {
        objects.delete(full);
        res.writeHead(204);
        return res.end();
      }
      if (m === 'GET' || m === 'HEAD') {
        const obj = objects.get(full);
        if (!obj) {
          if (m === 'HEAD') {
            res.writeHead(404);
            return res.end();
          }
          return err(res, 404, 'NoSuchKey', 'The specified key does not exist.');
        }
        const range = /^bytes=(\d+)-(\d*)$/.exec(String(req.headers.range ?? ''));
        if (range) {
          const a = Number(range[1]);
          const b = range[2] ? Math.min(Number(range[2]), obj.length - 1) : obj.length - 1;
          const part = obj.subarray(a, b + 1);
          res.writeHead(206, { 'content-length': part.length, 'content-range': `bytes ${a}-${b}/${obj.length}` });
          return res.end(m === 'HEAD' ? undefined : part);
        }
        res.writeHead(200, { 'content-length': obj.length, 'content-type': 'application/octet-stream' });
        return res.end(m === 'HEAD' ? undefined : obj);
      }
      return err(res, 501, 'NotImplemented', 'not implemented by the S3 test double');
    } catch (e) {
      err(res, 500, 'InternalError', String((e as Error).message));
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    accessKeyId: 'double',
    secretAccessKey: 'double-secret',
    objects,
    uploads,
    stats,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
