import { createRequire } from 'node:module';
import { collectFully } from '../runtime/gc-pacer.js';

/**
 * argon2id (RFC 9106, version 0x13, no secret, no associated data, 32-byte output) for
 * key files. The native implementation (@node-rs/argon2) is used where it loads: about
 * 10x faster than hash-wasm at 64 MiB here (55 ms against 630 ms for t = 2), and it
 * frees its memory when done, where a WebAssembly memory stays mapped until V8's next
 * full collection (seconds into a restore's data phase, where it made the peak RSS:
 * 250 against 190 MB, measured). hash-wasm is the portable fallback (PILOTLIGHT_KDF=wasm
 * forces it), followed by one full collection (10-20 ms). Both give the same bytes
 * (test/repo/argon2.test.ts).
 */
export interface Argon2Cost {
  /** Memory in KiB. */
  m: number;
  /** Passes. */
  t: number;
  /** Lanes. */
  p: number;
}

type NativeArgon2 = {
  hashRaw(password: Uint8Array, options: { memoryCost: number; timeCost: number; parallelism: number; outputLen: number; algorithm: number; salt: Uint8Array }): Promise<Buffer>;
};

let native: NativeArgon2 | null | undefined;

function loadNative(): NativeArgon2 | null {
  if (native === undefined) {
    try {
      native = createRequire(import.meta.url)('@node-rs/argon2') as NativeArgon2;
    } catch {
      native = null;
    }
  }
  return native;
}

const ARGON2ID = 2;

export async function argon2id(password: string, salt: Uint8Array, cost: Argon2Cost, prefer: 'native' | 'wasm' = 'native'): Promise<{ key: Buffer; implementation: 'native' | 'wasm' }> {
  const pw = Buffer.from(password, 'utf8');
  const n = prefer === 'native' && process.env.PILOTLIGHT_KDF !== 'wasm' ? loadNative() : null;
  if (n) {
    const key = await n.hashRaw(pw, { memoryCost: cost.m, timeCost: cost.t, parallelism: cost.p, outputLen: 32, algorithm: ARGON2ID, salt });
    return { key, implementation: 'native' };
  }
  const { argon2id: argon2idWasm } = await import('hash-wasm'); // only for the fallback (hasher.ts says why)
  const out = await argon2idWasm({ password: pw, salt, parallelism: cost.p, iterations: cost.t, memorySize: cost.m, hashLength: 32, outputType: 'binary' });
  collectFully();
  return { key: Buffer.from(out), implementation: 'wasm' };
}
