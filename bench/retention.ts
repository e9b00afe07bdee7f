/**
 * bench/retention: long retention on a 1 GiB disk — a history of N snapshots with about 1%
 * change each, forgotten down to a realistic policy (everything of the last day, hourly for
 * a week, daily for a month) and pruned; pilotlight and restic side by side, same history,
 * same policy, in the same script.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/retention.js [--snapshots 330] [--size 1G]
 *       [--change 0.01] [--interval-min 135] [--work DIR] [--no-restic] [--name retention]
 *
 * - The disk: `size` bytes of random data (incompressible, so byte counts are not flattered
 *   by compression). Each step overwrites `change` of it in 20 random 64 KiB-aligned regions.
 * - Snapshot times are synthetic, one every `interval-min` minutes ending now: pilotlight gets
 *   them as the consistency time (`FileSource` `takenAt`, what `backup file --taken-at`
 *   passes), restic as `backup --time`. The default (135 min x 330) spans 31 days, so every
 *   rule of the policy selects something.
 * - pilotlight's history is written in-process (runBackup with the CBT-style change list) to
 *   save 330 process start-ups; restic's through its CLI (it re-reads the whole image each
 *   time: that is how it works, and the history is not what is measured).
 * - Measured, each as a child process under /usr/bin/time -v: forget, then prune: wall time,
 *   peak RSS, bytes freed (repository bytes before - after), and for pilotlight the store
 *   requests its --json report counts. restic does not report requests.
 * - Policy: --keep-within 1d --keep-hourly 168 --keep-daily 31, periods in UTC for both.
 *   The snapshots each tool keeps are compared (same semantics: they should be the same times).
 * Output: bench/results/<name>.json and .md. Not a test: nothing here asserts a time.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runBackup } from '../src/engine/backup.js';
import { Repository } from '../src/repo/repository.js';
import { FileSource } from '../src/source/file-source.js';
import { openStore } from '../src/store/open-store.js';
import { Rng } from '../test/support/images.js';
import { dirBytes, fmtSize, parseArgs, parseSize, repoRoot, timed, which, type Timed } from './lib/util.js';
import { toolVersion } from './lib/tools.js';

const root = repoRoot(import.meta.url);
const CHUNK = 64 * 1024;
const PASSWORD = 'pilotlight-bench-password';
const POLICY = ['--keep-within', '1d', '--keep-hourly', '168', '--keep-daily', '31'];

function log(msg: string): void {
  process.stderr.write(`[retention ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

interface Phase {
  wallS: number;
  cpuS: number;
  peakRssMiB: number;
  exitCode: number;
}

function phase(t: Timed): Phase {
  return { wallS: +(t.wallMs / 1000).toFixed(2), cpuS: +(t.userS + t.sysS).toFixed(2), peakRssMiB: +(t.maxRssBytes / 1048576).toFixed(1), exitCode: t.exitCode };
}

interface ToolResult {
  tool: string;
  version: string;
  historySeconds: number | null;
  snapshotsBefore: number;
  snapshotsKept: number;
  repoBytesBefore: number;
  repoBytesAfterForget: number;
  repoBytesAfterPrune: number | null;
  bytesFreed: number | null;
  forget: Phase;
  prune: Phase | null;
  pruneNote?: string;
  requests?: { forget?: unknown; prune?: unknown };
  keptTimes: string[];
}

async function mutate(img: string, rng: Rng, size: number, change: number): Promise<string> {
  const regions = 20;
  const regionBytes = Math.max(CHUNK, Math.round((size * change) / regions / CHUNK) * CHUNK);
  const fh = await fsp.open(img, 'r+');
  const lines: string[] = [];
  try {
    for (let i = 0; i < regions; i++) {
      const off = rng.int(Math.floor((size - regionBytes) / CHUNK)) * CHUNK;
      await fh.write(randomBytes(regionBytes), 0, regionBytes, off);
      lines.push(`${off} ${regionBytes}`);
    }
  } finally {
    await fh.close();
  }
  return lines.join('\n') + '\n';
}

/**
 * --finish-now: a history run that was stopped (time ran out) is measured as far as it got.
 * Both repositories must hold the same snapshots: when restic is one behind (stopped during
 * its backup), the image still holds that state and restic backs it up now.
 */
