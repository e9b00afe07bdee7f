/**
 * RetryingStore and MeteredStore behaviour, with FaultyStore (the fault-injection test
 * double) over a local FsStore. The same decorators wrap the S3 store in openStore;
 * s3-store.test.ts checks them against real connection cuts in front of RGW.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { BlobStore } from '../../src/store/blob-store.js';
import { FaultyStore, httpError, netError } from '../../src/store/faulty-store.js';
import { FsStore } from '../../src/store/fs-store.js';
import { MeteredStore, storeMetrics } from '../../src/store/metered-store.js';
import { openStore } from '../../src/store/open-store.js';
import { RetryInfo, RetryingStore, isTransientError } from '../../src/store/retrying-store.js';
import { S3StoreError } from '../../src/store/s3-store.js';
import { storeConformance } from './conformance.js';

const roots: string[] = [];
after(() => Promise.all(roots.map((r) => fsp.rm(r, { recursive: true, force: true }))));

async function setup(opts: { maxAttempts?: number } = {}) {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-retry-'));
  roots.push(root);
  const faulty = new FaultyStore(new FsStore(root));
  const retries: RetryInfo[] = [];
  const sleeps: number[] = [];
  const store = new RetryingStore(faulty, {
    maxAttempts: opts.maxAttempts ?? 5,
    baseDelayMs: 100,
    maxDelayMs: 1000,
    random: () => 1, // the top of each jitter window, so delays are predictable
    sleep: async (ms) => {
      sleeps.push(ms);
    },
    onRetry: (i) => retries.push(i),
  });
  return { faulty, store, retries, sleeps };
}

// The decorators must not break any guarantee: run the suite through them, with a
// fault injected into the first call of every kind.
storeConformance('fs through FaultyStore (one 503 per op) + RetryingStore', {
  async create() {
    const { faulty, store } = await setup();
    for (const op of ['put', 'get', 'head', 'list', 'delete'] as const) faulty.failNext(op, httpError(503, 'SlowDown'));
    return new MeteredStore(store);
  },
  async destroy(store: BlobStore) {
    await store.close();
  },
  appends: false,
});

describe('RetryingStore', () => {
  it('retries 503 SlowDown, 500 and connection resets with exponential backoff, then succeeds', async () => {
    const { faulty, store, retries, sleeps } = await setup();
    faulty
      .failNext('put', httpError(503, 'SlowDown', 'Please reduce your request rate.'), 2)
      .failNext('put', httpError(500, 'InternalError'))
      .failNext('put', netError('ECONNRESET'));
    await store.put('data/00/a', Buffer.from('payload'));
    assert.equal(faulty.calls.put, 5);
    assert.deepEqual(sleeps, [100, 200, 400, 800]);
    assert.deepEqual(
      retries.map((r) => r.attempt),
      [1, 2, 3, 4],
    );
    assert.equal((await store.get('data/00/a')).toString(), 'payload');
    assert.equal(store.retryCount, 4);
  });

  it('the delay is capped and jittered within [c/2, c], c = min(max, base * 2^n)', async () => {
    const seen: number[] = [];
    const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-retry-'));
    roots.push(root);
    const faulty = new FaultyStore(new FsStore(root)).failNext('head', netError('ETIMEDOUT'), 7);
    let i = 0;
    const randoms = [0.5, 0, 1, 0.25, 1, 1, 1];
    const store = new RetryingStore(faulty, {
      maxAttempts: 8,
      baseDelayMs: 100,
      maxDelayMs: 1000,
      random: () => randoms[i++],
      sleep: async (ms) => void seen.push(ms),
    });
    assert.equal(await store.head('x/y'), null);
    assert.deepEqual(seen, [75, 100, 400, 500, 1000, 1000, 1000]);
  });

  it('gives up after maxAttempts and throws the last error', async () => {
    const { faulty, store } = await setup({ maxAttempts: 3 });
    faulty.failNext('get', httpError(503, 'SlowDown'), 10);
    await assert.rejects(store.get('a/b'), /SlowDown/);
    assert.equal(faulty.calls.get, 3);
  });

  for (const [label, error] of [
    ['403 AccessDenied', httpError(403, 'AccessDenied')],
    ['404 NoSuchBucket', httpError(404, 'NoSuchBucket')],
    ['400 InvalidArgument', httpError(400, 'InvalidArgument')],
    ['412 PreconditionFailed', httpError(412, 'PreconditionFailed')],
    ['DNS ENOTFOUND', netError('ENOTFOUND')],
    ['an S3StoreError marked not retryable', new S3StoreError('bucket missing', 'S3_NO_SUCH_BUCKET', false, 404)],
  ] as const) {
    it(`does not retry ${label}`, async () => {
      const { faulty, store, retries } = await setup();
      faulty.failNext('put', error, 5);
      await assert.rejects(store.put('a/b', Buffer.from('x')), (e) => e === error);
      assert.equal(faulty.calls.put, 1);
      assert.equal(retries.length, 0);
    });
  }

  it('does not retry a missing object, an existing one, or a bad range', async () => {
    const { faulty, store, retries } = await setup();
    await assert.rejects(store.get('no/such'), (e: Error & { code?: string }) => e.code === 'BLOB_NOT_FOUND');
    await store.put('r/x', Buffer.from('abc'), { ifNotExists: true });
    await assert.rejects(store.put('r/x', Buffer.from('abc'), { ifNotExists: true }), (e: Error & { code?: string }) => e.code === 'BLOB_EXISTS');
    await assert.rejects(store.get('r/x', { offset: 2, length: 5 }), (e: Error & { code?: string }) => e.code === 'BLOB_RANGE');
    assert.equal(retries.length, 0);
    assert.equal(faulty.calls.get, 2);
  });

  it('an ifNotExists put whose answer was lost but which did store the object succeeds', async () => {
    const { faulty, store } = await setup();
    faulty.failNext('put', netError('ECONNRESET'), 1, 'after');
    await store.put('locks/l1', Buffer.from('mine'), { ifNotExists: true });
    assert.equal(faulty.calls.put, 2);
    // ... but not when somebody else's object is there.
    await faulty.inner.put('locks/l2', Buffer.from('theirs'));
    faulty.failNext('put', netError('ECONNRESET'), 1, 'before');
    await assert.rejects(store.put('locks/l2', Buffer.from('mine'), { ifNotExists: true }), (e: Error & { code?: string }) => e.code === 'BLOB_EXISTS');
  });

  it('a listing cut midway starts again and still yields each object once', async () => {
    const { faulty, store, retries } = await setup();
    for (let i = 0; i < 5; i++) await store.put(`l/${i}`, Buffer.from([i]));
    faulty.failNext('list', netError('ECONNRESET'), 1, 'after');
    const names: string[] = [];
    for await (const o of store.list('l/')) names.push(o.name);
    assert.deepEqual(names.sort(), ['l/0', 'l/1', 'l/2', 'l/3', 'l/4']);
    assert.equal(retries.length, 1);
  });

  it('classifies errors', () => {
    assert.equal(isTransientError(httpError(503, 'SlowDown')), true);
    assert.equal(isTransientError(httpError(502, 'BadGateway')), true);
    assert.equal(isTransientError(httpError(429, 'TooManyRequests')), true);
    assert.equal(isTransientError(httpError(400, 'RequestTimeout')), true);
    assert.equal(isTransientError(httpError(400, 'BadDigest')), true);
    assert.equal(isTransientError(httpError(400, 'InvalidRequest')), false);
    assert.equal(isTransientError(httpError(409, 'ConditionalRequestConflict')), true);
    assert.equal(isTransientError(httpError(409, 'BucketAlreadyExists')), false);
    assert.equal(isTransientError(httpError(403, 'AccessDenied')), false);
    assert.equal(isTransientError(httpError(404, 'NoSuchKey')), false);
    assert.equal(isTransientError(netError('ECONNRESET')), true);
    assert.equal(isTransientError(netError('EPIPE')), true);
    assert.equal(isTransientError(netError('ENETUNREACH')), true);
    assert.equal(isTransientError(Object.assign(new Error('wrapped'), { cause: netError('ECONNREFUSED') })), true);
    assert.equal(isTransientError(Object.assign(new Error('socket timed out'), { name: 'TimeoutError' })), true);
    assert.equal(isTransientError(new Error('invalid object name: "x y"')), false);
  });
});

describe('MeteredStore over a local directory', () => {
  it('counts one request per call, and bytes', async () => {
    const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-meter-'));
    roots.push(root);
    const store = await openStore(root);
    await store.put('a/1', Buffer.alloc(100));
    await store.get('a/1');
    await store.get('a/1', { offset: 10, length: 10 });
    await store.head('a/1');
    for await (const _ of store.list('a/')) void _;
    await store.delete('a/1');
    await assert.rejects(store.get('a/1'));
    assert.deepEqual(storeMetrics(store), {
      put: 1,
      get: 3,
      head: 1,
      list: 1,
      delete: 1,
      total: 7,
      failed: 1,
      retries: 0,
      bytesUp: 100,
      bytesDown: 110,
      operations: { put: 1, get: 3, head: 1, list: 1, delete: 1 },
      countedPer: 'call',
    });
    assert.equal(store.location, path.resolve(root));
    assert.equal((await openStore(`file://${root}`)).location, path.resolve(root));
  });

  it('openStore refuses unknown schemes and bucketless s3 locations with a clear message', async () => {
    await assert.rejects(openStore('gs://bucket/x'), /unsupported repository location.*s3:\/\/BUCKET/);
    await assert.rejects(openStore('s3:///prefix'), /names no bucket/);
    await assert.rejects(openStore('s3://bucket/p', { s3Endpoint: 'ftp://x' }), /http:\/\/ or https:\/\//);
  });
});

it('RetryingStore.openAppend: a commit that fails with a transient error is tried again, from the same bytes', async () => {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-retry-'));
  roots.push(root);
  const fs = new FsStore(root);
  let failures = 1;
  // FsStore with a commit that fails once before reaching the store (as an S3 PUT may)
  const flaky: BlobStore = new Proxy(fs, {
    get(target, key) {
      if (key === 'openAppend') {
        return async (near: string) => {
          const a = await target.openAppend(near);
          return {
            get size() {
              return a.size;
            },
            append: (parts: Uint8Array[]) => a.append(parts),
            commit: async (name: string, options?: { ifNotExists?: boolean }) => {
              if (failures-- > 0) throw httpError(503, 'SlowDown');
              return a.commit(name, options);
            },
            abort: () => a.abort(),
          };
        };
      }
      const v = Reflect.get(target, key, target);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  const store = new RetryingStore(flaky, { sleep: async () => {} });
  const a = await store.openAppend!('data/');
  await a.append([Buffer.from('a pack '), Buffer.from('in pieces')]);
  await a.commit('data/ab/abab');
  assert.equal(store.retryCount, 1);
  assert.equal((await store.get('data/ab/abab')).toString(), 'a pack in pieces');
  assert.equal(new RetryingStore(new FaultyStore(fs)).openAppend, undefined, 'not offered when the inner store has none');
});
