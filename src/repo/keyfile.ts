import { randomBytes, scrypt as scryptCb, ScryptOptions } from 'node:crypto';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import { argon2id } from 'hash-wasm';
import { SaltedSealer, Sealer } from './crypto.js';
import { IntegrityError, UserError } from './errors.js';
import { AD } from './format.js';

/**
 * Key files (`keys/<id>`, JSON). The master key is 64 random bytes:
 * bytes 0-31 encrypt blobs (AES-256-GCM), bytes 32-63 key the chunk-id hash.
 * With a password, the master key is sealed with a key (KEK) derived from it:
 * argon2id (version 2 key files, calibrated at creation) or scrypt. KDF parameters
 * are bounds-checked before anything is derived, so a key file cannot make a
 * reader allocate gigabytes or work for hours. An unencrypted repository stores
 * only the id key, in the clear.
 */
export interface MasterKey {
  encryptionKey: Buffer | null;
  idKey: Buffer;
}

export type ScryptParams = { name: 'scrypt'; N: number; r: number; p: number; salt: string };
/** m in KiB, t passes, p lanes (RFC 9106). */
export type Argon2Params = { name: 'argon2id'; m: number; t: number; p: number; salt: string };
export type KdfParams = ScryptParams | Argon2Params | { name: 'none' };

export interface KeyFileJson {
  version: 1 | 2;
  created: string;
  kdf: KdfParams;
  data: string;
}

export interface OpenedKey {
  master: MasterKey;
  /** Key file version: 2 seals the master key with associated data naming the file. */
  version: 1 | 2;
  kdf: KdfParams;
  created: string;
}

/** Reading limits (FORMAT.md §3): far above what init chooses, far below harm. */
export const KDF_LIMITS = {
  scrypt: { maxN: 2 ** 20, minN: 2 ** 10, maxR: 32, maxP: 16, maxMemory: 1 << 30, maxWork: 2 ** 26 },
  argon2id: { minM: 8 * 1024, maxM: 2 * 1024 * 1024, maxT: 16, maxP: 16, maxWork: 2 ** 24 },
};
/** New key files: argon2id with 64 MiB, one lane, passes calibrated to about this long here (at least 2). */
export const ARGON2_MEMORY_KIB = 64 * 1024;
export const KDF_TARGET_MS = 500;

function bad(name: string, what: string): UserError {
  return new UserError(`key file ${name}: ${what} is past the limit: the key file is damaged or was made to exhaust this machine`);
}

function checkKdf(kdf: KdfParams, name: string): void {
  if (kdf.name === 'scrypt') {
    const L = KDF_LIMITS.scrypt;
    const { N, r, p } = kdf;
    if (!Number.isSafeInteger(N) || N < L.minN || N > L.maxN || (N & (N - 1)) !== 0) throw bad(name, `scrypt N = ${N} (allowed: a power of 2 from 2^10 to 2^20)`);
    if (!Number.isInteger(r) || r < 1 || r > L.maxR) throw bad(name, `scrypt r = ${r} (allowed 1..${L.maxR})`);
    if (!Number.isInteger(p) || p < 1 || p > L.maxP) throw bad(name, `scrypt p = ${p} (allowed 1..${L.maxP})`);
    if (128 * N * r > L.maxMemory) throw bad(name, `scrypt memory 128*N*r = ${128 * N * r} bytes (allowed 1 GiB)`);
    if (N * r * p > L.maxWork) throw bad(name, `scrypt work N*r*p = ${N * r * p} (allowed 2^26)`);
  } else if (kdf.name === 'argon2id') {
    const L = KDF_LIMITS.argon2id;
    const { m, t, p } = kdf;
    if (!Number.isInteger(m) || m < L.minM || m > L.maxM) throw bad(name, `argon2id memory m = ${m} KiB (allowed ${L.minM}..${L.maxM})`);
    if (!Number.isInteger(t) || t < 1 || t > L.maxT) throw bad(name, `argon2id passes t = ${t} (allowed 1..${L.maxT})`);
    if (!Number.isInteger(p) || p < 1 || p > L.maxP) throw bad(name, `argon2id lanes p = ${p} (allowed 1..${L.maxP})`);
    if (m * t > L.maxWork) throw bad(name, `argon2id work m*t = ${m * t} (allowed 2^24)`);
  } else if (kdf.name !== 'none') {
    throw new UserError(`key file ${name} uses an unknown KDF; upgrade pilotlight`);
  }
  if (kdf.name !== 'none') {
    const salt = Buffer.from(kdf.salt ?? '', 'base64');
    if (salt.length < 16 || salt.length > 64) throw new UserError(`key file ${name}: bad KDF salt length ${salt.length}`);
  }
}

function scrypt(password: string, salt: Buffer, params: { N: number; r: number; p: number }): Promise<Buffer> {
  const opts: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 16 * 1024 * 1024 };
  return new Promise((resolve, reject) => scryptCb(password, salt, 32, opts, (err, key) => (err ? reject(err) : resolve(key))));
}