async function finishNow(work: string, img: string, withRestic: boolean, intervalMin: number, size: number, change: number) {
  const plEnv = { ...process.env, PILOTLIGHT_PASSWORD: PASSWORD, PILOTLIGHT_CACHE_DIR: path.join(work, 'pl-cache') };
  const pl = await timed(process.execPath, [path.join(root, 'bin', 'pilotlight.js'), 'snapshots', '--repo', path.join(work, 'pl-repo'), '--json'], { env: plEnv });
  if (pl.exitCode !== 0) throw new Error(`cannot list the pilotlight history: ${pl.stderr}`);
  const plSnaps = JSON.parse(pl.stdout) as { time: string }[];
  let rsCount = 0;
  if (withRestic) {
    const rsEnv = { ...process.env, RESTIC_PASSWORD: PASSWORD, RESTIC_REPOSITORY: path.join(work, 'restic-repo'), RESTIC_CACHE_DIR: path.join(work, 'restic-cache'), TZ: 'UTC' };
    const rs = await timed('restic', ['snapshots', '--json'], { env: rsEnv });
    if (rs.exitCode !== 0) throw new Error(`cannot list the restic history: ${rs.stderr}`);
    rsCount = (JSON.parse(rs.stdout) as unknown[]).length;
    if (rsCount === plSnaps.length - 1) {
      const t = new Date(plSnaps[plSnaps.length - 1]!.time);
      log(`restic is one snapshot behind: backing up ${t.toISOString()} now`);
      const r = await timed('restic', ['backup', '-q', '--compression', 'auto', '--host', 'vm1', '--time', resticTime(t), 'disk.img'], { env: rsEnv, cwd: path.dirname(img), stdoutFile: '/dev/null' });
      if (r.exitCode !== 0) throw new Error(`restic backup failed: ${r.stderr}`);
      rsCount++;
    }
    if (rsCount !== plSnaps.length) throw new Error(`pilotlight has ${plSnaps.length} snapshots, restic ${rsCount}: cannot compare`);
  }
  log(`finishing with the ${plSnaps.length} snapshots written so far`);
  const hist = { count: plSnaps.length, size, change, intervalMin, plHistory: NaN, rsHistory: NaN, withRestic, stoppedEarly: true };
  await fsp.writeFile(path.join(work, 'history.json'), JSON.stringify(hist));
  return hist;
}

function resticTime(d: Date): string {
  return d.toISOString().replace('T', ' ').slice(0, 19);
}

