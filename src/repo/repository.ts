import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { BlobStore, isNotFound } from '../store/blob-store.js';
import { BlobCodec } from './blob-codec.js';
import { Codec, Compression, codecFromName } from './compression.js';
import { RepoConfig, newConfig, parseConfig } from './config.js';
import { Sealer } from './crypto.js';
import { IntegrityError, UserError } from './errors.js';
import { BlobType, CONFIG_NAME, KEYS_PREFIX, packObjectName } from './format.js';
import { KeyedHasher, createKeyedHasher } from './hasher.js';
import { IndexEntry } from './index-file.js';
import { MasterKey, newMasterKey, openKeyFile, writeKeyFile } from './keyfile.js';
import { LocalCache } from './local-cache.js';

export interface Credentials {
  password?: string | null;
  passwordFile?: string;
}

/** Reads the password from --password-file or PILOTLIGHT_PASSWORD; null when neither is set. */
export async function resolvePassword(c: Credentials): Promise<string | null> {
  if (c.password) return c.password;
  if (c.passwordFile) {
    let text: string;
    try {
      text = await fsp.readFile(c.passwordFile, 'utf8');
    } catch (err) {
      throw new UserError(`cannot read password file ${c.passwordFile}: ${(err as Error).message}`);
    }
    const pw = text.replace(/\r?\n$/, '');
    if (!pw) throw new UserError(`password file ${c.passwordFile} is empty`);
    return pw;
  }
  return process.env.PILOTLIGHT_PASSWORD || null;
}

export interface InitOptions extends Credentials {
  encrypted: boolean;
  compression?: 'zstd' | 'lz4' | 'none';
  packSize?: number;
}

/**
 * An open repository: its config, keys, codec, and local cache. Reading and
 * writing blobs goes through here; the snapshot and engine layers never touch
 * pack or index objects directly.
 */
export class Repository {
  private cacheP: Promise<LocalCache> | null = null;

  private constructor(
    readonly store: BlobStore,
    readonly config: RepoConfig,
    readonly master: MasterKey,
    readonly sealer: Sealer,
    readonly hasher: KeyedHasher,
    readonly codec: BlobCodec,
    readonly defaultCodec: Codec,
    readonly cacheRoot?: string,
  ) {}

  static async init(store: BlobStore, options: InitOptions): Promise<Repository> {
    if (await store.head(CONFIG_NAME)) throw new UserError(`${store.location} already holds a pilotlight repository`);
    for await (const _ of store.list('')) {
      throw new UserError(`${store.location} is not empty; init needs an empty directory or bucket prefix`);
    }
    const password = options.encrypted ? await resolvePassword(options) : null;
    if (options.encrypted && !password) {
      throw new UserError('an encrypted repository needs a password: set PILOTLIGHT_PASSWORD or pass --password-file (or use --no-encryption)');
    }
    const config = newConfig(options);
    const master = newMasterKey(options.encrypted);
    await store.put(`${KEYS_PREFIX}${randomBytes(16).toString('hex')}`, await writeKeyFile(master, password), { ifNotExists: true });
    // config last: a repository without config is not a repository, so a crash here leaves nothing half-made.
    await store.put(CONFIG_NAME, Buffer.from(JSON.stringify(config, null, 2) + '\n'), { ifNotExists: true });
    return Repository.fromParts(store, config, master);
  }

  static async open(store: BlobStore, credentials: Credentials = {}, cacheRoot?: string): Promise<Repository> {
    let configBytes: Buffer;
    try {
      configBytes = await store.get(CONFIG_NAME);
    } catch (err) {
      if (isNotFound(err)) {
        throw new UserError(`${store.location} is not a pilotlight repository (no config); create one with 'pilotlight init'`);
      }
      throw err;
    }
    const config = parseConfig(configBytes, store.location);
    const password = config.encryption === 'none' ? null : await resolvePassword(credentials);
    if (config.encryption !== 'none' && !password) {
      throw new UserError('this repository is encrypted: set PILOTLIGHT_PASSWORD or pass --password-file');
    }
    let master: MasterKey | null = null;
    let keys = 0;
    for await (const k of store.list(KEYS_PREFIX)) {
      keys++;
      master = await openKeyFile(await store.get(k.name), password, k.name);
      if (master) break;
    }
    if (keys === 0) throw new UserError(`${store.location} has no key file: the repository is damaged`);
    if (!master) throw new UserError('wrong password: no key file of this repository opens with it');
    if ((config.encryption === 'none') !== (master.encryptionKey === null)) {
      throw new UserError(`${store.location}: config and key file disagree about encryption; the repository is damaged`);
    }
    return Repository.fromParts(store, config, master, cacheRoot);
  }

  private static async fromParts(store: BlobStore, config: RepoConfig, master: MasterKey, cacheRoot?: string): Promise<Repository> {
    const sealer = new Sealer(master.encryptionKey);
    const hasher = await createKeyedHasher(master.idKey);
    const codec = new BlobCodec(sealer, new Compression(), hasher);
    return new Repository(store, config, master, sealer, hasher, codec, codecFromName(config.compression), cacheRoot);
  }

  get location(): string {
    return this.store.location;
  }

  /** The local cache, in step with the repository's index files when it was first asked for. */
  cache(): Promise<LocalCache> {
    this.cacheP ??= (async () => {
      const cache = await LocalCache.open(this.config.id, this.cacheRoot);
      await cache.sync(this.store, this.sealer);
      return cache;
    })();
    return this.cacheP;
  }

  /** Re-reads index files added since the cache was opened (by another process). */
  async refreshIndex(): Promise<void> {
    await (await this.cache()).sync(this.store, this.sealer);
  }

  async lookup(id: Buffer): Promise<IndexEntry | null> {
    return (await this.cache()).get(id);
  }

  /** Reads, decrypts, decompresses and verifies one blob. */
  async readBlob(id: Buffer, what = 'blob'): Promise<Buffer> {
    const e = await this.lookup(id);
    if (!e) throw new IntegrityError(`${what} ${id.toString('hex')} is not in the index: the repository is missing data`);
    try {
      return await this.readIndexed(e, what);
    } catch (err) {
      // a prune may have moved the blob since the cache was read: catch up once and retry
      if (!(err instanceof IntegrityError) || !/is missing$/.test(err.message)) throw err;
      await this.refreshIndex();
      const moved = await this.lookup(id);
      if (!moved || moved.packId.equals(e.packId)) throw err;
      return this.readIndexed(moved, what);
    }
  }

  async readIndexed(e: IndexEntry, what = 'blob'): Promise<Buffer> {
    const name = packObjectName(e.type, e.packId.toString('hex'));
    let stored: Buffer;
    try {
      stored = await this.store.get(name, { offset: e.offset, length: e.length });
    } catch (err) {
      if (isNotFound(err)) throw new IntegrityError(`pack ${name} holding ${what} ${e.id.toString('hex')} is missing`);
      throw err;
    }
    return this.codec.decode(stored, e.id, `${what} ${e.id.toString('hex')} in ${name}`);
  }

  async close(): Promise<void> {
    if (this.cacheP) await (await this.cacheP).close().catch(() => {});
    this.cacheP = null;
    await this.store.close();
  }
}

export { BlobType };
