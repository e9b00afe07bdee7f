/**
 * MemoryDiskImage: a TEST DOUBLE of the DiskImage interface over a Buffer, for the
 * cloud tests before (and besides) the real repository. changedChunks compares chunk
 * bytes instead of manifests; `reads` counts the chunks whose data was handed out so
 * tests can check that only what was needed was read.
 */
import type { DiskChunk, DiskImage } from '../../src/engine/disk-image.js';

export class MemoryDiskImage implements DiskImage {
  readonly chunkSize: number;
  readonly capacity: number;
  reads = 0;

  constructor(readonly bytes: Buffer, chunkSize = 65536) {
    this.chunkSize = chunkSize;
    this.capacity = bytes.length;
  }

  get chunkCount(): number {
    return Math.ceil(this.capacity / this.chunkSize);
  }

  private chunkAt(i: number): Buffer {
    return this.bytes.subarray(i * this.chunkSize, Math.min(this.capacity, (i + 1) * this.chunkSize));
  }

  private isZero(i: number): boolean {
    const c = this.chunkAt(i);
    for (let k = 0; k < c.length; k++) if (c[k] !== 0) return false;
    return true;
  }

  async *chunks(options: { only?: AsyncIterable<number> | Iterable<number> } = {}): AsyncIterable<DiskChunk> {
    const all = function* (n: number) {
      for (let i = 0; i < n; i++) yield i;
    };
    let last = -1;
    for await (const i of options.only ?? all(this.chunkCount)) {
      if (i <= last || i >= this.chunkCount) throw new Error(`chunk index ${i} out of order or range`);
      last = i;
      const c = this.chunkAt(i);
      const zero = this.isZero(i);
      if (!zero) this.reads++;
      yield { index: i, offset: i * this.chunkSize, length: c.length, data: zero ? null : Buffer.from(c) };
    }
  }

  async *changedChunks(base?: DiskImage): AsyncIterable<number> {
    if (base && !(base instanceof MemoryDiskImage)) throw new Error('MemoryDiskImage can only diff against another MemoryDiskImage');
    if (base && base.capacity !== this.capacity) throw new Error('capacities differ');
    for (let i = 0; i < this.chunkCount; i++) {
      if (base ? !this.chunkAt(i).equals(base.chunkAt(i)) : !this.isZero(i)) yield i;
    }
  }
}

/** Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
export function pseudoRandom(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    if (i <= length - 4) out.writeUInt32LE(x, i);
    else for (let k = i; k < length; k++) out[k] = (x >>> (8 * (k - i))) & 0xff;
  }
  return out;
}