async function main(): Promise<void> {
  const { flags, on } = parseArgs(process.argv.slice(2), ['no-restic', 'finish-now']);
  let count = Number(flags.snapshots ?? 330);
  const size = parseSize(flags.size ?? '1G');
  const change = Number(flags.change ?? 0.01);
  const intervalMin = Number(flags['interval-min'] ?? 135);
  const name = flags.name ?? 'retention';
  const work = flags.work ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-retention-')));
  const withRestic = !on.has('no-restic') && which('restic') !== undefined;
  await fsp.mkdir(work, { recursive: true });
  log(`work dir ${work}; ${count} snapshots of ${fmtSize(size)}, ${(change * 100).toFixed(1)}% change each, every ${intervalMin} min`);

  const img = path.join(work, 'src', 'disk.img');
  const marker = path.join(work, 'history.json');
  let hist = await fsp.readFile(marker, 'utf8').then((t) => JSON.parse(t) as { count: number; size: number; change: number; intervalMin: number; plHistory: number; rsHistory: number; withRestic: boolean }, () => null);
  const genRepo = path.join(work, 'pl-repo');
  const genCache = path.join(work, 'pl-cache');
  const rsGenRepo = path.join(work, 'restic-repo');
  let plHistory = hist ? (hist.plHistory ?? NaN) : 0;
  let rsHistory = hist ? (hist.rsHistory ?? NaN) : 0;
  if (!hist && on.has('finish-now')) hist = await finishNow(work, img, withRestic, intervalMin, size, change);
  if (hist && on.has('finish-now')) {
    count = hist.count;
    plHistory = hist.plHistory ?? NaN;
    rsHistory = hist.rsHistory ?? NaN;
  }
  if (hist && (hist.count !== count || hist.size !== size || hist.change !== change || hist.intervalMin !== intervalMin || hist.withRestic !== withRestic)) {
    throw new Error(`${work} holds another history (${JSON.stringify(hist)}): use another --work`);
  }
  const plRepo = path.join(work, 'pl-measure');
  const plCache = path.join(work, 'pl-measure-cache');
  const rsRepo = path.join(work, 'restic-measure');
  const plEnv = { ...process.env, PILOTLIGHT_PASSWORD: PASSWORD, PILOTLIGHT_CACHE_DIR: plCache, TZ: 'UTC' };
  const cli = (args: string[]) => timed(process.execPath, [path.join(root, 'bin', 'pilotlight.js'), ...args], { env: plEnv });
  const rsEnvFor = (repoDir: string, cacheDir: string) => ({ ...process.env, RESTIC_PASSWORD: PASSWORD, RESTIC_REPOSITORY: repoDir, RESTIC_CACHE_DIR: cacheDir, TZ: 'UTC' });
  const rsEnv = rsEnvFor(rsGenRepo, path.join(work, 'restic-cache'));
  if (hist) log(`reusing the history in ${work}`);
  else {
  await fsp.mkdir(path.dirname(img), { recursive: true });
  {
    const fh = await fsp.open(img, 'w');
    for (let off = 0; off < size; off += 64 << 20) {
      const n = Math.min(64 << 20, size - off);
      await fh.write(randomBytes(n), 0, n, off);
    }
    await fh.close();
  }


  process.env.PILOTLIGHT_CACHE_DIR = genCache;
  await fsp.mkdir(genRepo, { recursive: true });
  const store = await openStore(genRepo);
  const repo = await Repository.init(store, { encrypted: true, password: PASSWORD });
  if (withRestic) {
    const t = await timed('restic', ['init', '--repository-version', '2', '-q'], { env: rsEnv });
    if (t.exitCode !== 0) throw new Error(`restic init failed: ${t.stderr}`);
  }

  const rng = new Rng(42);
  const end = Date.now() - 60_000;
  const changes = path.join(work, 'changes.txt');
  for (let i = 0; i < count; i++) {
    const takenAt = new Date(end - (count - 1 - i) * intervalMin * 60_000);
    if (i > 0) await fsp.writeFile(changes, await mutate(img, rng, size, change));
    const t0 = Date.now();
    const src = await FileSource.open('vm1', [img], { takenAt, ...(i > 0 ? { changedExtents: [changes] } : {}) });
    try {
      await runBackup(repo, src, { sourceKind: 'file' });
    } finally {
      await src.close();
    }
    plHistory += Date.now() - t0;
    if (withRestic) {
      const t1 = Date.now();
      const r = await timed('restic', ['backup', '-q', '--compression', 'auto', '--host', 'vm1', '--time', resticTime(takenAt), 'disk.img'], {
        env: rsEnv,
        cwd: path.dirname(img),
        stdoutFile: '/dev/null',
      });
      if (r.exitCode !== 0) throw new Error(`restic backup failed: ${r.stderr}`);
      rsHistory += Date.now() - t1;
    }
    if (i % 25 === 0 || i === count - 1) log(`snapshot ${i + 1}/${count} (${takenAt.toISOString()}); pilotlight ${(plHistory / 1000).toFixed(0)} s, restic ${(rsHistory / 1000).toFixed(0)} s so far`);
  }
  await repo.close();
  await fsp.writeFile(marker, JSON.stringify({ count, size, change, intervalMin, plHistory, rsHistory, withRestic, end }));
  }

  // Measure on copies (hard links: neither tool rewrites a file in place; caches are copied),
  // so that the same history can be measured again.
  for (const d of [plRepo, plCache, rsRepo, path.join(work, 'restic-measure-cache')]) await fsp.rm(d, { recursive: true, force: true });
  const cp = async (args: string[]) => {
    const r = await timed('cp', args);
    if (r.exitCode !== 0) throw new Error(`cp ${args.join(' ')}: ${r.stderr}`);
  };
  await cp(['-al', genRepo, plRepo]);
  await cp(['-a', genCache, plCache]);
  if (withRestic) {
    await cp(['-al', rsGenRepo, rsRepo]);
    await cp(['-a', path.join(work, 'restic-cache'), path.join(work, 'restic-measure-cache')]);
  }
  const rsMeasureEnv = rsEnvFor(rsRepo, path.join(work, 'restic-measure-cache'));

  const results: ToolResult[] = [];

  // pilotlight: forget, then prune when this build has it.
  {
    const before = await dirBytes(plRepo);
    const f = await cli(['forget', '--repo', plRepo, '--vm', 'vm1', ...POLICY, '--tz', 'UTC', '--json']);
    if (f.exitCode !== 0) throw new Error(`pilotlight forget failed: ${f.stderr}`);
    const fr = JSON.parse(f.stdout);
    const afterForget = await dirBytes(plRepo);
    const help = await cli(['prune', '--help']);
    let prune: Phase | null = null;
    let afterPrune: number | null = null;
    let pruneReq: unknown;
    let pruneNote: string | undefined;
    if (help.exitCode === 0 && /Usage: pilotlight prune/.test(help.stdout)) {
      const p = await cli(['prune', '--repo', plRepo, '--json']);
      prune = phase(p);
      if (p.exitCode !== 0) pruneNote = `prune failed: ${p.stderr.trim().split('\n').pop()}`;
      else pruneReq = JSON.parse(p.stdout).requests;
      afterPrune = await dirBytes(plRepo);
    } else {
      pruneNote = 'this build has no prune command yet: forget alone was measured';
    }
    const v = fr.vms[0];
    results.push({
      tool: 'pilotlight',
      version: (await cli(['--version'])).stdout.trim(),
      historySeconds: Number.isFinite(plHistory) ? +(plHistory / 1000).toFixed(1) : null,
      snapshotsBefore: v.snapshots.length,
      snapshotsKept: v.kept,
      repoBytesBefore: before,
      repoBytesAfterForget: afterForget,
      repoBytesAfterPrune: afterPrune,
      bytesFreed: afterPrune === null ? null : before - afterPrune,
      forget: phase(f),
      prune,
      ...(pruneNote ? { pruneNote } : {}),
      requests: { forget: fr.requests, ...(pruneReq ? { prune: pruneReq } : {}) },
      keptTimes: v.snapshots.filter((d: { outcome: string }) => d.outcome === 'keep').map((d: { time: string }) => new Date(d.time).toISOString().slice(0, 19)).sort(),
    });
  }

  if (withRestic) {
    const before = await dirBytes(rsRepo);
    const f = await timed('restic', ['forget', '--host', 'vm1', ...POLICY, '--json'], { env: rsMeasureEnv });
    if (f.exitCode !== 0) throw new Error(`restic forget failed: ${f.stderr}`);
    const groups = JSON.parse(f.stdout) as { keep: { time: string }[]; remove: { time: string }[] | null }[];
    const keep = groups.flatMap((g) => g.keep);
    const afterForget = await dirBytes(rsRepo);
    const p = await timed('restic', ['prune'], { env: rsMeasureEnv, stdoutFile: path.join(work, 'restic-prune.txt') });
    const afterPrune = await dirBytes(rsRepo);
    results.push({
      tool: 'restic',
      version: toolVersion('restic', ['version']),
      historySeconds: Number.isFinite(rsHistory) ? +(rsHistory / 1000).toFixed(1) : null,
      snapshotsBefore: keep.length + groups.flatMap((g) => g.remove ?? []).length,
      snapshotsKept: keep.length,
      repoBytesBefore: before,
      repoBytesAfterForget: afterForget,
      repoBytesAfterPrune: afterPrune,
      bytesFreed: before - afterPrune,
      forget: phase(f),
      prune: phase(p),
      keptTimes: keep.map((k) => new Date(k.time).toISOString().slice(0, 19)).sort(),
    });
  }

  const pl = results[0]!;
  const rs = results[1];
  const sameKept = rs ? JSON.stringify(pl.keptTimes) === JSON.stringify(rs.keptTimes) : null;
  const out = {
    name,
    date: new Date().toISOString(),
    machine: `${os.cpus().length} x ${os.cpus()[0]?.model ?? '?'}, ${fmtSize(os.totalmem())} RAM, shared with other work`,
    node: process.version,
    history: {
      snapshots: count,
      diskBytes: size,
      changePerSnapshot: change,
      intervalMinutes: intervalMin,
      spanDays: +(((count - 1) * intervalMin) / 1440).toFixed(1),
      ...((hist as { stoppedEarly?: boolean } | null)?.stoppedEarly ? { stoppedEarly: true } : {}),
    },
    policy: POLICY.join(' ') + ' (UTC)',
    sameSnapshotsKept: sameKept,
    results,
  };
  const dir = path.join(root, 'bench', 'results');
  await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(path.join(dir, `${name}.json`), JSON.stringify(out, null, 2) + '\n');
  const row = (r: ToolResult) => {
    const mib = (b: number | null) => (b === null ? 'n/a' : `${(b / 1048576).toFixed(0)} MiB`);
    return `| ${r.tool} | ${r.snapshotsBefore} -> ${r.snapshotsKept} | ${r.forget.wallS} s / ${r.forget.peakRssMiB} MiB | ${r.prune ? `${r.prune.wallS} s / ${r.prune.peakRssMiB} MiB` : 'n/a'} | ${mib(r.repoBytesBefore)} | ${mib(r.repoBytesAfterPrune)} | ${mib(r.bytesFreed)} | ${reqText(r)} |`;
  };
  const md = [
    `# Retention: forget + prune, ${count} snapshots of a ${fmtSize(size)} disk`,
    '',
    `${out.date.slice(0, 16)} UTC, ${out.machine}, Node ${out.node}. One snapshot every ${intervalMin} min over ${out.history.spanDays} days (synthetic consistency times), ` +
      `${(change * 100).toFixed(0)}% of the disk rewritten (random data) between snapshots. Policy \`${out.policy}\`.`,
    '',
    '| tool | snapshots | forget (wall / peak RSS) | prune (wall / peak RSS) | repository before | after prune | freed | store requests (forget; prune) |',
    '|---|---|---|---|---|---|---|---|',
    ...results.map(row),
    '',
    sameKept === null ? '' : `Same snapshots kept by both tools: ${sameKept ? 'yes' : 'NO'} (compared by consistency time).`,
    ...results.filter((r) => r.pruneNote).map((r) => `${r.tool}: ${r.pruneNote}.`),
    (out.history as { stoppedEarly?: boolean }).stoppedEarly
      ? `The history run was stopped early (the shared machine was too loaded to write all of it in time): ${count} snapshots were measured.`
      : '',
    `History written in ${pl.historySeconds ?? 'n/a'} s (pilotlight, in-process, change lists)${rs ? ` and ${rs.historySeconds ?? 'n/a'} s (restic, re-reading the image)` : ''}; not part of the comparison.`,
    '',
  ].join('\n');
  await fsp.writeFile(path.join(dir, `${name}.md`), md);
  process.stdout.write(md);
  if (!flags.work) await fsp.rm(work, { recursive: true, force: true });
  else for (const d of [plRepo, plCache, rsRepo, path.join(work, 'restic-measure-cache')]) await fsp.rm(d, { recursive: true, force: true });
}

function reqText(r: ToolResult): string {
  const count = (m: unknown) => {
    const x = m as { total?: number; get?: number; put?: number; list?: number; delete?: number; head?: number } | undefined;
    if (!x || typeof x.total !== 'number') return 'n/a';
    return `${x.total} (${x.list} list, ${x.get} get, ${x.head} head, ${x.put} put, ${x.delete} delete)`;
  };
  if (!r.requests) return 'not reported';
  return `${count(r.requests.forget)}; ${r.requests.prune ? count(r.requests.prune) : 'n/a'}`;
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
