import assert from 'node:assert/strict';
import { it } from 'node:test';
import { createKeyedHasher } from '../../src/repo/hasher.js';
import { Rng } from '../support/images.js';

const KEY = Buffer.from('whats the Elvish word for friend'); // the BLAKE3 test-vector key

it('keyed BLAKE3 matches the official test vector (empty input), native and wasm', async () => {
  for (const impl of ['native', 'wasm'] as const) {
    const h = await createKeyedHasher(KEY, impl);
    assert.equal(h.implementation, impl);
    assert.equal(h.hash(Buffer.alloc(0)).toString('hex'), '92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26');
  }
});

it('native and wasm give the same ids for chunks of every size class', async () => {
  const native = await createKeyedHasher(KEY, 'native');
  const wasm = await createKeyedHasher(KEY, 'wasm');
  const rng = new Rng(7);
  for (const n of [1, 63, 64, 1023, 1024, 1025, 4096, 65535, 65536]) {
    const data = rng.bytes(n);
    assert.deepEqual(native.hash(data), wasm.hash(data), `size ${n}`);
  }
});

it('the key changes the id (ids leak nothing without it)', async () => {
  const a = await createKeyedHasher(KEY);
  const b = await createKeyedHasher(Buffer.alloc(32, 1));
  const data = Buffer.from('same chunk');
  assert.notDeepEqual(a.hash(data), b.hash(data));
});

it('a stream over pieces gives the one-shot hash of their concatenation, native and wasm, beside hash() calls', async () => {
  const rng = new Rng(9);
  const pieces = [0, 1, 1023, 65536, 70_001].map((n) => rng.bytes(n));
  const whole = Buffer.concat(pieces);
  for (const impl of ['native', 'wasm'] as const) {
    const h = await createKeyedHasher(KEY, impl);
    const s = await h.stream();
    for (const p of pieces) {
      s.update(p);
      h.hash(rng.bytes(100)); // hash() between updates must not disturb the stream
    }
    assert.deepEqual(s.digest(), h.hash(whole), impl);
  }
});
