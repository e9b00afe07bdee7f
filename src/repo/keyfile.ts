import { randomBytes, scrypt as scryptCb, ScryptOptions } from 'node:crypto';
import { Sealer } from './crypto.js';
import { IntegrityError, UserError } from './errors.js';

/**
 * Key files (`keys/<id>`, JSON). The master key is 64 random bytes:
 * bytes 0-31 encrypt blobs (AES-256-GCM), bytes 32-63 key the chunk-id hash.
 * With a password, the master key is sealed with a key derived by scrypt.
 * An unencrypted repository stores only the id key, in the clear.
 */
export interface MasterKey {
  encryptionKey: Buffer | null;
  idKey: Buffer;
}

interface KeyFileJson {
  version: 1;
  created: string;
  kdf: { name: 'scrypt'; N: number; r: number; p: number; salt: string } | { name: 'none' };
  data: string;
}

export const DEFAULT_SCRYPT = { N: 1 << 16, r: 8, p: 1 };

function scrypt(password: string, salt: Buffer, params: { N: number; r: number; p: number }): Promise<Buffer> {
  const opts: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: 256 * params.N * params.r + 16 * 1024 * 1024 };
  return new Promise((resolve, reject) =>
    scryptCb(password, salt, 32, opts, (err, key) => (err ? reject(err) : resolve(key))),
  );
}

export function newMasterKey(encrypted: boolean): MasterKey {
  return { encryptionKey: encrypted ? randomBytes(32) : null, idKey: randomBytes(32) };
}

export async function writeKeyFile(master: MasterKey, password: string | null): Promise<Buffer> {
  const created = new Date().toISOString();
  let json: KeyFileJson;
  if (master.encryptionKey) {
    if (!password) throw new UserError('an encrypted repository needs a password: set PILOTLIGHT_PASSWORD or pass --password-file');
    const salt = randomBytes(32);
    const kek = await scrypt(password, salt, DEFAULT_SCRYPT);
    const sealed = new Sealer(kek).seal([master.encryptionKey, master.idKey]);
    json = { version: 1, created, kdf: { name: 'scrypt', ...DEFAULT_SCRYPT, salt: salt.toString('base64') }, data: sealed.toString('base64') };
  } else {
    json = { version: 1, created, kdf: { name: 'none' }, data: master.idKey.toString('base64') };
  }
  return Buffer.from(JSON.stringify(json, null, 2) + '\n');
}

/** Returns the master key, or null when the password does not open this key file. */
export async function openKeyFile(bytes: Buffer, password: string | null, name: string): Promise<MasterKey | null> {
  let json: KeyFileJson;
  try {
    json = JSON.parse(bytes.toString('utf8')) as KeyFileJson;
  } catch {
    throw new UserError(`key file ${name} is not valid JSON: the repository is damaged`);
  }
  if (json.kdf?.name === 'none') {
    const idKey = Buffer.from(json.data, 'base64');
    if (idKey.length !== 32) throw new UserError(`key file ${name} is damaged (id key length ${idKey.length})`);
    return { encryptionKey: null, idKey };
  }
  if (json.kdf?.name !== 'scrypt') throw new UserError(`key file ${name} uses an unknown KDF; upgrade pilotlight`);
  if (!password) throw new UserError('this repository is encrypted: set PILOTLIGHT_PASSWORD or pass --password-file');
  const kek = await scrypt(password, Buffer.from(json.kdf.salt, 'base64'), json.kdf);
  let plain: Buffer;
  try {
    plain = new Sealer(kek).open(Buffer.from(json.data, 'base64'), `key file ${name}`);
  } catch (err) {
    if (err instanceof IntegrityError) return null;
    throw err;
  }
  if (plain.length !== 64) throw new UserError(`key file ${name} is damaged (master key length ${plain.length})`);
  return { encryptionKey: plain.subarray(0, 32), idKey: plain.subarray(32) };
}
