import { createCipheriv, createDecipheriv } from 'node:crypto';
import { createRequire } from 'node:module';

/**
 * AES-256-GCM with a 12-byte nonce and a 16-byte tag, written into the caller's buffers.
 *
 * Node's Cipher returns a new buffer from every update(): zero-filled, faulted in, and
 * copied once more into place. On 64 KiB blobs that cost 5-7 times the cipher itself here
 * (232 blobs of 42 KB: 34-38 ms and 2,000-2,700 page faults, against 5-9 ms and none).
 * Where Node's own OpenSSL is reachable (the node binary exports its EVP_* functions for
 * addons; koffi.load(null) finds them, or those of the shared libcrypto Node uses), the
 * EVP_* calls are made directly with pointers into the caller's buffers. Elsewhere, or
 * with PILOTLIGHT_GCM=node, Node's API does the same work. Both give the same bytes
 * (test/repo/gcm.test.ts).
 *
 * Every length is checked here before a pointer is handed to C: a buffer too small for
 * the output is an exception, never a write past its end.
 */
export interface Gcm {
  readonly implementation: 'openssl' | 'node';
  /** Encrypts `x` into `dst` at `at`, followed by the tag; returns x.length + 16. */
  sealInto(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array | null, x: Uint8Array, dst: Uint8Array, at: number): number;
  /**
   * Decrypts `body` into `dst` at `at` and checks `tag`. Returns false when authentication
   * fails: `dst` then holds bytes that must not be used.
   */
  openInto(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array | null, body: Uint8Array, tag: Uint8Array, dst: Uint8Array, at: number): boolean;
}

export const GCM_TAG_BYTES = 16;
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const EVP_CTRL_GCM_GET_TAG = 0x10;
const EVP_CTRL_GCM_SET_TAG = 0x11;

function check(key: Uint8Array, nonce: Uint8Array, n: number, dst: Uint8Array, at: number, extra: number): void {
  if (key.length !== KEY_BYTES) throw new Error(`AES-256-GCM key must be ${KEY_BYTES} bytes`);
  if (nonce.length !== NONCE_BYTES) throw new Error(`AES-256-GCM nonce must be ${NONCE_BYTES} bytes`);
  if (n > 0x7fffffff) throw new Error(`AES-256-GCM: ${n} bytes is more than one call takes`);
  if (!Number.isInteger(at) || at < 0 || at + n + extra > dst.length) {
    throw new Error(`${n + extra} bytes do not fit at ${at} of a ${dst.length}-byte buffer`);
  }
}

class NodeGcm implements Gcm {
  readonly implementation = 'node' as const;

  sealInto(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array | null, x: Uint8Array, dst: Uint8Array, at: number): number {
    check(key, nonce, x.length, dst, at, GCM_TAG_BYTES);
    const c = createCipheriv('aes-256-gcm', key, nonce);
    if (ad) c.setAAD(ad);
    let o = at;
    for (const part of [c.update(x), c.final(), c.getAuthTag()]) {
      dst.set(part, o);
      o += part.length;
    }
    return o - at;
  }

  openInto(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array | null, body: Uint8Array, tag: Uint8Array, dst: Uint8Array, at: number): boolean {
    check(key, nonce, body.length, dst, at, 0);
    if (tag.length !== GCM_TAG_BYTES) return false; // Node would accept a truncated tag
    const d = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: GCM_TAG_BYTES });
    if (ad) d.setAAD(ad);
    d.setAuthTag(tag);
    const plain = d.update(body);
    try {
      d.final();
    } catch {
      return false;
    }
    dst.set(plain, at);
    return true;
  }
}

type Ptr = unknown;
interface Evp {
  cipher: Ptr;
  ctxNew(): Ptr;
  ctxFree(ctx: Ptr): void;
  encryptInit(ctx: Ptr, cipher: Ptr, impl: null, key: Uint8Array | null, iv: Uint8Array | null): number;
  encryptUpdate(ctx: Ptr, out: Uint8Array | null, outl: Int32Array, input: Uint8Array, inl: number): number;
  encryptFinal(ctx: Ptr, out: Uint8Array, outl: Int32Array): number;
  decryptInit(ctx: Ptr, cipher: Ptr, impl: null, key: Uint8Array | null, iv: Uint8Array | null): number;
  decryptUpdate(ctx: Ptr, out: Uint8Array | null, outl: Int32Array, input: Uint8Array, inl: number): number;
  decryptFinal(ctx: Ptr, out: Uint8Array, outl: Int32Array): number;
  ctrl(ctx: Ptr, type: number, arg: number, ptr: Uint8Array): number;
  clearErrors(): void;
}

