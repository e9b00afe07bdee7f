import { createCipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { gcm } from './gcm.js';
import { IntegrityError } from './errors.js';

/**
 * Sealing: AES-256-GCM. Two formats (docs/FORMAT.md §4):
 *
 *  seal format 1 (`Sealer`):      nonce(12) || ciphertext || tag(16), the key used directly,
 *                                 a random nonce per object, no associated data.
 *  seal format 2 (`SaltedSealer`): salt(16) || nonce(12) || ciphertext || tag(16), under the
 *                                 subkey HKDF-SHA256(key, salt, "pilotlight v2 seal"), with
 *                                 associated data binding the object to its kind and name.
 *                                 A writer picks a random salt, then numbers its nonces
 *                                 0, 1, 2, ... under that subkey and picks a new salt after
 *                                 2^20 objects: nonces never repeat under a subkey, and the
 *                                 only limit left is a salt collision (FORMAT.md §4.3).
 *
 * With no key (unencrypted repository) both are the identity.
 */
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const SALT_BYTES = 16;
export const SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES;
export const SEAL2_OVERHEAD = SALT_BYTES + NONCE_BYTES + TAG_BYTES;
/** Objects sealed under one subkey before a writer picks a new salt. */
export const OBJECTS_PER_SUBKEY = 1 << 20;
export const SUBKEY_INFO = Buffer.from('pilotlight v2 seal');

export type SealFormat = 1 | 2;

/** What the repository layer seals objects with (index files, trailers, records, config). */
export interface ObjectSealer {
  readonly encrypted: boolean;
  readonly format: SealFormat;
  seal(parts: Uint8Array[], ad: Uint8Array): Buffer;
  open(sealed: Uint8Array, ad: Uint8Array, what: string): Buffer;
}

function asBuffer(b: Uint8Array): Buffer {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** Opens nonce || body || tag into `dst` at 0; returns the view of the plaintext there. */
function gcmOpenInto(key: Buffer, nonce: Buffer, body: Buffer, tag: Buffer, ad: Uint8Array | null, what: string, dst: Buffer): Buffer {
  if (!gcm().openInto(key, nonce, ad, body, tag, dst, 0)) {
    throw new IntegrityError(`${what}: authentication failed (the bytes were changed, belong to another key, or were moved from another object)`);
  }
  return dst.subarray(0, body.length);
}

/** Writes `head` then seals `x` after it (ciphertext and tag) into `dst` at `at`; returns the length written. */
function sealAfter(head: Buffer[], key: Buffer, nonce: Buffer, ad: Uint8Array | null, x: Uint8Array, dst: Buffer, at: number): number {
  const headLength = head.reduce((t, h) => t + h.length, 0);
  const total = headLength + x.length + TAG_BYTES;
  if (at + total > dst.length) throw new Error(`sealed object of ${total} bytes does not fit at ${at} of ${dst.length}`);
  let o = at;
  for (const h of head) o += h.copy(dst, o);
  return headLength + gcm().sealInto(key, nonce, ad, x, dst, o);
}

/** A buffer for a plaintext of `n` bytes: `into` when it is large enough, else a new one. */
function room(n: number, into?: Buffer): Buffer {
  return into && into.length >= n ? into : Buffer.allocUnsafe(n);
}

/** Seal format 1 (version 1 repositories, and v1 objects kept by migrated ones). */
export class Sealer implements ObjectSealer {
  readonly format = 1 as const;
  constructor(private readonly key: Buffer | null) {
    if (key && key.length !== 32) throw new Error('AES-256 key must be 32 bytes');
  }

  get encrypted(): boolean {
    return this.key !== null;
  }

  get overhead(): number {
    return this.key ? SEAL_OVERHEAD : 0;
  }

  /** Seals the concatenation of `parts` (avoids a copy of header + payload). Format 1 has no associated data. */
  seal(parts: Uint8Array[], _ad?: Uint8Array): Buffer {
    if (!this.key) return Buffer.concat(parts);
    const nonce = randomBytes(NONCE_BYTES);
    const c = createCipheriv('aes-256-gcm', this.key, nonce);
    const out: Buffer[] = [nonce];
    for (const p of parts) out.push(c.update(p));
    out.push(c.final(), c.getAuthTag());
    return Buffer.concat(out);
  }

  /** As seal([x]), written into `dst` at `at` (at least x.length + overhead bytes there); returns the length written. */
  sealInto(x: Uint8Array, dst: Buffer, at: number): number {
    if (!this.key) {
      dst.set(x, at);
      return x.length;
    }
    const nonce = randomBytes(NONCE_BYTES);
    return sealAfter([nonce], this.key, nonce, null, x, dst, at);
  }

  open(sealed: Uint8Array, adOrWhat: Uint8Array | string, what?: string): Buffer {
    return this.openInto(sealed, typeof adOrWhat === 'string' ? adOrWhat : (what ?? 'object'));
  }

  /** As open, the plaintext written into `into` when it is large enough (the view of it returned), else into a new buffer. */
  openInto(sealed: Uint8Array, what: string, into?: Buffer): Buffer {
    if (!this.key) return asBuffer(sealed);
    if (sealed.length < SEAL_OVERHEAD) throw new IntegrityError(`${what}: too short to be a sealed object`);
    const buf = asBuffer(sealed);
    const body = buf.subarray(NONCE_BYTES, buf.length - TAG_BYTES);
    return gcmOpenInto(this.key, buf.subarray(0, NONCE_BYTES), body, buf.subarray(buf.length - TAG_BYTES), null, what, room(body.length, into));
  }
}

/** HKDF-SHA256(key, salt, info) -> 32 bytes. */
export function hkdf32(key: Uint8Array, salt: Uint8Array, info: Uint8Array | string): Buffer {
  return Buffer.from(hkdfSync('sha256', key, salt, typeof info === 'string' ? Buffer.from(info) : info, 32));
}

/** Seal format 2: per-writer salted subkeys, counter nonces, associated data. */
export class SaltedSealer implements ObjectSealer {
  readonly format = 2 as const;
  private salt: Buffer | null = null;
  private subkey: Buffer | null = null;
  private used = 0;
  /** Subkeys of salts seen while opening (objects of one pack share one): bounded. */
  private readonly openKeys = new Map<string, Buffer>();

  constructor(
    private readonly key: Buffer | null,
    private readonly perSubkey = OBJECTS_PER_SUBKEY,
  ) {
    if (key && key.length !== 32) throw new Error('AES-256 key must be 32 bytes');
  }

  get encrypted(): boolean {
    return this.key !== null;
  }

  get overhead(): number {
    return this.key ? SEAL2_OVERHEAD : 0;
  }

  /** The next nonce under the current subkey (a new salt and subkey after perSubkey objects). */
  private nextNonce(key: Buffer): { subkey: Buffer; salt: Buffer; nonce: Buffer } {
    if (!this.subkey || this.used >= this.perSubkey) {
      this.salt = randomBytes(SALT_BYTES);
      this.subkey = hkdf32(key, this.salt, SUBKEY_INFO);
      this.used = 0;
    }
    const nonce = Buffer.alloc(NONCE_BYTES);
    nonce.writeUIntLE(this.used++, 0, 6);
    return { subkey: this.subkey, salt: this.salt!, nonce };
  }

  /** As seal([x], ad), written into `dst` at `at` (at least x.length + overhead bytes there); returns the length written. */
  sealInto(x: Uint8Array, ad: Uint8Array, dst: Buffer, at: number): number {
    if (!this.key) {
      dst.set(x, at);
      return x.length;
    }
    const { subkey, salt, nonce } = this.nextNonce(this.key);
    return sealAfter([salt, nonce], subkey, nonce, ad, x, dst, at);
  }

  seal(parts: Uint8Array[], ad: Uint8Array): Buffer {
    if (!this.key) return Buffer.concat(parts);
    const { subkey, salt, nonce } = this.nextNonce(this.key);
    const c = createCipheriv('aes-256-gcm', subkey, nonce);
    c.setAAD(ad);
    const out: Buffer[] = [salt, nonce];
    for (const p of parts) out.push(c.update(p));
    out.push(c.final(), c.getAuthTag());
    return Buffer.concat(out);
  }

  open(sealed: Uint8Array, ad: Uint8Array, what: string): Buffer {
    return this.openInto(sealed, ad, what);
  }

  /** As open, the plaintext written into `into` when it is large enough (the view of it returned), else into a new buffer. */
  openInto(sealed: Uint8Array, ad: Uint8Array, what: string, into?: Buffer): Buffer {
    if (!this.key) return asBuffer(sealed);
    if (sealed.length < SEAL2_OVERHEAD) throw new IntegrityError(`${what}: too short to be a sealed object`);
    const buf = asBuffer(sealed);
    const salt = buf.subarray(0, SALT_BYTES);
    const k = salt.toString('hex');
    let subkey = this.openKeys.get(k);
    if (!subkey) {
      if (this.openKeys.size >= 256) this.openKeys.clear();
      subkey = hkdf32(this.key, salt, SUBKEY_INFO);
      this.openKeys.set(k, subkey);
    }
    const nonce = buf.subarray(SALT_BYTES, SALT_BYTES + NONCE_BYTES);
    const body = buf.subarray(SALT_BYTES + NONCE_BYTES, buf.length - TAG_BYTES);
    return gcmOpenInto(subkey, nonce, body, buf.subarray(buf.length - TAG_BYTES), ad, what, room(body.length, into));
  }
}
