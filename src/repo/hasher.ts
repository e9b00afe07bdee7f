import { createRequire } from 'node:module';

/**
 * Chunk ids: keyed BLAKE3-256 of the plaintext. The native implementation
 * (@napi-rs/blake-hash, 4-12x faster than hash-wasm on 64 KiB chunks where measured)
 * is used where it loads; hash-wasm is the portable fallback. Both produce the same
 * ids (test/repo/hasher.test.ts).
 */
export interface KeyedHasher {
  readonly implementation: 'native' | 'wasm';
  hash(data: Uint8Array): Buffer;
  /** A hash over bytes given in pieces (a pack as it is written), independent of hash() and of other streams. */
  stream(): Promise<HashStream>;
}

export interface HashStream {
  update(data: Uint8Array): void;
  digest(): Buffer;
}

type NativeBlake3 = {
  Blake3Hasher: { newKeyed(key: Buffer): { update(d: Uint8Array): unknown; digestBuffer(): Buffer; reset(): void } };
};

function loadNative(): NativeBlake3 | null {
  try {
    return createRequire(import.meta.url)('@napi-rs/blake-hash') as NativeBlake3;
  } catch {
    return null;
  }
}

export async function createKeyedHasher(key: Uint8Array, prefer: 'native' | 'wasm' = 'native'): Promise<KeyedHasher> {
  if (key.length !== 32) throw new Error('BLAKE3 key must be 32 bytes');
  const native = prefer === 'native' && process.env.PILOTLIGHT_HASHER !== 'wasm' ? loadNative() : null;
  if (native) {
    // One keyed hasher, reset before each chunk (reset keeps the key): creating one per
    // chunk cost 2-3x the hashing itself on 64 KiB chunks. hash() is synchronous, so
    // calls never interleave.
    const k = Buffer.from(key);
    const h = native.Blake3Hasher.newKeyed(k);
    return {
      implementation: 'native',
      hash(data: Uint8Array): Buffer {
        h.reset();
        h.update(data);
        return h.digestBuffer();
      },
      async stream(): Promise<HashStream> {
        const s = native.Blake3Hasher.newKeyed(k);
        return { update: (d) => void s.update(d), digest: () => s.digestBuffer() };
      },
    };
  }
  // loaded only here: importing hash-wasm (one large CommonJS file, lexed for its
  // exports by the ESM loader) cost about 50 ms and 10 MB in every worker thread
  const { createBLAKE3 } = await import('hash-wasm');
  const wasm = await createBLAKE3(256, key);
  const k = Uint8Array.from(key);
  return {
    implementation: 'wasm',
    hash(data: Uint8Array): Buffer {
      wasm.init();
      wasm.update(data);
      return Buffer.from(wasm.digest('binary'));
    },
    async stream(): Promise<HashStream> {
      const s = await createBLAKE3(256, k);
      return { update: (d) => void s.update(d), digest: () => Buffer.from(s.digest('binary')) };
    },
  };
}
