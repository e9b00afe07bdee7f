import { randomBytes } from 'node:crypto';
import { CodecName } from './compression.js';
import { UserError } from './errors.js';
import { DEFAULT_CHUNK_SIZE, DEFAULT_PACK_SIZE, FORMAT_VERSION } from './format.js';

/**
 * The `config` object: plaintext JSON, readable without the password, so that a
 * newer format version or a missing key is reported before anything else.
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
  /** Object Lock retention of the repository's objects (see object-lock.ts); absent: none. */
  objectLock?: { mode: 'COMPLIANCE' | 'GOVERNANCE'; days: number };
}

export function newConfig(options: {
  encrypted: boolean;
  compression?: CodecName;
  packSize?: number;
  objectLock?: { mode: 'COMPLIANCE' | 'GOVERNANCE'; days: number };
}): RepoConfig {
  return {
    format: 'pilotlight',
    version: FORMAT_VERSION,
    id: randomBytes(16).toString('hex'),
    created: new Date().toISOString(),
    chunkSize: DEFAULT_CHUNK_SIZE,
    packSize: options.packSize ?? DEFAULT_PACK_SIZE,
    compression: options.compression ?? 'zstd',
    encryption: options.encrypted ? 'aes-256-gcm' : 'none',
    ...(options.objectLock ? { objectLock: options.objectLock } : {}),
  };
}

export function parseConfig(bytes: Buffer, location: string): RepoConfig {
  let c: RepoConfig;
  try {
    c = JSON.parse(bytes.toString('utf8')) as RepoConfig;
  } catch {
    throw new UserError(`${location} is not a pilotlight repository (its config is not valid JSON)`);
  }
  if (c?.format !== 'pilotlight') throw new UserError(`${location} is not a pilotlight repository`);
  if (typeof c.version !== 'number' || c.version > FORMAT_VERSION) {
    throw new UserError(
      `${location} uses repository format version ${c.version}, newer than this pilotlight supports (${FORMAT_VERSION}); upgrade pilotlight`,
    );
  }
  if (c.chunkSize !== DEFAULT_CHUNK_SIZE) throw new UserError(`${location}: unsupported chunk size ${c.chunkSize}`);
  if (!Number.isInteger(c.packSize) || c.packSize < 1024 * 1024) throw new UserError(`${location}: bad pack size ${c.packSize}`);
  if (c.objectLock !== undefined && (!['COMPLIANCE', 'GOVERNANCE'].includes(c.objectLock?.mode) || !(c.objectLock.days > 0))) {
    throw new UserError(`${location}: bad objectLock in config: ${JSON.stringify(c.objectLock)}`);
  }
  return c;
}
