import assert from 'node:assert/strict';
import { it } from 'node:test';
import { argon2id } from '../../src/repo/argon2.js';
import { Rng } from '../support/images.js';

// phc-winner-argon2's test.c: argon2id, version 0x13, t = 2, m = 2^16 KiB, p = 1
const VECTOR = '09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7';

it('argon2id matches the reference implementation test vector, native and wasm', async () => {
  for (const impl of ['native', 'wasm'] as const) {
    const r = await argon2id('password', Buffer.from('somesalt'), { m: 1 << 16, t: 2, p: 1 }, impl);
    assert.equal(r.implementation, impl);
    assert.equal(r.key.toString('hex'), VECTOR, impl);
  }
});

it('native and wasm derive the same key for other costs, salts and non-ASCII passwords', async () => {
  const rng = new Rng(11);
  for (const [password, cost] of [
    ['pässwörd ✓', { m: 8 * 1024, t: 3, p: 1 }],
    ['a', { m: 8 * 1024, t: 1, p: 2 }],
    ['x'.repeat(200), { m: 9 * 1024, t: 2, p: 4 }],
  ] as const) {
    const salt = rng.bytes(32);
    const n = await argon2id(password, salt, cost, 'native');
    const w = await argon2id(password, salt, cost, 'wasm');
    assert.equal(n.implementation, 'native');
    assert.deepEqual(n.key, w.key, `${JSON.stringify(cost)}`);
    assert.equal(n.key.length, 32);
  }
});
