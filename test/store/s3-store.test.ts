/**
 * S3Store against a real Ceph RADOS Gateway on loopback (test/support/rgw.ts starts it).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as net from 'node:net';
import { after, describe, it } from 'node:test';
import { GetObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand } from '@aws-sdk/client-s3';
import { BlobStore } from '../../src/store/blob-store.js';
import { StoreMetrics, storeMetrics } from '../../src/store/metered-store.js';
import { openStore } from '../../src/store/open-store.js';
import { RetryingStore } from '../../src/store/retrying-store.js';
import { S3Store, S3StoreError, S3StoreOptions } from '../../src/store/s3-store.js';
import { dropBucket, freshBucket, rgw, unusedPort } from '../support/rgw.js';
import { storeConformance } from './conformance.js';

const MiB = 1024 * 1024;
const buckets: string[] = [];
after(async () => {
  await Promise.all(buckets.map((b) => dropBucket(b)));
  (await rgw()).client.destroy();
});

async function bucket(label: string): Promise<string> {
  const b = await freshBucket(label);
  buckets.push(b);
  return b;
}

async function rawStore(b: string, extra: Partial<S3StoreOptions> = {}): Promise<S3Store> {
  const r = await rgw();
  return new S3Store({ bucket: b, prefix: 'repo', endpoint: r.endpoint, region: r.region, credentials: r.credentials, ...extra });
}

/** The S3Store under openStore's decorators. */
function findS3(store: BlobStore): S3Store {
  let s: unknown = store;
  while (s && !(s instanceof S3Store)) s = (s as { inner?: unknown }).inner;
  assert.ok(s instanceof S3Store);
  return s;
}

async function opened(b: string, prefix = 'repo', extra: Parameters<typeof openStore>[1] = {}) {
  const r = await rgw();
  return openStore(`s3://${b}/${prefix}`, {
    s3Endpoint: r.endpoint,
    ...extra,
    s3: { credentials: r.credentials, ...extra.s3 },
  });
}

/** The full stack the CLI uses: openStore -> MeteredStore(RetryingStore(S3Store)), conditional put probed at open. */
storeConformance('s3 (openStore on RGW)', {
  async create() {
    return opened(await bucket('conf'), `p-${randomBytes(3).toString('hex')}`, { probeConditionalPut: true });
  },
  async destroy(store: BlobStore) {
    await store.close();
  },
  appends: true,
});

/** The bare backend, multipart from 5 MiB (so the 12 MiB conformance object is multipart), without conditional put. */
storeConformance('s3 (bare S3Store, multipart >5 MiB, HEAD-then-PUT for ifNotExists)', {
  async create() {
    return rawStore(await bucket('bare'), { multipartThreshold: 5 * MiB, partSize: 5 * MiB, conditionalPut: false });
  },
  async destroy(store: BlobStore) {
    await store.close();
  },
  appends: true,
});

