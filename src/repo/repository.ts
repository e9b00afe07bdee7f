import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import { BlobStore, isNotFound } from '../store/blob-store.js';
import { BlobCodec } from './blob-codec.js';
import { Codec, Compression, codecFromName } from './compression.js';
import { RepoConfig, authenticateConfig, encodeConfig, newConfig, parseConfig } from './config.js';
import { SealFormat } from './crypto.js';
import { IntegrityError, UserError } from './errors.js';
import { BlobType, CONFIG_NAME, FORMAT_VERSION, KEYS_PREFIX, packObjectName } from './format.js';
import { KeyedHasher, createKeyedHasher } from './hasher.js';
import { IndexEntry } from './index-file.js';
import { MasterKey, OpenedKey, newMasterKey, openKeyFile, writeKeyFile } from './keyfile.js';
import { LocalCache } from './local-cache.js';
import { ObjectLockConfig, applyObjectLock, checkObjectLockStore } from './object-lock.js';
import { RepoSealer } from './repo-sealer.js';

export interface Credentials {
  password?: string | null;
  passwordFile?: string;
  /** A shell command that prints the password (a secret manager). */
  passwordCommand?: string;
  /** The user expects an unencrypted repository (global --no-encryption): a password given anyway is not an error. */
  expectUnencrypted?: boolean;
}

/** Runs --password-command: its stdout, one trailing newline stripped; a failure is a UserError. */
async function passwordFromCommand(cmd: string): Promise<string> {
  const { code, stdout, stderr } = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn('/bin/sh', ['-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (c) => resolve({ code: c, stdout: out, stderr: err }));
  });
  if (code !== 0) {
    const why = stderr.trim().split('\n').pop() ?? '';
    throw new UserError(`--password-command exited with ${code}${why ? `: ${why}` : ''}`);
  }
  const pw = stdout.replace(/\r?\n$/, '');
  if (!pw) throw new UserError('--password-command printed no password');
  return pw;
}

