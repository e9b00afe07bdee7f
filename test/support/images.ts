/**
 * Disk images for tests, generated on the fly: sparse files with random,
 * repeated, compressible and zero regions, from a seeded generator so a failing
 * test can be re-run on the same bytes.
 */
import { Cipher, createCipheriv, createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';

/** Seeded generator: xorshift128+ for small numbers, an AES-CTR keystream for bulk bytes (fast). */
export class Rng {
  private s0: bigint;
  private s1: bigint;
  private readonly stream: Cipher;
  constructor(seed: number) {
    const key = createHash('sha256').update(`pilotlight-test-${seed}`).digest();
    this.stream = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
    this.s0 = BigInt(seed) * 0x9e3779b97f4a7c15n + 1n;
    this.s1 = (BigInt(seed) ^ 0xdeadbeefn) * 0xbf58476d1ce4e5b9n + 7n;
    for (let i = 0; i < 8; i++) this.next();
  }
  next(): bigint {
    let s1 = this.s0;
    const s0 = this.s1;
    this.s0 = s0;
    s1 ^= (s1 << 23n) & 0xffffffffffffffffn;
    this.s1 = s1 ^ s0 ^ (s1 >> 17n) ^ (s0 >> 26n);
    return (this.s1 + s0) & 0xffffffffffffffffn;
  }
  int(n: number): number {
    return Number(this.next() % BigInt(n));
  }
  bytes(n: number): Buffer {
    return this.stream.update(Buffer.alloc(n));
  }
}

export type RegionKind = 'random' | 'repeat' | 'text' | 'zero';

export interface Region {
  offset: number;
  length: number;
  kind: RegionKind;
}

export function fill(kind: RegionKind, length: number, rng: Rng): Buffer {
  switch (kind) {
    case 'random':
      return rng.bytes(length);
    case 'repeat': {
      // one 64 KiB block repeated: dedups within the image
      const block = rng.bytes(65536);
      const b = Buffer.alloc(length);
      for (let o = 0; o < length; o += 65536) block.copy(b, o, 0, Math.min(65536, length - o));
      return b;
    }
    case 'text': {
      const words = ['kernel', 'block', 'sector', 'extent', 'snapshot', 'volume', 'journal', 'inode', '\n', ' '];
      const parts: string[] = [];
      let n = 0;
      while (n < length) {
        const w = words[rng.int(words.length)]! + ' ';
        parts.push(w);
        n += w.length;
      }
      return Buffer.from(parts.join('')).subarray(0, length);
    }
    case 'zero':
      return Buffer.alloc(length);
  }
}

/** Writes a sparse image of `size` bytes with the given regions (everything else is a hole). */
export async function makeImage(file: string, size: number, regions: Region[], seed = 1): Promise<void> {
  const rng = new Rng(seed);
  const fh = await fsp.open(file, 'w');
  try {
    await fh.truncate(size);
    for (const r of regions) await fh.write(fill(r.kind, r.length, rng), 0, r.length, r.offset);
  } finally {
    await fh.close();
  }
}

/** Overwrites byte ranges of an image in place; returns them (for a change list). */
export async function mutate(file: string, changes: { offset: number; length: number; kind?: RegionKind }[], seed = 2): Promise<void> {
  const rng = new Rng(seed);
  const fh = await fsp.open(file, 'r+');
  try {
    for (const c of changes) await fh.write(fill(c.kind ?? 'random', c.length, rng), 0, c.length, c.offset);
  } finally {
    await fh.close();
  }
}

export function changeList(changes: { offset: number; length: number }[]): string {
  return changes.map((c) => `${c.offset} ${c.length}`).join('\n') + '\n';
}

/** Allocated bytes of a file (st_blocks * 512): smaller than its size when it is sparse. */
export async function allocatedBytes(file: string): Promise<number> {
  return (await fsp.stat(file)).blocks * 512;
}

export async function sameBytes(a: string, b: string): Promise<boolean> {
  const [fa, fb] = await Promise.all([fsp.open(a, 'r'), fsp.open(b, 'r')]);
  try {
    const [sa, sb] = await Promise.all([fa.stat(), fb.stat()]);
    if (sa.size !== sb.size) return false;
    const ba = Buffer.alloc(4 << 20);
    const bb = Buffer.alloc(4 << 20);
    for (let o = 0; o < sa.size; o += ba.length) {
      const n = Math.min(ba.length, sa.size - o);
      await fa.read(ba, 0, n, o);
      await fb.read(bb, 0, n, o);
      if (!ba.subarray(0, n).equals(bb.subarray(0, n))) return false;
    }
    return true;
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}
