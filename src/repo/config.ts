import { randomBytes } from 'node:crypto';
import { CodecName } from './compression.js';
import { SaltedSealer, hkdf32 } from './crypto.js';
import { IntegrityError, UserError } from './errors.js';
import { AD, DEFAULT_CHUNK_SIZE, DEFAULT_PACK_SIZE, FORMAT_VERSION } from './format.js';

/**
 * The `config` object: JSON whose fields are readable without the password, so that
 * "not a repository", "newer version" and "needs a password" are told apart before
 * any key is opened. In version 2 every field is also sealed into `auth` under a key
 * derived from the master key; once a key file opens, the plaintext fields must
 * equal the authenticated ones, and only the authenticated ones are used
 * (FORMAT.md §2). Fields added by later work are covered automatically: `auth`
 * seals the whole object but itself.
 */
export interface RepoConfig {
  format: 'pilotlight';
  version: number;
  id: string;
  created: string;
  chunkSize: number;
  packSize: number;
  compression: CodecName;
  encryption: 'aes-256-gcm' | 'none';
  /** Set by `migrate`: the repository still holds objects of this older version (its packs). */
  migratedFrom?: number;
}

type ConfigJson = RepoConfig & { auth?: string };

export function newConfig(options: { encrypted: boolean; compression?: CodecName; packSize?: number; version?: number }): RepoConfig {
  return {
    format: 'pilotlight',
    version: options.version ?? FORMAT_VERSION,
    id: randomBytes(16).toString('hex'),
    created: new Date().toISOString(),
    chunkSize: DEFAULT_CHUNK_SIZE,
    packSize: options.packSize ?? DEFAULT_PACK_SIZE,
    compression: options.compression ?? 'zstd',
    encryption: options.encrypted ? 'aes-256-gcm' : 'none',
  };
}

/** The key that authenticates the config: HKDF-SHA256(encryption key, or the id key when unencrypted). */
export function configKey(master: { encryptionKey: Buffer | null; idKey: Buffer }): Buffer {
  return hkdf32(master.encryptionKey ?? master.idKey, Buffer.alloc(0), 'pilotlight v2 config key');
}

/** Canonical JSON: keys sorted, `auth` left out. */
function canonical(c: Record<string, unknown>): string {
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(c).sort()) if (k !== 'auth') out[k] = c[k];
  return JSON.stringify(out);
}

/** The bytes of the `config` object. Version 2 configs carry `auth`. */
export function encodeConfig(config: RepoConfig, master: { encryptionKey: Buffer | null; idKey: Buffer }): Buffer {
  const json: ConfigJson = { ...config };
  delete json.auth;
  if (config.version >= 2) {
    const sealed = new SaltedSealer(configKey(master)).seal([Buffer.from(canonical(json as unknown as Record<string, unknown>))], AD.config());
    json.auth = sealed.toString('base64');
  }
  return Buffer.from(JSON.stringify(json, null, 2) + '\n');
}

/** Parses the plaintext header (no key needed). Its security parameters are not trusted yet. */
export function parseConfig(bytes: Buffer, location: string): RepoConfig & { auth?: string } {
  let c: ConfigJson;
  try {
    c = JSON.parse(bytes.toString('utf8')) as ConfigJson;
  } catch {
    throw new UserError(`${location} is not a pilotlight repository (its config is not valid JSON)`);
  }
  if (c?.format !== 'pilotlight') throw new UserError(`${location} is not a pilotlight repository`);
  if (typeof c.version !== 'number' || c.version > FORMAT_VERSION) {
    throw new UserError(
      `${location} uses repository format version ${c.version}, newer than this pilotlight supports (${FORMAT_VERSION}); upgrade pilotlight`,
    );
  }
  if (c.version < 1 || !Number.isInteger(c.version)) throw new UserError(`${location}: bad format version ${c.version}`);
  checkParameters(c, location);
  return c;
}

function checkParameters(c: RepoConfig, location: string): void {
  if (c.chunkSize !== DEFAULT_CHUNK_SIZE) throw new UserError(`${location}: unsupported chunk size ${c.chunkSize}`);
  if (!Number.isInteger(c.packSize) || c.packSize < 1024 * 1024 || c.packSize > 1024 * 1024 * 1024) {
    throw new UserError(`${location}: bad pack size ${c.packSize}`);
  }
  if (!['zstd', 'lz4', 'none'].includes(c.compression)) throw new UserError(`${location}: unknown compression ${c.compression}`);
  if (c.encryption !== 'aes-256-gcm' && c.encryption !== 'none') throw new UserError(`${location}: unknown encryption ${c.encryption}`);
}

/**
 * After a key file opened: the authenticated config of a version 2 repository
 * (IntegrityError when `auth` is missing, does not open, or differs from the
 * plaintext fields). A version 1 config has nothing to check.
 */
export function authenticateConfig(header: ConfigJson, master: { encryptionKey: Buffer | null; idKey: Buffer }, location: string): RepoConfig {
  if (header.version < 2) {
    const { auth: _auth, ...v1 } = header;
    return v1;
  }
  if (typeof header.auth !== 'string') throw new IntegrityError('config: version 2 config without its authentication (auth): the config was replaced');
  const plain = new SaltedSealer(configKey(master)).open(Buffer.from(header.auth, 'base64'), AD.config(), 'config');
  let authed: ConfigJson;
  try {
    authed = JSON.parse(plain.toString('utf8')) as ConfigJson;
  } catch {
    throw new IntegrityError('config: authenticated part is not JSON');
  }
  const a = canonical(authed as unknown as Record<string, unknown>);
  const h = canonical(header as unknown as Record<string, unknown>);
  if (a !== h) {
    const keys = new Set([...Object.keys(authed), ...Object.keys(header)]);
    const diff = [...keys].filter((k) => k !== 'auth' && JSON.stringify((authed as never)[k]) !== JSON.stringify((header as never)[k]));
    throw new IntegrityError(`config: ${diff.join(', ')} differ from the authenticated copy: the config was edited`);
  }
  checkParameters(authed, location);
  const { auth: _auth, ...config } = authed;
  return config;
}
