/**
 * bench/gc-mark.ts (not a test): peak RSS of the prune's mark phase against a
 * synthetic index of N blobs: N index entries into the on-disk workspace, N ids
 * marked through the same batch writer the marker uses, then the merge-join
 * accounting over both. Each N runs in its own process (maxRSS is per process).
 *
 *   node dist/bench/gc-mark.js [N ...]      (default 1000000 10000000)
 *
 * Writes bench/results/gc-mark.json and gc-mark.md. Besides maxRSS, each row has
 * the peaks of RssAnon and RssFile (sampled every 250 ms from /proc/self/status:
 * RssFile holds the LevelDB table files mapped into memory, and the node binary)
 * and the workspace's size on disk.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { entryValue } from '../src/engine/gc/mark.js';
import { account } from '../src/engine/gc/plan.js';
import { BatchWriter, GcWorkspace, PRESENT } from '../src/engine/gc/workspace.js';

/** Peaks of RssAnon and RssFile in MiB, sampled (Linux only; zeros elsewhere). */
function sampler(): { stop: () => { anon: number; file: number } } {
  const peak = { anon: 0, file: 0 };
  const read = () => {
    try {
      const st = readFileSync('/proc/self/status', 'utf8');
      const kib = (f: string) => Number(new RegExp(`${f}:\\s+(\\d+)`).exec(st)?.[1] ?? 0);
      peak.anon = Math.max(peak.anon, kib('RssAnon') / 1024);
      peak.file = Math.max(peak.file, kib('RssFile') / 1024);
    } catch {
      /* not Linux */
    }
  };
  const t = setInterval(read, 250);
  return {
    stop: () => {
      clearInterval(t);
      read();
      return { anon: Math.round(peak.anon), file: Math.round(peak.file) };
    },
  };
}

/** The workspace's size on disk (approximate: compactions still running delete files meanwhile). */
async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const f of await fsp.readdir(dir)) n += (await fsp.stat(path.join(dir, f)).catch(() => ({ size: 0 }))).size;
  return n;
}

async function one(n: number): Promise<void> {
  const s = sampler();
  const t0 = Date.now();
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-bench-gc-'));
  const ws = await GcWorkspace.open(root);
  try {
    const w = new BatchWriter(ws.db, 8192);
    const packId = randomBytes(32);
    // ids come from one random slab per 8192 (a randomBytes(32) call per id cost ~15 us,
    // most of the load's time): each id is still its own 32-byte buffer, as the marker's are
    const SLAB = 8192;
    let slab = Buffer.alloc(0);
    for (let i = 0; i < n; i++) {
      if (i % 250 === 0) randomBytes(32).copy(packId);
      if (i % SLAB === 0) slab = randomBytes(32 * SLAB);
      const j = (i % SLAB) * 32;
      const id = Buffer.from(slab.subarray(j, j + 32));
      await w.put(ws.entries, Buffer.concat([id, packId]), entryValue({ type: 0, offset: 0, length: 30000, rawLength: 65536, seal: 2 }, 0));
      if (i % 10 !== 0) await w.put(ws.marks, id, PRESENT); // 90% live
    }
    await w.flush();
    const tLoad = Date.now();
    const acc = await account(ws);
    const tAcc = Date.now();
    const diskMiB = Math.round((await dirBytes(ws.dir)) / 2 ** 20);
    const peak = s.stop();
    process.stdout.write(
      JSON.stringify({
        blobs: n,
        live: acc.liveBlobs,
        loadMs: tLoad - t0,
        accountMs: tAcc - tLoad,
        maxRssMiB: Math.round(process.resourceUsage().maxRSS / 1024),
        peakRssAnonMiB: peak.anon,
        peakRssFileMiB: peak.file,
        diskMiB,
      }) + '\n',
    );
  } finally {
    await ws.close();
    await fsp.rm(root, { recursive: true, force: true });
  }
}

const fmtS = (ms: number) => `${(ms / 1000).toFixed(0)} s`;

async function main(): Promise<void> {
  if (process.argv[2] === '--one') return one(Number(process.argv[3]));
  const sizes = process.argv.slice(2).map(Number);
  const ns = sizes.length ? sizes : [1_000_000, 10_000_000];
  const self = fileURLToPath(import.meta.url);
  const rows: Record<string, number>[] = [];
  const lines = ['| blobs | peak RSS | load | account |', '|---:|---:|---:|---:|'];
  for (const l of lines) process.stdout.write(l + '\n');
  for (const n of ns) {
    const out = execFileSync(process.execPath, [self, '--one', String(n)], { encoding: 'utf8', maxBuffer: 1 << 20 });
    const row = JSON.parse(out.trim().split('\n').pop()!);
    rows.push(row);
    const line = `| ${n.toLocaleString('en')} | ${row.maxRssMiB} MiB | ${fmtS(row.loadMs)} | ${fmtS(row.accountMs)} |`;
    lines.push(line);
    process.stdout.write(line + '\n');
  }
  const dir = path.join(path.dirname(self), '..', '..', 'bench', 'results');
  await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(
    path.join(dir, 'gc-mark.json'),
    JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, host: os.hostname(), rows }, null, 2) + '\n',
  );
  await fsp.writeFile(path.join(dir, 'gc-mark.md'), lines.join('\n') + '\n');
}

await main();
