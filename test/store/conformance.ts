/**
 * The one conformance suite every BlobStore backend runs (the abstract-level way):
 * call `storeConformance('fs', factory)` from the backend's own test file.
 * Each test gets a fresh, empty store from the factory.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { BlobExistsError, BlobNotFoundError, BlobStore } from '../../src/store/blob-store.js';

export interface StoreFactory {
  create(): Promise<BlobStore>;
  /** Removes what create() made. */
  destroy(store: BlobStore): Promise<void>;
  /** Whether the backend offers openAppend (puts in pieces); its tests run only then. */
  appends: boolean;
}

async function collect(store: BlobStore, prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const b of store.list(prefix)) {
    assert.ok(!out.has(b.name), `list yielded ${b.name} twice`);
    out.set(b.name, b.size);
  }
  return out;
}

export function storeConformance(backend: string, factory: StoreFactory): void {
  const withStore = (fn: (s: BlobStore) => Promise<void>) => async () => {
    const store = await factory.create();
    try {
      await fn(store);
    } finally {
      await factory.destroy(store);
    }
  };

  describe(`BlobStore conformance: ${backend}`, () => {
    it(
      'put then get returns the same bytes (read-after-write)',
      withStore(async (s) => {
        const data = randomBytes(200_000);
        await s.put('data/ab/abcdef', data);
        assert.deepEqual(await s.get('data/ab/abcdef'), data);
        assert.deepEqual(await s.head('data/ab/abcdef'), { name: 'data/ab/abcdef', size: data.length });
      }),
    );

    it(
      'empty objects are objects',
      withStore(async (s) => {
        await s.put('x/empty', new Uint8Array(0));
        assert.equal((await s.get('x/empty')).length, 0);
        assert.equal((await s.head('x/empty'))?.size, 0);
      }),
    );

    it(
      'ranged get returns exactly the range; past the end is an error',
      withStore(async (s) => {
        const data = randomBytes(10_000);
        await s.put('r/obj', data);
        assert.deepEqual(await s.get('r/obj', { offset: 0, length: 1 }), data.subarray(0, 1));
        assert.deepEqual(await s.get('r/obj', { offset: 1234, length: 5000 }), data.subarray(1234, 6234));
        assert.deepEqual(await s.get('r/obj', { offset: 9000, length: 1000 }), data.subarray(9000));
        await assert.rejects(s.get('r/obj', { offset: 9000, length: 1001 }));
        // the same with a buffer to read into: a store that reads into it (capabilities.readsInto)
        // returns a view of it, at its start; one that does not returns a buffer of its own
        const into = new Uint8Array(new SharedArrayBuffer(8192));
        const got = await s.get('r/obj', { offset: 1234, length: 5000, into });
        assert.deepEqual(Buffer.from(got), data.subarray(1234, 6234));
        if (s.capabilities.readsInto) {
          assert.equal(got.buffer, into.buffer, 'a readsInto store returns a view of the buffer it was given');
          assert.equal(got.byteOffset, into.byteOffset);
          assert.deepEqual(Buffer.from(into.subarray(0, 5000)), data.subarray(1234, 6234));
        }
        await assert.rejects(s.get('r/obj', { offset: 9000, length: 1001, into }), /past the end/);
        await assert.rejects(s.get('r/obj', { offset: 20_000, length: 1, into }), /past the end/);
      }),
    );

    it(
      'missing objects: get throws BlobNotFoundError, head returns null, delete succeeds',
      withStore(async (s) => {
        await assert.rejects(s.get('nope/missing'), (e: unknown) => (e as BlobNotFoundError).code === 'BLOB_NOT_FOUND');
        await assert.rejects(
          s.get('nope/missing', { offset: 0, length: 1 }),
          (e: unknown) => (e as BlobNotFoundError).code === 'BLOB_NOT_FOUND',
        );
        assert.equal(await s.head('nope/missing'), null);
        await s.delete('nope/missing');
      }),
    );

    it(
      'put overwrites; delete removes',
      withStore(async (s) => {
        await s.put('o/a', Buffer.from('one'));
        await s.put('o/a', Buffer.from('two!'));
        assert.equal((await s.get('o/a')).toString(), 'two!');
        await s.delete('o/a');
        assert.equal(await s.head('o/a'), null);
        assert.equal((await collect(s, 'o/')).size, 0);
      }),
    );

    it(
      'ifNotExists refuses to overwrite and keeps the first content',
      withStore(async (s) => {
        await s.put('snapshots/s1', Buffer.from('first'), { ifNotExists: true });
        await assert.rejects(
          s.put('snapshots/s1', Buffer.from('second'), { ifNotExists: true }),
          (e: unknown) => (e as BlobExistsError).code === 'BLOB_EXISTS',
        );
        assert.equal((await s.get('snapshots/s1')).toString(), 'first');
      }),
    );

    it(
      'concurrent ifNotExists puts of one name: exactly one wins',
      withStore(async (s) => {
        if (!s.capabilities.conditionalPut) return;
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, (_, i) => s.put('locks/race', Buffer.from(`writer ${i}`), { ifNotExists: true })),
        );
        const won = results.filter((r) => r.status === 'fulfilled').length;
        assert.equal(won, 1, `expected one winner, got ${won}`);
        assert.match((await s.get('locks/race')).toString(), /^writer \d$/);
      }),
    );

    it(
      'list by prefix yields each matching object once, with its size',
      withStore(async (s) => {
        const names = ['data/00/a1', 'data/00/a2', 'data/ff/b1', 'meta/00/c1', 'index/i1', 'dataset/x'];
        await Promise.all(names.map((n, i) => s.put(n, Buffer.alloc(i + 1, 7))));
        const data = await collect(s, 'data/');
        assert.deepEqual([...data.keys()].sort(), ['data/00/a1', 'data/00/a2', 'data/ff/b1']);
        assert.equal(data.get('data/ff/b1'), 3);
        assert.deepEqual([...(await collect(s, 'data/00/')).keys()].sort(), ['data/00/a1', 'data/00/a2']);
        assert.deepEqual([...(await collect(s, 'data')).keys()].sort(), [
          'data/00/a1',
          'data/00/a2',
          'data/ff/b1',
          'dataset/x',
        ]);
        assert.equal((await collect(s, '')).size, names.length);
        assert.equal((await collect(s, 'nothing/')).size, 0);
      }),
    );

    it(
      'list copes with more objects than one page of a listing API',
      withStore(async (s) => {
        const n = 1100;
        const pending: Promise<void>[] = [];
        for (let i = 0; i < n; i++) {
          pending.push(s.put(`many/${String(i).padStart(5, '0')}`, Buffer.from([i & 0xff])));
          if (pending.length >= 32) await Promise.all(pending.splice(0));
        }
        await Promise.all(pending);
        assert.equal((await collect(s, 'many/')).size, n);
      }),
    );

    it(
      'invalid names are refused',
      withStore(async (s) => {
        for (const bad of ['', '/abs', 'a//b', '../up', 'a/../b', 'sp ace', 'a/.tmp-x']) {
          await assert.rejects(s.put(bad, Buffer.from('x')), /invalid object name/);
        }
      }),
    );

    it(
      `openAppend is ${factory.appends ? '' : 'not '}offered`,
      withStore(async (s) => {
        assert.equal(typeof s.openAppend === 'function', factory.appends);
      }),
    );

    if (factory.appends) {
      it(
        'openAppend: the pieces become one object at commit, and nothing is visible before it',
        withStore(async (s) => {
          // over 5 MiB: a multipart upload where the backend's threshold is that low (the bare S3 store here)
          const parts = [randomBytes(70_000), randomBytes(1), Buffer.alloc(0), randomBytes(6 * 1024 * 1024 + 5)];
          const a = await s.openAppend!('data/');
          await a.append(parts.slice(0, 2));
          await a.append(parts.slice(2));
          const whole = Buffer.concat(parts);
          assert.equal(a.size, whole.length);
          assert.equal((await collect(s, '')).size, 0, 'nothing is listed before commit');
          assert.equal(await s.head('data/cd/cdef'), null);
          await a.commit('data/cd/cdef', { kind: 'data' });
          assert.ok((await s.get('data/cd/cdef')).equals(whole));
          assert.deepEqual([...(await collect(s, ''))], [['data/cd/cdef', whole.length]]);
          await assert.rejects(a.append([randomBytes(3)]), /committed or aborted/);
        }),
      );

      it(
        'openAppend: abort leaves nothing; a commit onto a taken name with ifNotExists fails and leaves the object',
        withStore(async (s) => {
          const dropped = await s.openAppend!('data/');
          await dropped.append([randomBytes(1000)]);
          await dropped.abort();
          await dropped.abort();
          assert.equal((await collect(s, '')).size, 0);

          const first = randomBytes(500);
          await s.put('data/ee/eeee', first);
          const late = await s.openAppend!('data/');
          await late.append([randomBytes(600)]);
          await assert.rejects(late.commit('data/ee/eeee', { ifNotExists: true }), BlobExistsError);
          await late.abort(); // a backend may keep the bytes after a failed commit (S3's spool): abort drops them
          assert.ok((await s.get('data/ee/eeee')).equals(first));
          assert.deepEqual([...(await collect(s, ''))], [['data/ee/eeee', 500]]);
        }),
      );
    }

    it(
      'large objects round-trip (multi-MiB)',
      withStore(async (s) => {
        const data = randomBytes(12 * 1024 * 1024 + 17);
        await s.put('data/big/pack', data, { kind: 'data' });
        const back = await s.get('data/big/pack');
        assert.equal(back.length, data.length);
        assert.ok(back.equals(data));
        const tail = await s.get('data/big/pack', { offset: data.length - 100, length: 100 });
        assert.ok(tail.equals(data.subarray(data.length - 100)));
      }),
    );
  });
}
