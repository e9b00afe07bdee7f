/**
 * Start-up of a second process on one host (bench, not a test): the time to open the
 * local cache and bring it in step with a repository of 10,000 indexed packs, for
 *   1. the first process (builds its cache from every index file),
 *   1b. the first process restarted (its persistent slot is in step: nothing to load),
 *   2. a second process while the first holds its slot (seeded slot, today's design),
 *   3. the former fallback: a private cache rebuilt from every index file.
 *
 *   node dist/bench/service/cache-startup.js [--packs 10000] [--packs-per-file 10] [--entries 64]
 */
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { LocalCache } from '../../src/repo/local-cache.js';
import { FsStore } from '../../src/store/fs-store.js';
import { testSealer, writeIndexFiles } from '../../test/support/index-files.js';

function arg(name: string, d: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : d;
}

async function timed<T>(fn: () => Promise<T>): Promise<[T, number]> {
  const t = performance.now();
  const v = await fn();
  return [v, performance.now() - t];
}

const packs = arg('--packs', 10_000);
const perFile = arg('--packs-per-file', 10);
const entries = arg('--entries', 64);
const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-bench-cache-'));
const store = new FsStore(path.join(dir, 'repo'));
const sealer = await testSealer();
const files = await writeIndexFiles(store, sealer, { packs, packsPerFile: perFile, entriesPerPack: entries });
const root = path.join(dir, 'cache');
const [a, tFirst] = await timed(async () => {
  const c = await LocalCache.open('bench', root);
  const n = await c.sync(store, sealer);
  return { c, n };
});
// the first process restarted: its persistent slot is in step (what a service restart costs)
await a.c.close();
const [a2, tWarm] = await timed(async () => {
  const c = await LocalCache.open('bench', root);
  const n = await c.sync(store, sealer);
  return { c, n };
});
const [b, tSecond] = await timed(async () => {
  const c = await LocalCache.open('bench', root);
  const n = await c.sync(store, sealer);
  return { c, n };
});
// the old fallback: a private cache in a fresh directory, every index file loaded
const [p, tPrivate] = await timed(async () => {
  const c = await LocalCache.open('bench', path.join(dir, 'private'));
  const n = await c.sync(store, sealer);
  return { c, n };
});
const out = {
  date: new Date().toISOString(),
  packs,
  indexFiles: files,
  entries: packs * entries,
  firstProcess: { ms: Math.round(tFirst), slot: a.c.slot, indexFilesLoaded: a.n },
  firstProcessRestarted: { ms: Math.round(tWarm), slot: a2.c.slot, indexFilesLoaded: a2.n },
  secondProcess: { ms: Math.round(tSecond), slot: b.c.slot, indexFilesLoaded: b.n, ratioToFirstRestarted: Number((tSecond / tWarm).toFixed(2)) },
  privateRebuild: { ms: Math.round(tPrivate), indexFilesLoaded: p.n },
  cores: os.cpus().length,
  node: process.version,
};
process.stdout.write(JSON.stringify(out, null, 2) + '\n');
await a2.c.close();
await b.c.close();
await p.c.close();
await store.close();
await fsp.rm(dir, { recursive: true, force: true });
