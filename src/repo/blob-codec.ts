import { Codec, Compression } from './compression.js';
import { Sealer } from './crypto.js';
import { IntegrityError } from './errors.js';
import { KeyedHasher } from './hasher.js';

/**
 * A stored blob is seal(codec byte || compressed payload). Decoding checks the
 * plaintext against the blob's id (keyed BLAKE3), so a blob read back is either
 * exactly what was written or an IntegrityError.
 */
export class BlobCodec {
  constructor(
    private readonly sealer: Sealer,
    private readonly compression: Compression,
    private readonly hasher: KeyedHasher,
  ) {}

  encode(codec: Codec, plaintext: Uint8Array): Buffer {
    const c = this.compression.compress(codec, plaintext);
    return this.sealer.seal([Uint8Array.of(c.codec), c.bytes]);
  }

  /** Returns the plaintext; throws IntegrityError when it does not hash to `id`. */
  decode(stored: Uint8Array, id: Uint8Array, what: string): Buffer {
    const opened = this.sealer.open(stored, what);
    if (opened.length < 1) throw new IntegrityError(`${what}: empty blob`);
    let plain: Uint8Array;
    try {
      plain = this.compression.decompress(opened[0] as Codec, opened.subarray(1));
    } catch (err) {
      throw new IntegrityError(`${what}: cannot decompress (${(err as Error).message})`);
    }
    const actual = this.hasher.hash(plain);
    if (!actual.equals(Buffer.from(id))) {
      throw new IntegrityError(`${what}: content does not match its id ${Buffer.from(id).toString('hex')}`);
    }
    return Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  }
}
