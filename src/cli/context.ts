import { Command } from 'commander';
import { UserError } from '../repo/errors.js';
import { Credentials, InitOptions, Repository } from '../repo/repository.js';
import { openStore } from '../store/open-store.js';

/** Options every repository command takes (on the program, so they go before or after the command). */
export interface GlobalOptions {
  repo?: string;
  passwordFile?: string;
  passwordCommand?: string;
  /** false when --no-encryption was given. */
  encryption?: boolean;
  s3Endpoint?: string;
  storageClass?: string;
  cacheDir?: string;
  json?: boolean;
}

export function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

export function repoLocation(g: GlobalOptions): string {
  const loc = g.repo ?? process.env.PILOTLIGHT_REPO;
  if (!loc) throw new UserError('no repository given: pass --repo DIR|s3://BUCKET/PREFIX or set PILOTLIGHT_REPO');
  return loc;
}

export async function openRepo(cmd: Command): Promise<Repository> {
  const g = globals(cmd);
  const store = await openStore(repoLocation(g), { s3Endpoint: g.s3Endpoint, storageClass: g.storageClass });
  try {
    return await Repository.open(store, credentials(g), g.cacheDir);
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
}

/** The password sources the global options name. */
export function credentials(g: GlobalOptions): Credentials {
  return { passwordFile: g.passwordFile, passwordCommand: g.passwordCommand, expectUnencrypted: g.encryption === false };
}

export async function initRepo(cmd: Command, options: Omit<InitOptions, 'passwordFile'>): Promise<Repository> {
  const g = globals(cmd);
  const store = await openStore(repoLocation(g), { s3Endpoint: g.s3Endpoint, storageClass: g.storageClass });
  try {
    return await Repository.init(store, { ...options, ...credentials(g) });
  } catch (err) {
    await store.close().catch(() => {});
    throw err;
  }
}

/** Prints one JSON document on stdout. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function parseIntOption(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new UserError(`${name} takes a whole number, got ${JSON.stringify(v)}`);
    return n;
  };
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let u = 0;
  let v = n;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

/** Store request counters, when the store keeps them (the metered decorator). */
export function storeRequests(repo: Repository): unknown {
  const s = repo.store as unknown as { metrics?: () => unknown };
  return typeof s.metrics === 'function' ? s.metrics() : undefined;
}
