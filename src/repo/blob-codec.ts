import { Codec, Compression } from './compression.js';
import { SaltedSealer, SealFormat, Sealer } from './crypto.js';
import { IntegrityError } from './errors.js';
import { AD, BlobType } from './format.js';
import { KeyedHasher } from './hasher.js';

/**
 * A stored blob is seal(codec byte || compressed payload). Decoding checks the
 * plaintext against the blob's id (keyed BLAKE3), so a blob read back is either
 * exactly what was written or an IntegrityError.
 *
 * New blobs use seal format `writeSeal` (2 in version 2 repositories: bound to
 * type and id by associated data). Reading takes the format from the index entry
 * or pack trailer that located the blob, never from the blob's own bytes; both
 * formats need the encryption key.
 */
export class BlobCodec {
  private readonly v1: Sealer;
  private readonly v2: SaltedSealer;
  private scratch = Buffer.alloc(0);
  /** Where blobs are opened (decrypted) before they are decompressed. */
  private opened = Buffer.alloc(0);

  constructor(
    encryptionKey: Buffer | null,
    private readonly compression: Compression,
    private readonly hasher: KeyedHasher,
    readonly writeSeal: SealFormat = 2,
  ) {
    this.v1 = new Sealer(encryptionKey);
    this.v2 = new SaltedSealer(encryptionKey);
  }

  encode(codec: Codec, plaintext: Uint8Array, type: BlobType, id: Uint8Array): Buffer {
    const c = this.compression.compress(codec, plaintext);
    const parts = [Uint8Array.of(c.codec), c.bytes];
    return this.writeSeal === 2 ? this.v2.seal(parts, AD.blob(type, id)) : this.v1.seal(parts);
  }

  /**
   * As encode, written into `dst` at `at`; returns the stored length. The codec
   * byte and the compressed payload are laid out in one scratch buffer and sealed
   * from there (raw when compression does not shrink it: Compression.compressInto).
   * At most plaintext.length + 1 + the seal's overhead (44 bytes in seal format 2)
   * are written.
   */
  encodeInto(codec: Codec, plaintext: Uint8Array, type: BlobType, id: Uint8Array, dst: Buffer, at: number): number {
    const need = 1 + Compression.bound(plaintext.length);
    if (this.scratch.length < need) this.scratch = Buffer.allocUnsafe(need);
    const c = this.compression.compressInto(codec, plaintext, this.scratch.subarray(1));
    this.scratch[0] = c.codec;
    if (c.codec === Codec.None) this.scratch.set(plaintext, 1);
    const x = this.scratch.subarray(0, 1 + c.length);
    return this.writeSeal === 2 ? this.v2.sealInto(x, AD.blob(type, id), dst, at) : this.v1.sealInto(x, dst, at);
  }

  /**
   * Returns the plaintext; throws IntegrityError when it does not open or does not hash
   * to `id`. The blob is opened into a reused buffer (no buffer per blob); a plaintext
   * still in it (a raw blob, when the compression has no target) is copied out, so what
   * is returned is never overwritten by the next decode.
   */
  decode(stored: Uint8Array, id: Uint8Array, what: string, type: BlobType, seal: SealFormat): Buffer {
    if (this.opened.length < stored.length) this.opened = Buffer.allocUnsafeSlow(Math.max(stored.length, 128 * 1024));
    const opened = seal === 2 ? this.v2.openInto(stored, AD.blob(type, id), what, this.opened) : this.v1.openInto(stored, what, this.opened);
    if (opened.length < 1) throw new IntegrityError(`${what}: empty blob`);
    let plain: Uint8Array;
    try {
      plain = this.compression.decompress(opened[0] as Codec, opened.subarray(1));
    } catch (err) {
      throw new IntegrityError(`${what}: cannot decompress (${(err as Error).message})`);
    }
    if (plain.buffer === this.opened.buffer) plain = Buffer.from(plain);
    const actual = this.hasher.hash(plain);
    if (!actual.equals(Buffer.from(id))) {
      throw new IntegrityError(`${what}: content does not match its id ${Buffer.from(id).toString('hex')}`);
    }
    return Buffer.from(plain.buffer, plain.byteOffset, plain.byteLength);
  }
}
