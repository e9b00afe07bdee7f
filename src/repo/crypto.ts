import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { IntegrityError } from './errors.js';

/**
 * Blob sealing: AES-256-GCM with a random 96-bit nonce per blob.
 * Sealed layout: nonce (12) || ciphertext || tag (16).
 * With no key (unencrypted repository) sealing is the identity.
 */
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;
export const SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES;

export class Sealer {
  constructor(private readonly key: Buffer | null) {
    if (key && key.length !== 32) throw new Error('AES-256 key must be 32 bytes');
  }

  get encrypted(): boolean {
    return this.key !== null;
  }

  get overhead(): number {
    return this.key ? SEAL_OVERHEAD : 0;
  }

  /** Seals the concatenation of `parts` (avoids a copy of header + payload). */
  seal(parts: Uint8Array[]): Buffer {
    if (!this.key) return Buffer.concat(parts);
    const nonce = randomBytes(NONCE_BYTES);
    const c = createCipheriv('aes-256-gcm', this.key, nonce);
    const out: Buffer[] = [nonce];
    for (const p of parts) out.push(c.update(p));
    out.push(c.final(), c.getAuthTag());
    return Buffer.concat(out);
  }

  open(sealed: Uint8Array, what: string): Buffer {
    if (!this.key) return Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
    if (sealed.length < SEAL_OVERHEAD) throw new IntegrityError(`${what}: too short to be a sealed blob`);
    const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
    const nonce = buf.subarray(0, NONCE_BYTES);
    const tag = buf.subarray(buf.length - TAG_BYTES);
    const d = createDecipheriv('aes-256-gcm', this.key, nonce);
    d.setAuthTag(tag);
    try {
      return Buffer.concat([d.update(buf.subarray(NONCE_BYTES, buf.length - TAG_BYTES)), d.final()]);
    } catch {
      throw new IntegrityError(`${what}: authentication failed (the bytes were changed or belong to another key)`);
    }
  }
}