describe('s3 store on RGW', () => {
  it('RGW 16.2 honours If-None-Match: * on PUT; the probe runs before the first conditional put, not at open', async () => {
    const b = await bucket('cond');
    const store = await opened(b);
    try {
      const atOpen = storeMetrics(store)!;
      assert.deepEqual([atOpen.head, atOpen.put, atOpen.delete], [1, 0, 0], 'open is one HeadBucket and writes nothing');
      assert.equal(store.capabilities.conditionalPut, false, 'not known before the probe');
      // Either may reach the server first: exactly one wins, the other gets BlobExistsError.
      const results = await Promise.allSettled(['a', 'b'].map((v) => store.put('config', Buffer.from(v), { ifNotExists: true })));
      const won = results.findIndex((r) => r.status === 'fulfilled');
      assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1, JSON.stringify(results));
      assert.equal(((results[1 - won] as PromiseRejectedResult).reason as { code?: string }).code, 'BLOB_EXISTS');
      assert.equal((await store.get('config')).toString(), ['a', 'b'][won]);
      assert.equal(store.capabilities.conditionalPut, true);
      const m = storeMetrics(store)!;
      assert.ok(m.operations.PutObject >= 2 + 2, 'one probe (two PUTs) shared by both callers, then two conditional PUTs');
      assert.equal(m.operations.DeleteObject, 1, 'one probe');
      // The probe object is gone and was never a blob.
      const r = await rgw();
      const listed = await r.client.send(new ListObjectsV2Command({ Bucket: b }));
      assert.deepEqual(
        (listed.Contents ?? []).map((o) => o.Key),
        ['repo/config'],
      );
    } finally {
      await store.close();
    }
  });

  it('puts below the threshold are one PutObject; above it a multipart upload with parts in parallel', async () => {
    const b = await bucket('mp');
    const store = await opened(b, 'repo', { concurrency: 4, s3: { multipartThreshold: 8 * MiB, partSize: 5 * MiB } });
    try {
      const small = randomBytes(8 * MiB);
      await store.put('data/00/small', small, { kind: 'data' });
      let m = storeMetrics(store)!;
      assert.equal(m.operations.PutObject, 1);
      assert.equal(m.operations.UploadPart, undefined);

      const big = randomBytes(20 * MiB + 3);
      const before = storeMetrics(store)!;
      await store.put('data/01/big', big, { kind: 'data' });
      m = storeMetrics(store)!;
      const delta = (k: string) => (m.operations[k] ?? 0) - (before.operations[k] ?? 0);
      assert.equal(delta('CreateMultipartUpload'), 1);
      assert.equal(delta('UploadPart'), 5, '20 MiB + 3 bytes in 5 MiB parts');
      assert.equal(delta('CompleteMultipartUpload'), 1);
      assert.equal(delta('PutObject'), 0);
      assert.ok(m.bytesUp - before.bytesUp >= big.length);

      const r = await rgw();
      const h = await r.client.send(new HeadObjectCommand({ Bucket: b, Key: 'repo/data/01/big' }));
      assert.equal(h.ContentLength, big.length);
      assert.match(h.ETag ?? '', /-5"?$/, 'a multipart ETag names its part count');
      assert.ok((await store.get('data/01/big')).equals(big));
      assert.ok((await store.get('data/01/big', { offset: 5 * MiB - 10, length: 20 })).equals(big.subarray(5 * MiB - 10, 5 * MiB + 10)));
    } finally {
      await store.close();
    }
  });

  it('with the default settings a 16 MiB pack is a single PUT and a 40 MiB one is 3 parts', async () => {
    const b = await bucket('mpdef');
    const store = await opened(b);
    try {
      const base = storeMetrics(store)!;
      await store.put('data/aa/pack16', randomBytes(16 * MiB), { kind: 'data' });
      let m = storeMetrics(store)!;
      assert.equal((m.operations.PutObject ?? 0) - (base.operations.PutObject ?? 0), 1);
      await store.put('data/bb/pack40', randomBytes(40 * MiB), { kind: 'data' });
      m = storeMetrics(store)!;
      assert.equal(m.operations.UploadPart, 3);
      assert.equal(m.operations.CompleteMultipartUpload, 1);
      assert.equal((await store.head('data/bb/pack40'))?.size, 40 * MiB);
    } finally {
      await store.close();
    }
  });

  it('every upload carries Content-MD5, and the server refuses a body that does not match it', async () => {
    const r = await rgw();
    const b = await bucket('md5');
    // Low level: a wrong Content-MD5 is refused with BadDigest.
    const body = Buffer.from('the bytes that were meant');
    const wrong = createHash('md5').update('other bytes').digest('base64');
    await assert.rejects(
      r.client.send(new PutObjectCommand({ Bucket: b, Key: 'raw', Body: body, ContentMD5: wrong })),
      (e: Error & { $metadata?: { httpStatusCode?: number } }) => e.name === 'BadDigest' && e.$metadata?.httpStatusCode === 400,
    );
    await assert.rejects(r.client.send(new GetObjectCommand({ Bucket: b, Key: 'raw' })), /NoSuchKey|not exist/i);

    // Through the store: record the headers, then corrupt bodies after the MD5 was computed.
    const store = await rawStore(b, { multipartThreshold: 5 * MiB, partSize: 5 * MiB, conditionalPut: true });
    const seen: Record<string, number> = {};
    let corrupt = false;
    store.client.middlewareStack.add(
      (next, context) => async (args) => {
        const req = args.request as { headers: Record<string, string>; body?: unknown };
        const op = String((context as { commandName?: string }).commandName);
        if (op === 'PutObjectCommand' || op === 'UploadPartCommand') {
          assert.match(req.headers['content-md5'] ?? '', /^[A-Za-z0-9+/]{22}==$/, `${op} without Content-MD5`);
          seen[op] = (seen[op] ?? 0) + 1;
          if (corrupt && Buffer.isBuffer(req.body) && req.body.length > 0) {
            const copy = Buffer.from(req.body);
            copy[copy.length >> 1] ^= 0xff;
            req.body = copy;
          }
        }
        return next(args);
      },
      { step: 'build', priority: 'low', name: 'testCorrupter' },
    );
    try {
      await store.put('data/00/ok', randomBytes(1000));
      await store.put('data/00/ok-mp', randomBytes(11 * MiB));
      assert.equal(seen.PutObjectCommand, 1);
      assert.equal(seen.UploadPartCommand, 3);
      corrupt = true;
      for (const [name, size] of [
        ['data/00/bad', 1000],
        ['data/00/bad-mp', 11 * MiB],
      ] as const) {
        await assert.rejects(store.put(name, randomBytes(size)), (e: S3StoreError) => {
          assert.equal(e.s3Code, 'BadDigest', e.message);
          assert.equal(e.retryable, true, 'a damaged body is worth sending again');
          return true;
        });
        assert.equal(await store.head(name), null, `${name} must not exist after a refused upload`);
      }
      const names: string[] = [];
      for await (const o of store.list('')) names.push(o.name);
      assert.deepEqual(names.sort(), ['data/00/ok', 'data/00/ok-mp']);
    } finally {
      await store.close();
    }
  });

  it('a multipart upload failing midway is aborted: nothing listed, no upload left, the next put succeeds', async () => {
    const r = await rgw();
    const b = await bucket('mpfail');
    const store = await rawStore(b, { multipartThreshold: 5 * MiB, partSize: 5 * MiB, partConcurrency: 2, conditionalPut: true });
    let failPart = 3;
    store.client.middlewareStack.add(
      (next, context) => async (args) => {
        const input = (args as { input?: { PartNumber?: number } }).input;
        if ((context as { commandName?: string }).commandName === 'UploadPartCommand' && input?.PartNumber === failPart) {
          failPart = 0;
          throw Object.assign(new Error('We encountered an internal error. Please try again.'), {
            name: 'InternalError',
            Code: 'InternalError',
            $metadata: { httpStatusCode: 500 },
          });
        }
        return next(args);
      },
      { step: 'initialize', name: 'testFailOnePart' },
    );
    try {
      const data = randomBytes(22 * MiB);
      await assert.rejects(store.put('data/00/p', data), (e: S3StoreError) => {
        assert.equal(e.code, 'S3_SERVER_ERROR');
        assert.equal(e.retryable, true);
        return true;
      });
      assert.equal(await store.head('data/00/p'), null);
      const uploads = await r.client.send(new ListMultipartUploadsCommand({ Bucket: b }));
      assert.equal((uploads.Uploads ?? []).length, 0, 'the failed upload was aborted');
      await store.put('data/00/p', data);
      assert.ok((await store.get('data/00/p')).equals(data));
    } finally {
      await store.close();
    }
  });

  it('the storage class applies to data puts only (single and multipart); metadata stays STANDARD', async () => {
    const r = await rgw();
    const b = await bucket('sc');
    const store = await opened(b, 'repo', { storageClass: 'STANDARD_IA', s3: { multipartThreshold: 5 * MiB, partSize: 5 * MiB } });
    try {
      await store.put('data/00/pack', randomBytes(1000), { kind: 'data' });
      await store.put('data/01/bigpack', randomBytes(6 * MiB), { kind: 'data' });
      await store.put('index/i1', randomBytes(1000), { kind: 'metadata' });
      await store.put('config', Buffer.from('{}'), { ifNotExists: true });
      const cls = async (k: string) => (await r.client.send(new HeadObjectCommand({ Bucket: b, Key: `repo/${k}` }))).StorageClass ?? 'STANDARD';
      assert.equal(await cls('data/00/pack'), 'STANDARD_IA');
      assert.equal(await cls('data/01/bigpack'), 'STANDARD_IA');
      assert.equal(await cls('index/i1'), 'STANDARD');
      assert.equal(await cls('config'), 'STANDARD');
    } finally {
      await store.close();
    }
  });

  it('deleteMany uses DeleteObjects with Content-MD5 and no SDK checksum headers', async () => {
    const b = await bucket('delmany');
    const store = await opened(b);
    const headers: Record<string, string>[] = [];
    const s3 = findS3(store);
    s3.client.middlewareStack.add(
      (next, context) => async (args) => {
        if ((context as { commandName?: string }).commandName === 'DeleteObjectsCommand') {
          headers.push({ ...(args.request as { headers: Record<string, string> }).headers });
        }
        return next(args);
      },
      { step: 'finalizeRequest', priority: 'low', name: 'testHeaderSpy' },
    );
    try {
      const names = Array.from({ length: 1203 }, (_, i) => `data/${String(i % 256).padStart(2, '0')}/p${i}`);
      for (let i = 0; i < names.length; i += 64) await Promise.all(names.slice(i, i + 64).map((n) => store.put(n, Buffer.from(n))));
      const before = storeMetrics(store)!;
      await (store as unknown as { deleteMany(n: string[]): Promise<void> }).deleteMany([...names.slice(0, 1200), 'data/00/never-existed']);
      const m = storeMetrics(store)!;
      assert.equal(m.operations.DeleteObjects - (before.operations.DeleteObjects ?? 0), 2, '1201 keys = 2 requests');
      assert.equal(headers.length, 2);
      for (const h of headers) {
        assert.match(h['content-md5'] ?? '', /^[A-Za-z0-9+/]{22}==$/);
        assert.deepEqual(Object.keys(h).filter((k) => /checksum/i.test(k)), []);
      }
      const left: string[] = [];
      for await (const o of store.list('data/')) left.push(o.name);
      assert.deepEqual(left.sort(), names.slice(1200).sort());
    } finally {
      await store.close();
    }
  });

  it('request metrics count requests and bytes per billing class', async () => {
    const b = await bucket('meter');
    const store = await opened(b);
    try {
      const start = storeMetrics(store)!;
      assert.equal(start.countedPer, 'wire');
      assert.deepEqual([start.head, start.put, start.total], [1, 0, 1], 'open: one HeadBucket');
      await store.put('a/1', Buffer.alloc(1000, 1));
      await store.put('a/2', Buffer.alloc(500, 2));
      assert.equal((await store.get('a/1')).length, 1000);
      assert.equal((await store.get('a/2', { offset: 100, length: 50 })).length, 50);
      await store.head('a/1');
      await store.head('a/missing');
      for await (const _ of store.list('a/')) void _;
      await store.delete('a/1');
      const m: StoreMetrics = storeMetrics(store)!;
      assert.equal(m.put - start.put, 2);
      assert.equal(m.get - start.get, 2);
      assert.equal(m.head - start.head, 2);
      assert.equal(m.list - start.list, 1);
      assert.equal(m.delete - start.delete, 1);
      assert.equal(m.failed - start.failed, 1, 'the HEAD of a missing object is a failed (404) request');
      assert.equal(m.bytesUp - start.bytesUp, 1500);
      assert.ok(m.bytesDown - start.bytesDown >= 1050, 'object bytes down (plus the listing XML)');
      assert.equal(m.total, m.put + m.get + m.head + m.list + m.delete);
      // A snapshot, not a live view.
      await store.put('a/3', Buffer.alloc(1));
      assert.equal(m.put - start.put, 2);
    } finally {
      await store.close();
    }
  });

  it('a prefix isolates repositories in one bucket; keys that are not blob names are not listed', async () => {
    const r = await rgw();
    const b = await bucket('iso');
    const one = await opened(b, 'one');
    const two = await opened(b, 'one-more/deeper');
    try {
      await one.put('data/00/x', Buffer.from('1'));
      await two.put('data/00/y', Buffer.from('2'));
      await r.client.send(new PutObjectCommand({ Bucket: b, Key: 'one/folder/', Body: '' }));
      await r.client.send(new PutObjectCommand({ Bucket: b, Key: 'one/.tmp-probe-leftover', Body: 'x' }));
      const names = async (s: BlobStore) => {
        const out: string[] = [];
        for await (const o of s.list('')) out.push(o.name);
        return out.sort();
      };
      assert.deepEqual(await names(one), ['data/00/x']);
      assert.deepEqual(await names(two), ['data/00/y']);
      assert.equal(one.location, `s3://${b}/one/`);
    } finally {
      await one.close();
      await two.close();
    }
  });

  it('a missing bucket is a clear error at open', async () => {
    await assert.rejects(opened(`pl-missing-${randomBytes(4).toString('hex')}`), (e: S3StoreError) => {
      assert.equal(e.code, 'S3_NO_SUCH_BUCKET');
      assert.match(e.message, /does not exist/);
      assert.match(e.message, /create it/);
      return true;
    });
  });

  it('a missing bucket is a clear error on every operation of an already open store', async () => {
    const store = await rawStore(`pl-missing-${randomBytes(4).toString('hex')}`, { conditionalPut: true });
    try {
      await assert.rejects(store.put('x/y', Buffer.from('z')), (e: S3StoreError) => e.code === 'S3_NO_SUCH_BUCKET');
      await assert.rejects(store.get('x/y'), (e: S3StoreError) => e.code === 'S3_NO_SUCH_BUCKET');
      await assert.rejects(
        (async () => {
          for await (const _ of store.list('')) void _;
        })(),
        (e: S3StoreError) => e.code === 'S3_NO_SUCH_BUCKET',
      );
    } finally {
      await store.close();
    }
  });

  it('wrong credentials are a clear error and are not retried', async () => {
    const r = await rgw();
    const b = await bucket('denied');
    let retries = 0;
    for (const credentials of [
      { accessKeyId: r.credentials.accessKeyId, secretAccessKey: 'not-the-secret' },
      { accessKeyId: 'NOSUCHKEY', secretAccessKey: 'whatever' },
    ]) {
      const store = new RetryingStore(await rawStore(b, { credentials, conditionalPut: true }), {
        onRetry: () => retries++,
        baseDelayMs: 1,
      });
      try {
        await assert.rejects(store.put('x/y', Buffer.from('z')), (e: S3StoreError) => {
          assert.equal(e.code, 'S3_ACCESS_DENIED', e.message);
          assert.match(e.message, /AWS_ACCESS_KEY_ID|credentials/);
          return true;
        });
        await assert.rejects(store.get('x/y'), (e: S3StoreError) => e.code === 'S3_ACCESS_DENIED');
      } finally {
        await store.close();
      }
    }
    assert.equal(retries, 0);
  });

  it('no credentials and no region are clear errors', async () => {
    const saved = { ...process.env };
    for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL']) {
      delete process.env[k];
    }
    Object.assign(process.env, {
      AWS_CONFIG_FILE: '/nonexistent/pilotlight-test/config',
      AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/pilotlight-test/credentials',
      AWS_EC2_METADATA_DISABLED: 'true',
    });
    try {
      const port = await unusedPort();
      await assert.rejects(openStore('s3://some-bucket/x', { s3Endpoint: `http://127.0.0.1:${port}`, retry: { maxAttempts: 1 } }), (e: S3StoreError) => {
        assert.equal(e.code, 'S3_NO_CREDENTIALS', e.message);
        assert.match(e.message, /AWS_ACCESS_KEY_ID/);
        return true;
      });
      process.env.AWS_ACCESS_KEY_ID = 'x';
      process.env.AWS_SECRET_ACCESS_KEY = 'y';
      await assert.rejects(openStore('s3://some-bucket/x', { retry: { maxAttempts: 1 } }), (e: S3StoreError) => {
        assert.equal(e.code, 'S3_NO_REGION', e.message);
        assert.match(e.message, /AWS_REGION/);
        return true;
      });
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });

  it('a refused connection (nothing listening) is a clear error after the retries', async () => {
    const port = await unusedPort();
    let retries = 0;
    const t0 = Date.now();
    await assert.rejects(
      openStore('s3://some-bucket/repo', {
        s3Endpoint: `http://127.0.0.1:${port}`,
        retry: { maxAttempts: 3, baseDelayMs: 20, onRetry: () => retries++ },
        s3: { credentials: { accessKeyId: 'a', secretAccessKey: 'b' } },
      }),
      (e: S3StoreError) => {
        assert.equal(e.code, 'S3_UNREACHABLE', e.message);
        assert.match(e.message, new RegExp(`127\\.0\\.0\\.1:${port}.*refused`));
        assert.match(e.message, /s3-endpoint/);
        return true;
      },
    );
    assert.equal(retries, 2);
    assert.ok(Date.now() - t0 < 10_000);
  });

  it('a server that accepts connections but never answers is a clear error, not a hang', async () => {
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((sock) => {
      sockets.add(sock);
      sock.on('error', () => {});
      sock.resume(); // read the request, never answer
    });
    await new Promise<void>((res) => silent.listen(0, '127.0.0.1', res));
    const port = (silent.address() as net.AddressInfo).port;
    let retries = 0;
    const store = await openStore('s3://some-bucket/repo', {
      s3Endpoint: `http://127.0.0.1:${port}`,
      retry: { maxAttempts: 2, baseDelayMs: 10, onRetry: () => retries++ },
      s3: { credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, idleTimeoutMs: 300, conditionalPut: true },
    }).catch((e: S3StoreError) => e);
    try {
      assert.ok(store instanceof S3StoreError, 'open (HeadBucket) must fail');
      assert.equal(store.code, 'S3_NETWORK', store.message);
      assert.match(store.message, /cannot reach|timed out/);
      assert.equal(retries, 1);
    } finally {
      for (const sock of sockets) sock.destroy();
      await new Promise((res) => silent.close(res));
    }
  });

  it('connections cut by the network are retried and the operation completes', async () => {
    // A TCP proxy in front of RGW that resets the connection carrying each of the next `resets` requests.
    const r = await rgw();
    const target = new URL(r.endpoint);
    let resets = 0;
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((client) => {
      const upstream = net.connect(Number(target.port), target.hostname);
      for (const sock of [client, upstream]) {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        sock.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.on('data', (chunk) => {
        if (resets > 0) {
          resets--;
          client.resetAndDestroy();
          upstream.destroy();
          return;
        }
        upstream.write(chunk);
      });
      upstream.pipe(client);
    });
    await new Promise<void>((res) => proxy.listen(0, '127.0.0.1', res));
    const port = (proxy.address() as net.AddressInfo).port;
    const b = await bucket('cut');
    const retried: string[] = [];
    const store = await openStore(`s3://${b}/repo`, {
      s3Endpoint: `http://127.0.0.1:${port}`,
      retry: { baseDelayMs: 10, onRetry: (i) => retried.push(`${i.op}:${(i.error as S3StoreError).code}`) },
      s3: { credentials: r.credentials, conditionalPut: true },
    });
    try {
      resets = 2;
      const data = randomBytes(300_000);
      await store.put('data/00/p', data);
      assert.deepEqual(retried, ['put:S3_NETWORK', 'put:S3_NETWORK']);
      assert.ok((await store.get('data/00/p')).equals(data));
      assert.equal(storeMetrics(store)!.retries, 2);
    } finally {
      await store.close();
      for (const s of sockets) s.destroy();
      await new Promise((res) => proxy.close(res));
    }
  });
});