/** Reads the password from --password-command, --password-file or PILOTLIGHT_PASSWORD; null when none is set. */
export async function resolvePassword(c: Credentials): Promise<string | null> {
  if (c.password) return c.password;
  if (c.passwordCommand) return passwordFromCommand(c.passwordCommand);
  if (c.passwordFile) {
    let text: string;
    try {
      const st = await fsp.stat(c.passwordFile);
      if ((st.mode & 0o077) !== 0 && st.isFile()) {
        process.stderr.write(
          `pilotlight: warning: password file ${c.passwordFile} is readable by ${st.mode & 0o007 ? 'others' : 'its group'} (mode ${(st.mode & 0o777).toString(8)}); chmod 600 it\n`,
        );
      }
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
  /** Object Lock: put every object a snapshot needs with a retain-until date (S3 buckets with Object Lock only). */
  objectLock?: ObjectLockConfig;
  /** Format version to create (default: the newest). Version 1 exists for tests and benchmarks of old repositories. */
  version?: 1 | 2;
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
    /** Seals and opens index files, trailers and records in this repository's format. */
    readonly sealer: RepoSealer,
    readonly hasher: KeyedHasher,
    readonly codec: BlobCodec,
    readonly defaultCodec: Codec,
    /** The key file that opened the repository (`keys/<id>`) and its version. */
    readonly key: { name: string; version: 1 | 2 },
    readonly cacheRoot?: string,
  ) {}

  static async init(store: BlobStore, options: InitOptions): Promise<Repository> {
    if (await store.head(CONFIG_NAME)) throw new UserError(`${store.location} already holds a pilotlight repository`);
    for await (const _ of store.list('')) {
      throw new UserError(`${store.location} is not empty; init needs an empty directory or bucket prefix`);
    }
    const password = options.encrypted ? await resolvePassword(options) : null;
    if (options.encrypted && !password) {
      throw new UserError('an encrypted repository needs a password: set PILOTLIGHT_PASSWORD, or pass --password-file or --password-command (or use --no-encryption)');
    }
    if (options.objectLock) await checkObjectLockStore(store, options.objectLock);
    const version = options.version ?? FORMAT_VERSION;
    const config = newConfig({ ...options, version });
    applyObjectLock(store, config.objectLock);
    const master = newMasterKey(options.encrypted);
    const keyName = `${KEYS_PREFIX}${randomBytes(16).toString('hex')}`;
    await store.put(keyName, await writeKeyFile(master, password, keyName, version >= 2 ? 2 : 1), { ifNotExists: true });
    // config last: a repository without config is not a repository, so a crash here leaves nothing half-made.
    await store.put(CONFIG_NAME, encodeConfig(config, master), { ifNotExists: true });
    return Repository.fromParts(store, config, master, { name: keyName, version: version >= 2 ? 2 : 1 });
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
    const header = parseConfig(configBytes, store.location);
    const password = await resolvePassword(credentials);
    if (header.encryption === 'none' && password && !credentials.expectUnencrypted) {
      throw new UserError(
        `${store.location} is not encrypted, but a password was given: refusing it (its config and keys may have been replaced to make backups write plaintext); pass --no-encryption if you expect an unencrypted repository`,
      );
    }
    if (header.encryption !== 'none' && !password) {
      throw new UserError('this repository is encrypted: set PILOTLIGHT_PASSWORD or pass --password-file (or --password-command)');
    }
    const opened = await openAnyKey(store, header.encryption === 'none' ? null : password);
    const { master } = opened;
    if ((header.encryption === 'none') !== (master.encryptionKey === null)) {
      throw new UserError(`${store.location}: config and key file disagree about encryption; the repository is damaged`);
    }
    if (header.version < 2 && opened.version >= 2) {
      throw new IntegrityError(`config says format version ${header.version} but key file ${opened.name} is version 2: the config was replaced by an older one`);
    }
    const config = authenticateConfig(header, master, store.location);
    applyObjectLock(store, config.objectLock);
    return Repository.fromParts(store, config, master, { name: opened.name, version: opened.version }, cacheRoot);
  }

  static async fromParts(store: BlobStore, config: RepoConfig, master: MasterKey, key: { name: string; version: 1 | 2 }, cacheRoot?: string): Promise<Repository> {
    const hasher = await createKeyedHasher(master.idKey);
    const acceptsV1 = config.version < 2 || config.migratedFrom === 1;
    const sealer = new RepoSealer(master.encryptionKey, config.version, hasher, acceptsV1);
    const codec = new BlobCodec(master.encryptionKey, new Compression(), hasher, config.version >= 2 ? 2 : 1);
    return new Repository(store, config, master, sealer, hasher, codec, codecFromName(config.compression), key, cacheRoot);
  }

  get location(): string {
    return this.store.location;
  }

  /** Seal format of blobs this repository writes (its blobs may also be of format 1 when migrated). */
  get blobSeal(): SealFormat {
    return this.codec.writeSeal;
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

  private rebuilt = false;

  /**
   * Rebuilds the local cache from the index files as they are now, once per handle:
   * for a blob that is not in the cache, or whose pack is gone, after catching up with
   * the GC epochs (LocalCache.rebuild says when that happens). Returns whether it ran.
   */
  async rebuildIndexOnce(): Promise<boolean> {
    if (this.rebuilt) return false;
    this.rebuilt = true;
    await (await this.cache()).rebuild(this.store, this.sealer);
    return true;
  }

  async lookup(id: Buffer): Promise<IndexEntry | null> {
    return (await this.cache()).get(id);
  }

  /** Reads, decrypts, decompresses and verifies one blob. */
  async readBlob(id: Buffer, what = 'blob'): Promise<Buffer> {
    let e = await this.lookup(id);
    if (!e) {
      // written by another process since this one read the index (a long-lived process): catch up once
      await this.refreshIndex();
      e = await this.lookup(id);
    }
    if (!e && (await this.rebuildIndexOnce())) e = await this.lookup(id);
    if (!e) throw new IntegrityError(`${what} ${id.toString('hex')} is not in the index: the repository is missing data`);
    try {
      return await this.readIndexed(e, what);
    } catch (err) {
      // a prune may have moved the blob since the cache was read: catch up once and retry
      if (!(err instanceof IntegrityError) || !/is missing$/.test(err.message)) throw err;
      await this.refreshIndex();
      let moved = await this.lookup(id);
      if ((!moved || moved.packId.equals(e.packId)) && (await this.rebuildIndexOnce())) moved = await this.lookup(id);
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
    if (e.seal === 1 && !this.sealer.acceptsV1) throw new IntegrityError(`${what} ${e.id.toString('hex')} in ${name}: a version 1 blob in a repository created as version 2`);
    return this.codec.decode(stored, e.id, `${what} ${e.id.toString('hex')} in ${name}`, e.type, e.seal);
  }

  async close(): Promise<void> {
    if (this.cacheP) await (await this.cacheP).close().catch(() => {});
    this.cacheP = null;
    await this.store.close();
  }
}

/** Tries every key file with the password; the first that opens wins. */
export async function openAnyKey(store: BlobStore, password: string | null): Promise<OpenedKey & { name: string }> {
  let keys = 0;
  for await (const k of store.list(KEYS_PREFIX)) {
    keys++;
    const opened = await openKeyFile(await store.get(k.name), password, k.name);
    if (opened) return { ...opened, name: k.name };
  }
  if (keys === 0) throw new UserError(`${store.location} has no key file: the repository is damaged`);
  throw new UserError('wrong password: no key file of this repository opens with it');
}

export { BlobType };
