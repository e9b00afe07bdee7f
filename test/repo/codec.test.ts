import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it } from 'node:test';
import { BlobCodec } from '../../src/repo/blob-codec.js';
import { Codec, Compression } from '../../src/repo/compression.js';
import { SEAL2_OVERHEAD, SaltedSealer } from '../../src/repo/crypto.js';
import { IntegrityError } from '../../src/repo/errors.js';
import { BlobType } from '../../src/repo/format.js';
import { createKeyedHasher } from '../../src/repo/hasher.js';
import { Rng, fill } from '../support/images.js';

async function codecs(encrypted: boolean, seal: 1 | 2 = 2) {
  const hasher = await createKeyedHasher(randomBytes(32));
  const key = encrypted ? randomBytes(32) : null;
  return { hasher, key, codec: new BlobCodec(key, new Compression(), hasher, seal) };
}

for (const seal of [1, 2] as const) {
  for (const encrypted of [true, false]) {
    it(`blob round trip with zstd, lz4 and none (${encrypted ? 'encrypted' : 'plain'}, seal format ${seal})`, async () => {
      const { hasher, codec } = await codecs(encrypted, seal);
      const rng = new Rng(3);
      for (const c of [Codec.Zstd, Codec.Lz4, Codec.None]) {
        for (const kind of ['text', 'random', 'zero'] as const) {
          const data = fill(kind, 65536, rng);
          const id = hasher.hash(data);
          const stored = codec.encode(c, data, BlobType.Data, id);
          assert.deepEqual(codec.decode(stored, id, 'test', BlobType.Data, seal), data);
          if (kind === 'text' && c !== Codec.None) assert.ok(stored.length < data.length / 2, `codec ${c} should compress text`);
        }
      }
    });
  }
}

it('incompressible data is stored raw (codec byte 0), never larger than raw + overhead', async () => {
  const { codec, hasher } = await codecs(false);
  const data = randomBytes(65536);
  const stored = codec.encode(Codec.Zstd, data, BlobType.Data, hasher.hash(data));
  assert.equal(stored[0], Codec.None);
  assert.equal(stored.length, data.length + 1);
  const enc = await codecs(true);
  assert.equal(enc.codec.encode(Codec.Zstd, data, BlobType.Data, enc.hasher.hash(data)).length, data.length + 1 + SEAL2_OVERHEAD);
});

it('a flipped bit is an IntegrityError, encrypted or not', async () => {
  for (const encrypted of [true, false]) {
    const { hasher, codec } = await codecs(encrypted);
    const data = fill('text', 65536, new Rng(4));
    const id = hasher.hash(data);
    const stored = codec.encode(Codec.Zstd, data, BlobType.Data, id);
    const bad = Buffer.from(stored);
    bad[Math.floor(bad.length / 2)]! ^= 0x10;
    assert.throws(() => codec.decode(bad, id, 'chunk', BlobType.Data, 2), IntegrityError);
  }
});

it('a blob read under the wrong id is an IntegrityError', async () => {
  for (const seal of [1, 2] as const) {
    const { hasher, codec } = await codecs(true, seal);
    const a = Buffer.from('chunk A');
    const stored = codec.encode(Codec.Zstd, a, BlobType.Data, hasher.hash(a));
    assert.throws(() => codec.decode(stored, hasher.hash(Buffer.from('chunk B')), 'chunk', BlobType.Data, seal), seal === 2 ? /authentication failed/ : /does not match its id/);
  }
});

it('seal format 2 binds a blob to its type, and is not readable as format 1 (nor 1 as 2)', async () => {
  const { hasher, key } = await codecs(true);
  const v2 = new BlobCodec(key, new Compression(), hasher, 2);
  const v1 = new BlobCodec(key, new Compression(), hasher, 1);
  const data = fill('text', 4096, new Rng(5));
  const id = hasher.hash(data);
  const s2 = v2.encode(Codec.Zstd, data, BlobType.Data, id);
  assert.throws(() => v2.decode(s2, id, 'x', BlobType.Page, 2), /authentication failed/);
  assert.throws(() => v2.decode(s2, id, 'x', BlobType.Data, 1), IntegrityError);
  const s1 = v1.encode(Codec.Zstd, data, BlobType.Data, id);
  assert.throws(() => v2.decode(s1, id, 'x', BlobType.Data, 2), IntegrityError);
  assert.deepEqual(v2.decode(s1, id, 'x', BlobType.Data, 1), data);
});

it('format 2 sealer: a salt per writer, counter nonces, a new salt after the per-subkey limit', () => {
  const key = randomBytes(32);
  const s = new SaltedSealer(key, 3);
  const ad = Buffer.from('ad');
  const sealed = Array.from({ length: 7 }, (_, i) => s.seal([Buffer.from(`object ${i}`)], ad));
  const salts = sealed.map((b) => b.subarray(0, 16).toString('hex'));
  const nonces = sealed.map((b) => b.subarray(16, 28).toString('hex'));
  assert.equal(new Set(salts).size, 3, 'salts change every 3 objects');
  assert.equal(salts[0], salts[2]);
  assert.notEqual(salts[2], salts[3]);
  assert.equal(new Set(sealed.map((_, i) => salts[i] + nonces[i])).size, 7, 'no (salt, nonce) pair repeats');
  const reader = new SaltedSealer(key);
  sealed.forEach((b, i) => assert.equal(reader.open(b, ad, 'x').toString(), `object ${i}`));
  assert.throws(() => reader.open(sealed[0]!, Buffer.from('other'), 'obj'), /obj: authentication failed/);
});

for (const seal of [1, 2] as const) {
  for (const encrypted of [true, false]) {
    it(`encodeInto writes what encode would, in place (${encrypted ? 'encrypted' : 'plain'}, seal format ${seal})`, async () => {
      const { hasher, codec } = await codecs(encrypted, seal);
      const rng = new Rng(11);
      const dst = Buffer.alloc(4 * 65536 + 4096, 0xee);
      let at = 7;
      for (const c of [Codec.Zstd, Codec.Lz4, Codec.None]) {
        for (const kind of ['text', 'random', 'zero'] as const) {
          const data = fill(kind, 65536, rng);
          const id = hasher.hash(data);
          const n = codec.encodeInto(c, data, BlobType.Data, id, dst, at);
          const stored = dst.subarray(at, at + n);
          assert.ok(n <= data.length + 1 + SEAL2_OVERHEAD, 'at most plaintext + codec byte + seal overhead');
          assert.deepEqual(codec.decode(stored, id, 'test', BlobType.Data, seal), data);
          if (!encrypted) assert.deepEqual(stored, codec.encode(c, data, BlobType.Data, id), 'unencrypted: the same bytes as encode');
          if (kind === 'random' && !encrypted) assert.equal(stored[0], Codec.None, 'incompressible: stored raw');
          at = (at + 65536) % (2 * 65536);
        }
      }
      const tail = Buffer.from(dst.subarray(dst.length - 100));
      assert.throws(() => codec.encodeInto(Codec.None, fill('random', 65536, rng), BlobType.Data, hasher.hash(Buffer.alloc(1)), dst, dst.length - 100), /does not fit|out of bounds|out of range/);
      assert.deepEqual(dst.subarray(dst.length - 100), tail, 'nothing written past a blob that does not fit');
    });
  }
}
