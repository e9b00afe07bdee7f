/**
 * bench/gc-mark.ts (not a test): peak RSS of the prune's mark phase against a
 * synthetic index of N blobs: N index entries into the on-disk workspace, N ids
 * marked through the same batch writer the marker uses, then the merge-join
 * accounting over both. Each N runs in its own process (maxRSS is per process).
 *
 *   node dist/bench/gc-mark.js [N ...]      (default 1000000 10000000)
 *
 * Writes bench/results/gc-mark.json and prints a table.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { entryValue } from '../src/engine/gc/mark.js';
import { account } from '../src/engine/gc/plan.js';
import { BatchWriter, GcWorkspace } from '../src/engine/gc/workspace.js';

async function one(n: number): Promise<void> {
  const t0 = Date.now();
  const ws = await GcWorkspace.open(await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-bench-gc-')));
  try {
    const w = new BatchWriter(ws.db, 8192);
    const packId = randomBytes(32);
    for (let i = 0; i < n; i++) {
      if (i % 250 === 0) randomBytes(32).copy(packId);
      const id = randomBytes(32);
      await w.put(ws.entries, Buffer.concat([id, packId]), entryValue({ type: 0, offset: 0, length: 30000, rawLength: 65536, seal: 2 }, 0));
      if (i % 10 !== 0) await w.put(ws.marks, id, Buffer.alloc(0)); // 90% live
    }
    await w.flush();
    const tLoad = Date.now();
    const acc = await account(ws);
    const tAcc = Date.now();
    process.stdout.write(JSON.stringify({ blobs: n, live: acc.liveBlobs, loadMs: tLoad - t0, accountMs: tAcc - tLoad, maxRssMiB: Math.round(process.resourceUsage().maxRSS / 1024) }) + '\n');
  } finally {
    await ws.close();
  }
}

async function main(): Promise<void> {
  if (process.argv[2] === '--one') return one(Number(process.argv[3]));
  const sizes = process.argv.slice(2).map(Number);
  const ns = sizes.length ? sizes : [1_000_000, 10_000_000];
  const self = fileURLToPath(import.meta.url);
  const rows: Record<string, unknown>[] = [];
  for (const n of ns) {
    const out = execFileSync(process.execPath, [self, '--one', String(n)], { encoding: 'utf8', maxBuffer: 1 << 20 });
    const row = JSON.parse(out.trim().split('\n').pop()!);
    rows.push(row);
    process.stdout.write(`| ${n.toLocaleString('en')} | ${row.maxRssMiB} MiB | ${(row.loadMs / 1000).toFixed(0)} s | ${(row.accountMs / 1000).toFixed(0)} s |\n`);
  }
  const dir = path.join(path.dirname(self), '..', '..', 'bench', 'results');
  await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(
    path.join(dir, 'gc-mark.json'),
    JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, host: os.hostname(), rows }, null, 2) + '\n',
  );
}

await main();
