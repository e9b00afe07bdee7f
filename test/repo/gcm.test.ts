import assert from 'node:assert/strict';
import { it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { GCM_TAG_BYTES, gcm } from '../../src/repo/gcm.js';
import { Rng } from '../support/images.js';

const openssl = gcm('openssl');
const node = gcm('node');

it('the OpenSSL path is the one used on Linux (Node exports its EVP functions)', () => {
  if (process.platform !== 'linux') return;
  assert.equal(openssl.implementation, 'openssl');
  assert.equal(node.implementation, 'node');
});

it('AES-256-GCM test case 16 of the GCM specification (McGrew and Viega), both implementations', () => {
  const key = Buffer.from('feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308', 'hex');
  const iv = Buffer.from('cafebabefacedbaddecaf888', 'hex');
  const p = Buffer.from('d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39', 'hex');
  const a = Buffer.from('feedfacedeadbeeffeedfacedeadbeefabaddad2', 'hex');
  const c = '522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662';
  const t = '76fc6ece0f4e1768cddf8853bb2d551b';
  for (const g of [openssl, node]) {
    const out = Buffer.alloc(p.length + GCM_TAG_BYTES);
    assert.equal(g.sealInto(key, iv, a, p, out, 0), p.length + GCM_TAG_BYTES);
    assert.equal(out.subarray(0, p.length).toString('hex'), c, g.implementation);
    assert.equal(out.subarray(p.length).toString('hex'), t, g.implementation);
    const back = Buffer.alloc(p.length);
    assert.equal(g.openInto(key, iv, a, out.subarray(0, p.length), out.subarray(p.length), back, 0), true);
    assert.deepEqual(back, p);
  }
});

it('both implementations give the same bytes at every size and offset, into Buffers and shared memory, and open each other', () => {
  const rng = new Rng(12);
  for (const n of [0, 1, 15, 16, 17, 4095, 65536, 65536 + 45, 200_000]) {
    const key = rng.bytes(32);
    const nonce = rng.bytes(12);
    const ad = n % 2 ? rng.bytes(41) : null;
    const x = rng.bytes(n);
    const at = n % 7;
    const a = Buffer.alloc(at + n + GCM_TAG_BYTES + 5, 0xee);
    const b = new Uint8Array(new SharedArrayBuffer(at + n + GCM_TAG_BYTES + 5)).fill(0xee);
    assert.equal(openssl.sealInto(key, nonce, ad, x, a, at), n + GCM_TAG_BYTES);
    assert.equal(node.sealInto(key, nonce, ad, x, b, at), n + GCM_TAG_BYTES);
    assert.deepEqual(a, Buffer.from(b), `size ${n}`);
    assert.ok(a.subarray(at + n + GCM_TAG_BYTES).every((v) => v === 0xee), 'nothing written past the tag');
    assert.ok(a.subarray(0, at).every((v) => v === 0xee), 'nothing written before `at`');
    const body = a.subarray(at, at + n);
    const tag = a.subarray(at + n, at + n + GCM_TAG_BYTES);
    for (const [sealer, opener] of [
      [openssl, node],
      [node, openssl],
      [openssl, openssl],
    ] as const) {
      const out = new Uint8Array(new SharedArrayBuffer(n + 3));
      assert.equal(opener.openInto(key, nonce, ad, body, tag, out, 3), true, `${sealer.implementation} -> ${opener.implementation}, size ${n}`);
      assert.deepEqual(Buffer.from(out.subarray(3)), x);
    }
  }
});

it('a changed byte of body, tag, nonce, key or associated data fails authentication, in both implementations', () => {
  const rng = new Rng(13);
  const key = rng.bytes(32);
  const nonce = rng.bytes(12);
  const ad = rng.bytes(20);
  const x = rng.bytes(5000);
  const sealed = Buffer.alloc(x.length + GCM_TAG_BYTES);
  openssl.sealInto(key, nonce, ad, x, sealed, 0);
  const flip = (b: Buffer, i: number) => {
    const c = Buffer.from(b);
    c[i]! ^= 1;
    return c;
  };
  for (const g of [openssl, node]) {
    const body = sealed.subarray(0, x.length);
    const tag = sealed.subarray(x.length);
    const out = Buffer.alloc(x.length);
    assert.equal(g.openInto(key, nonce, ad, flip(body, 1234), tag, out, 0), false, `${g.implementation}: body`);
    assert.equal(g.openInto(key, nonce, ad, body, flip(tag, 15), out, 0), false, `${g.implementation}: tag`);
    assert.equal(g.openInto(key, flip(nonce, 0), ad, body, tag, out, 0), false, `${g.implementation}: nonce`);
    assert.equal(g.openInto(flip(key, 31), nonce, ad, body, tag, out, 0), false, `${g.implementation}: key`);
    assert.equal(g.openInto(key, nonce, flip(ad, 3), body, tag, out, 0), false, `${g.implementation}: associated data`);
    assert.equal(g.openInto(key, nonce, null, body, tag, out, 0), false, `${g.implementation}: associated data left out`);
    assert.equal(g.openInto(key, nonce, ad, body, tag.subarray(0, 12), out, 0), false, `${g.implementation}: short tag`);
    assert.equal(g.openInto(key, nonce, ad, body, tag, out, 0), true, `${g.implementation}: untouched`);
  }
});

it('a buffer too small for the output, a bad key or nonce length, is an exception and nothing is written', () => {
  const x = Buffer.alloc(100, 7);
  for (const g of [openssl, node]) {
    const dst = Buffer.alloc(100 + GCM_TAG_BYTES + 8, 0xee);
    assert.throws(() => g.sealInto(Buffer.alloc(32), Buffer.alloc(12), null, x, dst, 9), /do not fit/);
    assert.throws(() => g.sealInto(Buffer.alloc(32), Buffer.alloc(12), null, x, dst, -1), /do not fit/);
    assert.throws(() => g.openInto(Buffer.alloc(32), Buffer.alloc(12), null, x, Buffer.alloc(16), Buffer.alloc(99), 0), /do not fit/);
    assert.throws(() => g.sealInto(Buffer.alloc(16), Buffer.alloc(12), null, x, dst, 0), /key must be 32 bytes/);
    assert.throws(() => g.sealInto(Buffer.alloc(32), Buffer.alloc(16), null, x, dst, 0), /nonce must be 12 bytes/);
    assert.ok(dst.every((v) => v === 0xee), g.implementation);
  }
});

it('worker threads seal through their own OpenSSL context, with the same bytes', async () => {
  const rng = new Rng(14);
  const key = rng.bytes(32);
  const nonce = rng.bytes(12);
  const x = rng.bytes(70_000);
  const here = Buffer.alloc(x.length + GCM_TAG_BYTES);
  openssl.sealInto(key, nonce, null, x, here, 0);
  const url = new URL('../../src/repo/gcm.js', import.meta.url).href;
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import(${JSON.stringify(url)}).then(({ gcm }) => {
      const g = gcm();
      const out = new Uint8Array(workerData.x.length + 16);
      g.sealInto(workerData.key, workerData.nonce, null, workerData.x, out, 0);
      parentPort.postMessage({ implementation: g.implementation, out });
    });`;
  const w = new Worker(code, { eval: true, workerData: { key, nonce, x } });
  const got = await new Promise<{ implementation: string; out: Uint8Array }>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  await w.terminate();
  assert.equal(got.implementation, openssl.implementation);
  assert.deepEqual(Buffer.from(got.out), here);
});
