import { createRequire } from 'node:module';

/**
 * Chunk compression. The codec byte is the first plaintext byte of every blob, so
 * codecs coexist in one repository. A blob is stored raw when compression does not
 * shrink it.
 */
export enum Codec {
  None = 0,
  Zstd = 1,
  Lz4 = 2,
}

export type CodecName = 'zstd' | 'lz4' | 'none';

export function codecFromName(name: string): Codec {
  switch (name) {
    case 'zstd':
      return Codec.Zstd;
    case 'lz4':
      return Codec.Lz4;
    case 'none':
      return Codec.None;
    default:
      throw new Error(`unknown compression ${JSON.stringify(name)} (expected zstd, lz4 or none)`);
  }
}

const require = createRequire(import.meta.url);

interface ZstdModule {
  Compressor: new () => { setParameters(p: { compressionLevel?: number }): void; compress(b: Uint8Array): Buffer };
  Decompressor: new () => { decompress(b: Uint8Array): Buffer };
}
interface ZstdBinding {
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number };
  CCtx: new () => { setParameter(p: number, v: number): void; compress2(dst: Uint8Array, src: Uint8Array): number };
  CParameter: { compressionLevel: number };
  compressBound(n: number): number;
}

let zstdBinding: ZstdBinding | undefined;
interface Lz4Module {
  compressSync(b: Buffer): Buffer;
  uncompressSync(b: Uint8Array): Buffer;
}

/** One per thread: holds native compression contexts. */
export class Compression {
  private zstdC?: InstanceType<ZstdModule['Compressor']>;
  private zstdD?: InstanceType<ZstdModule['Decompressor']>;
  private zstdDCtx?: InstanceType<ZstdBinding['DCtx']>;
  private zstdCCtx?: InstanceType<ZstdBinding['CCtx']>;
  private lz4?: Lz4Module;

  constructor(private readonly zstdLevel = 1) {}

  private zstd(): ZstdModule {
    return require('zstd-napi') as ZstdModule;
  }

  private lz4mod(): Lz4Module {
    return (this.lz4 ??= require('lz4-napi') as Lz4Module);
  }

  /** Returns the codec actually used (None when compression did not help) and the bytes. */
  compress(codec: Codec, data: Uint8Array): { codec: Codec; bytes: Uint8Array } {
    let out: Buffer;
    switch (codec) {
      case Codec.None:
        return { codec, bytes: data };
      case Codec.Zstd:
        if (!this.zstdC) {
          this.zstdC = new (this.zstd().Compressor)();
          this.zstdC.setParameters({ compressionLevel: this.zstdLevel });
        }
        out = this.zstdC.compress(data);
        break;
      case Codec.Lz4:
        out = this.lz4mod().compressSync(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
        break;
      default:
        throw new Error(`unknown codec ${codec}`);
    }
    if (out.length >= data.length) return { codec: Codec.None, bytes: data };
    return { codec, bytes: out };
  }

  /** The largest output of compressInto for `n` bytes of input (zstd's bound). */
  static bound(n: number): number {
    zstdBinding ??= require('zstd-napi/binding.js') as ZstdBinding;
    return Math.max(n, zstdBinding.compressBound(n));
  }

  /**
   * Compresses `data` into `dst` (at least Compression.bound(data.length) bytes)
   * when that makes it smaller; else returns codec None, and `dst` is left unused
   * (the payload is `data` itself). zstd writes straight into `dst`: no buffer
   * per chunk.
   */
  compressInto(codec: Codec, data: Uint8Array, dst: Uint8Array): { codec: Codec; length: number } {
    if (codec === Codec.None) return { codec: Codec.None, length: data.length };
    if (codec === Codec.Zstd) {
      if (!this.zstdCCtx) {
        const b = (zstdBinding ??= require('zstd-napi/binding.js') as ZstdBinding);
        this.zstdCCtx = new b.CCtx();
        this.zstdCCtx.setParameter(b.CParameter.compressionLevel, this.zstdLevel);
      }
      const n = this.zstdCCtx.compress2(dst, data);
      return n >= data.length ? { codec: Codec.None, length: data.length } : { codec, length: n };
    }
    const c = this.compress(codec, data);
    if (c.codec !== Codec.None) dst.set(c.bytes);
    return { codec: c.codec, length: c.bytes.length };
  }

  /**
   * Decompresses into `dst`, which must be exactly the plaintext's length (known
   * from the index); returns `dst`. zstd writes straight into it: no buffer per
   * chunk for the garbage collector (a restore decompresses gigabytes).
   */
  decompressInto(codec: Codec, data: Uint8Array, dst: Uint8Array): Uint8Array {
    if (codec === Codec.Zstd) {
      this.zstdDCtx ??= new (require('zstd-napi/binding.js') as ZstdBinding).DCtx();
      const n = this.zstdDCtx.decompress(dst, data);
      if (n !== dst.length) throw new Error(`decompressed to ${n} bytes, expected ${dst.length}`);
      return dst;
    }
    const plain = this.decompress(codec, data);
    if (plain.length !== dst.length) throw new Error(`decompressed to ${plain.length} bytes, expected ${dst.length}`);
    dst.set(plain);
    return dst;
  }

  decompress(codec: Codec, data: Uint8Array): Uint8Array {
    switch (codec) {
      case Codec.None:
        return data;
      case Codec.Zstd:
        this.zstdD ??= new (this.zstd().Decompressor)();
        return this.zstdD.decompress(data);
      case Codec.Lz4:
        return this.lz4mod().uncompressSync(data);
      default:
        throw new Error(`unknown codec byte ${codec}`);
    }
  }
}
