import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { it } from 'node:test';
import { BlobCodec } from '../../src/repo/blob-codec.js';
import { Codec, Compression } from '../../src/repo/compression.js';
import { Sealer } from '../../src/repo/crypto.js';
import { IntegrityError } from '../../src/repo/errors.js';
import { createKeyedHasher } from '../../src/repo/hasher.js';
import { Rng, fill } from '../support/images.js';

async function codecs(encrypted: boolean) {
  const hasher = await createKeyedHasher(randomBytes(32));
  return { hasher, codec: new BlobCodec(new Sealer(encrypted ? randomBytes(32) : null), new Compression(), hasher) };
}

for (const encrypted of [true, false]) {
  it(`blob round trip with zstd, lz4 and none (${encrypted ? 'encrypted' : 'plain'})`, async () => {
    const { hasher, codec } = await codecs(encrypted);
    const rng = new Rng(3);
    for (const c of [Codec.Zstd, Codec.Lz4, Codec.None]) {
      for (const kind of ['text', 'random', 'zero'] as const) {
        const data = fill(kind, 65536, rng);
        const id = hasher.hash(data);
        const stored = codec.encode(c, data);
        assert.deepEqual(codec.decode(stored, id, 'test'), data);
        if (kind === 'text' && c !== Codec.None) assert.ok(stored.length < data.length / 2, `codec ${c} should compress text`);
      }
    }
  });
}

it('incompressible data is stored raw (codec byte 0), never larger than raw + overhead', async () => {
  const { codec } = await codecs(false);
  const data = randomBytes(65536);
  const stored = codec.encode(Codec.Zstd, data);
  assert.equal(stored[0], Codec.None);
  assert.equal(stored.length, data.length + 1);
});

it('a flipped bit is an IntegrityError, encrypted or not', async () => {
  for (const encrypted of [true, false]) {
    const { hasher, codec } = await codecs(encrypted);
    const data = fill('text', 65536, new Rng(4));
    const stored = codec.encode(Codec.Zstd, data);
    const bad = Buffer.from(stored);
    bad[Math.floor(bad.length / 2)]! ^= 0x10;
    assert.throws(() => codec.decode(bad, hasher.hash(data), 'chunk'), IntegrityError);
  }
});

it('a blob read under the wrong id is an IntegrityError', async () => {
  const { hasher, codec } = await codecs(true);
  const stored = codec.encode(Codec.Zstd, Buffer.from('chunk A'));
  assert.throws(() => codec.decode(stored, hasher.hash(Buffer.from('chunk B')), 'chunk'), /does not match its id/);
});