async function deriveKek(password: string, kdf: ScryptParams | Argon2Params): Promise<Buffer> {
  const salt = Buffer.from(kdf.salt, 'base64');
  if (kdf.name === 'scrypt') return scrypt(password, salt, kdf);
  const out = await argon2id({ password, salt, parallelism: kdf.p, iterations: kdf.t, memorySize: kdf.m, hashLength: 32, outputType: 'binary' });
  releaseWasmMemory();
  return Buffer.from(out);
}

/**
 * hash-wasm's argon2id leaves its WebAssembly memory (m KiB, 64 MiB for new key
 * files) to V8's next full collection, which a restore or backup (small heap,
 * buffers outside it) reaches only seconds later: the 64 MiB stayed resident
 * through the start of the data phase and made a restore's peak RSS. One full
 * collection (10-20 ms with a small heap) frees it now. `gc` is reached as in
 * engine/gc-pacer.ts; where that is refused, nothing happens.
 */
function releaseWasmMemory(): void {
  try {
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as unknown;
    // no options: a full, synchronous collection ({ type: 'major' } left the memory in place here)
    if (typeof gc === 'function') (gc as () => void)();
  } catch {
    // memory is then what V8's own heuristics give
  }
}

/** argon2id parameters for a new key file, calibrated on this machine; returns the KEK already derived. */
export async function calibratedKdf(password: string): Promise<{ kdf: Argon2Params; kek: Buffer }> {
  const salt = randomBytes(32).toString('base64');
  let kdf: Argon2Params = { name: 'argon2id', m: ARGON2_MEMORY_KIB, t: 2, p: 1, salt };
  const t0 = performance.now();
  let kek = await deriveKek(password, kdf);
  const ms = performance.now() - t0;
  const t = Math.min(8, Math.max(2, Math.floor((2 * KDF_TARGET_MS) / Math.max(ms, 1))));
  if (t !== kdf.t) {
    kdf = { ...kdf, t };
    kek = await deriveKek(password, kdf);
  }
  return { kdf, kek };
}

export function newMasterKey(encrypted: boolean): MasterKey {
  return { encryptionKey: encrypted ? randomBytes(32) : null, idKey: randomBytes(32) };
}

/**
 * A key file for `master` under object name `name` (keys/<32 hex>). Version 2 key
 * files seal the master key with associated data naming the file.
 */
export async function writeKeyFile(master: MasterKey, password: string | null, name: string, version: 1 | 2 = 2): Promise<Buffer> {
  const created = new Date().toISOString();
  let json: KeyFileJson;
  if (master.encryptionKey) {
    if (!password) throw new UserError('an encrypted repository needs a password: set PILOTLIGHT_PASSWORD or pass --password-file (or --password-command)');
    const { kdf, kek } = await calibratedKdf(password);
    const plain = [master.encryptionKey, master.idKey];
    if (version === 2) {
      json = { version, created, kdf, data: new SaltedSealer(kek).seal(plain, AD.key(name)).toString('base64') };
    } else {
      json = { version, created, kdf, data: new Sealer(kek).seal(plain).toString('base64') };
    }
  } else {
    json = { version, created, kdf: { name: 'none' }, data: master.idKey.toString('base64') };
  }
  return Buffer.from(JSON.stringify(json, null, 2) + '\n');
}

/** Parses a key file and checks its KDF parameters (no password needed). */
export function parseKeyFile(bytes: Buffer, name: string): KeyFileJson {
  let json: KeyFileJson;
  try {
    json = JSON.parse(bytes.toString('utf8')) as KeyFileJson;
  } catch {
    throw new UserError(`key file ${name} is not valid JSON: the repository is damaged`);
  }
  if (json?.version !== 1 && json?.version !== 2) throw new UserError(`key file ${name} has version ${json?.version}; upgrade pilotlight`);
  if (!json.kdf || typeof json.kdf !== 'object') throw new UserError(`key file ${name} has no KDF: the repository is damaged`);
  checkKdf(json.kdf, name);
  return json;
}

/** Returns the master key, or null when the password does not open this key file. */
export async function openKeyFile(bytes: Buffer, password: string | null, name: string): Promise<OpenedKey | null> {
  const json = parseKeyFile(bytes, name);
  const base = { version: json.version, kdf: json.kdf, created: json.created };
  if (json.kdf.name === 'none') {
    const idKey = Buffer.from(json.data, 'base64');
    if (idKey.length !== 32) throw new UserError(`key file ${name} is damaged (id key length ${idKey.length})`);
    return { ...base, master: { encryptionKey: null, idKey } };
  }
  if (!password) throw new UserError('this repository is encrypted: set PILOTLIGHT_PASSWORD or pass --password-file (or --password-command)');
  const kek = await deriveKek(password, json.kdf);
  let plain: Buffer;
  try {
    const sealed = Buffer.from(json.data, 'base64');
    plain = json.version === 2 ? new SaltedSealer(kek).open(sealed, AD.key(name), `key file ${name}`) : new Sealer(kek).open(sealed, `key file ${name}`);
  } catch (err) {
    if (err instanceof IntegrityError) return null;
    throw err;
  }
  if (plain.length !== 64) throw new UserError(`key file ${name} is damaged (master key length ${plain.length})`);
  return { ...base, master: { encryptionKey: plain.subarray(0, 32), idKey: plain.subarray(32) } };
}