function loadEvp(): Evp | null {
  try {
    const koffi = createRequire(import.meta.url)('koffi') as { load(path: null): { func(sig: string): (...args: unknown[]) => unknown } };
    const lib = koffi.load(null);
    const f = (sig: string) => lib.func(sig);
    const aes256gcm = f('const void *EVP_aes_256_gcm()');
    const evp = {
      cipher: aes256gcm(),
      ctxNew: f('void *EVP_CIPHER_CTX_new()'),
      ctxFree: f('void EVP_CIPHER_CTX_free(void *ctx)'),
      encryptInit: f('int EVP_EncryptInit_ex(void *ctx, const void *cipher, void *impl, const uint8_t *key, const uint8_t *iv)'),
      encryptUpdate: f('int EVP_EncryptUpdate(void *ctx, uint8_t *out, int32_t *outl, const uint8_t *in, int inl)'),
      encryptFinal: f('int EVP_EncryptFinal_ex(void *ctx, uint8_t *out, int32_t *outl)'),
      decryptInit: f('int EVP_DecryptInit_ex(void *ctx, const void *cipher, void *impl, const uint8_t *key, const uint8_t *iv)'),
      decryptUpdate: f('int EVP_DecryptUpdate(void *ctx, uint8_t *out, int32_t *outl, const uint8_t *in, int inl)'),
      decryptFinal: f('int EVP_DecryptFinal_ex(void *ctx, uint8_t *out, int32_t *outl)'),
      ctrl: f('int EVP_CIPHER_CTX_ctrl(void *ctx, int type, int arg, uint8_t *ptr)'),
      clearErrors: f('void ERR_clear_error()'),
    } as Evp;
    if (!evp.cipher) return null;
    return evp;
  } catch {
    return null;
  }
}

class OpensslGcm implements Gcm {
  readonly implementation = 'openssl' as const;
  private readonly outl = new Int32Array(1);
  /** Where EncryptFinal/DecryptFinal may write (GCM writes nothing there). */
  private readonly finalOut = new Uint8Array(32);

  constructor(private readonly evp: Evp) {}

  /**
   * A context per call, freed before it returns: nothing of OpenSSL's outlives a call,
   * so worker threads that come and go (a service's jobs) leave nothing behind.
   */
  private context(): Ptr {
    const ctx = this.evp.ctxNew();
    if (!ctx) this.fail('CIPHER_CTX_new');
    return ctx;
  }

  /** A failed call leaves entries in this thread's OpenSSL error queue, which Node's own crypto calls share: cleared. */
  private fail(step: string): never {
    this.evp.clearErrors();
    throw new Error(`AES-256-GCM: OpenSSL ${step} failed`);
  }

  sealInto(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array | null, x: Uint8Array, dst: Uint8Array, at: number): number {
    check(key, nonce, x.length, dst, at, GCM_TAG_BYTES);
    const { evp, outl } = this;
    const ctx = this.context();
    try {
      if (evp.encryptInit(ctx, evp.cipher, null, key, nonce) !== 1) this.fail('EncryptInit');
      if (ad && ad.length && evp.encryptUpdate(ctx, null, outl, ad, ad.length) !== 1) this.fail('EncryptUpdate (associated data)');
      if (x.length && (evp.encryptUpdate(ctx, dst.subarray(at, at + x.length), outl, x, x.length) !== 1 || outl[0] !== x.length)) this.fail('EncryptUpdate');
      if (evp.encryptFinal(ctx, this.finalOut, outl) !== 1 || outl[0] !== 0) this.fail('EncryptFinal');
      if (evp.ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG_BYTES, dst.subarray(at + x.length, at + x.length + GCM_TAG_BYTES)) !== 1) this.fail('GET_TAG');
    } finally {
      evp.ctxFree(ctx);
    }
    return x.length + GCM_TAG_BYTES;
  }

  openInto(key: Uint8Array, nonce: Uint8Array, ad: Uint8Array | null, body: Uint8Array, tag: Uint8Array, dst: Uint8Array, at: number): boolean {
    check(key, nonce, body.length, dst, at, 0);
    if (tag.length !== GCM_TAG_BYTES) return false;
    const { evp, outl } = this;
    const ctx = this.context();
    try {
      if (evp.decryptInit(ctx, evp.cipher, null, key, nonce) !== 1) this.fail('DecryptInit');
      if (ad && ad.length && evp.decryptUpdate(ctx, null, outl, ad, ad.length) !== 1) this.fail('DecryptUpdate (associated data)');
      if (body.length && (evp.decryptUpdate(ctx, dst.subarray(at, at + body.length), outl, body, body.length) !== 1 || outl[0] !== body.length)) {
        this.fail('DecryptUpdate');
      }
      // SET_TAG only reads the tag (ctrl's pointer is not const in OpenSSL's signature)
      if (evp.ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG_BYTES, tag) !== 1) this.fail('SET_TAG');
      // DecryptFinal returns 1 only when the tag matches
      if (evp.decryptFinal(ctx, this.finalOut, outl) === 1) return true;
      evp.clearErrors();
      return false;
    } finally {
      evp.ctxFree(ctx);
    }
  }
}

const nodeGcm = new NodeGcm();
let preferred: Gcm | undefined;

/**
 * This thread's AES-256-GCM: OpenSSL's where it loads (each worker thread loads its own
 * module instance), else Node's. Resolved once: sealers call it for every blob.
 */
export function gcm(prefer: 'openssl' | 'node' = 'openssl'): Gcm {
  if (prefer === 'node') return nodeGcm;
  if (!preferred) {
    const evp = process.env.PILOTLIGHT_GCM === 'node' ? null : loadEvp();
    preferred = evp ? new OpensslGcm(evp) : nodeGcm;
  }
  return preferred;
}
