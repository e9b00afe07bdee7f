/**
 * bench/retention: long retention on a 1 GiB disk — a history of N snapshots with about 1%
 * change each, forgotten down to a realistic policy (everything of the last day, hourly for
 * a week, daily for a month) and pruned; pilotlight and restic side by side, same history,
 * same policy, in the same script.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/retention.js [--schedule 288x15,144x60,24x1440]
 *       [--snapshots N --interval-min M] [--size 1G] [--change 0.01] [--work DIR] [--history-only]
 *       [--no-restic] [--name retention]
 *
 * - The disk: `size` bytes of random data (incompressible, so byte counts are not flattered
 *   by compression). Each step overwrites `change` of it in 20 random 64 KiB-aligned regions.
 * - Snapshot times are synthetic, ending now: pilotlight gets them as the consistency time
 *   (`FileSource` `takenAt`, what `backup file --taken-at` passes), restic as `backup --time`.
 *   `--schedule COUNTxMINUTES,...` lists segments newest first; `--snapshots N --interval-min M`
 *   is the one segment `NxM`. The default, 288x15,144x60,24x1440 (456 snapshots over 33 days),
 *   is what a repository holds when backups run every 15 minutes and this same policy last ran
 *   two days ago: 15-minute snapshots since then and for the day before it, hourly ones for the
 *   six days before, dailies before that. The policy then thins at every tier (15-minute ->
 *   hourly for day 2-3, hourly -> daily for day 8-9, dailies older than 31 days go): 194 of
 *   456 forgotten. (One snapshot every 135 minutes, the earlier default, is thinned by the
 *   daily rule alone: --keep-hourly 168 keeps the newest 168 snapshots, 15.75 days.)
 * - `--history-only` writes the history (into `--work DIR`) and stops: run it under `nice`,
 *   then run again with the same `--work` and flags on a quiet machine to measure.
 * - pilotlight's history is written in-process (runBackup with the CBT-style change list) to
 *   save a process start-up per snapshot; restic's through its CLI (it re-reads the whole image each
 *   time: that is how it works, and the history is not what is measured).
 * - Measured, each as a child process under /usr/bin/time -v: forget, then prune: wall time,
 *   peak RSS, bytes freed (repository bytes before - after), and for pilotlight the store
 *   requests its --json report counts. restic does not report requests.
 * - Policy: --keep-within 1d --keep-hourly 168 --keep-daily 31, periods in UTC for both.
 *   The snapshots each tool keeps are compared (same semantics: they should be the same times).
 * - The load averages (1, 5, 15 min) are recorded before each measured step (the machine is shared).
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
const DEFAULT_SCHEDULE = '288x15,144x60,24x1440';

/** `COUNTxMINUTES,...`, newest segment first. */
function parseSchedule(text: string): { count: number; minutes: number }[] {
  const segs = text.split(',').map((part) => {
    const m = /^\s*(\d+)\s*x\s*(\d+(?:\.\d+)?)\s*$/.exec(part);
    if (!m || Number(m[1]) < 1 || Number(m[2]) <= 0) throw new Error(`cannot read schedule segment '${part}': use COUNTxMINUTES, e.g. 288x15`);
    return { count: Number(m[1]), minutes: Number(m[2]) };
  });
  return segs;
}

/** Snapshot times, oldest first: the newest at `end`, each segment's spacing going back. */
function scheduleTimes(schedule: string, end: number): Date[] {
  const out: number[] = [];
  let t = end;
  for (const seg of parseSchedule(schedule)) {
    for (let i = 0; i < seg.count; i++) {
      if (out.length > 0) t -= seg.minutes * 60_000;
      out.push(t);
    }
  }
  return out.reverse().map((x) => new Date(x));
}

function describeSchedule(schedule: string): string {
  const unit = (m: number) => (m % 1440 === 0 ? `${m / 1440} d` : m % 60 === 0 ? `${m / 60} h` : `${m} min`);
  return parseSchedule(schedule)
    .map((s) => `${s.count} every ${unit(s.minutes)}`)
    .join(', then ');
}

function log(msg: string): void {
  process.stderr.write(`[retention ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

interface Phase {
  wallS: number;
  cpuS: number;
  peakRssMiB: number;
  exitCode: number;
  /** 1-, 5- and 15-minute load averages just before the step (2 cores, shared). */
  loadBefore: number[];
}

function phase(t: Timed, loadBefore: number[]): Phase {
  return {
    wallS: +(t.wallMs / 1000).toFixed(2),
    cpuS: +(t.userS + t.sysS).toFixed(2),
    peakRssMiB: +(t.maxRssBytes / 1048576).toFixed(1),
    exitCode: t.exitCode,
    loadBefore: loadBefore.map((x) => +x.toFixed(2)),
  };
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
  /** pilotlight: the prune's --json report without its request counts (steps, packs, repacks). */
  pruneReport?: unknown;
  /** restic: the summary its prune printed. */
  pruneOutput?: string;
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
async function finishNow(work: string, img: string, withRestic: boolean, schedule: string, size: number, change: number) {
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
  const hist = { count: plSnaps.length, size, change, schedule, plHistory: NaN, rsHistory: NaN, withRestic, stoppedEarly: true };
  await fsp.writeFile(path.join(work, 'history.json'), JSON.stringify(hist));
  return hist;
}

function resticTime(d: Date): string {
  return d.toISOString().replace('T', ' ').slice(0, 19);
}

async function main(): Promise<void> {
  const { flags, on } = parseArgs(process.argv.slice(2), ['no-restic', 'finish-now', 'history-only']);
  if (flags.schedule && (flags.snapshots || flags['interval-min'])) throw new Error('--schedule and --snapshots/--interval-min conflict');
  const schedule = flags.schedule ?? (flags.snapshots || flags['interval-min'] ? `${Number(flags.snapshots ?? 330)}x${Number(flags['interval-min'] ?? 135)}` : DEFAULT_SCHEDULE);
  let count = parseSchedule(schedule).reduce((n, s) => n + s.count, 0);
  const size = parseSize(flags.size ?? '1G');
  const change = Number(flags.change ?? 0.01);
  const name = flags.name ?? 'retention';
  const work = flags.work ?? (await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-retention-')));
  const withRestic = !on.has('no-restic') && which('restic') !== undefined;
  await fsp.mkdir(work, { recursive: true });
  log(`work dir ${work}; ${count} snapshots of ${fmtSize(size)}, ${(change * 100).toFixed(1)}% change each, newest first: ${describeSchedule(schedule)}`);

  const img = path.join(work, 'src', 'disk.img');
  const marker = path.join(work, 'history.json');
  type Hist = { count: number; size: number; change: number; schedule?: string; intervalMin?: number; plHistory: number; rsHistory: number; withRestic: boolean; end?: number };
  let hist = await fsp.readFile(marker, 'utf8').then((t) => JSON.parse(t) as Hist, () => null);
  // a marker written before --schedule existed: one segment
  if (hist && !hist.schedule && hist.intervalMin) hist.schedule = `${hist.count}x${hist.intervalMin}`;
  const genRepo = path.join(work, 'pl-repo');
  const genCache = path.join(work, 'pl-cache');
  const rsGenRepo = path.join(work, 'restic-repo');
  let plHistory = hist ? (hist.plHistory ?? NaN) : 0;
  let rsHistory = hist ? (hist.rsHistory ?? NaN) : 0;
  if (!hist && on.has('finish-now')) hist = await finishNow(work, img, withRestic, schedule, size, change);
  if (hist && on.has('finish-now')) {
    count = hist.count;
    plHistory = hist.plHistory ?? NaN;
    rsHistory = hist.rsHistory ?? NaN;
  }
  if (hist && ((hist.count !== count && !on.has('finish-now')) || hist.size !== size || hist.change !== change || hist.schedule !== schedule || hist.withRestic !== withRestic)) {
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
  const times = scheduleTimes(schedule, end);
  const changes = path.join(work, 'changes.txt');
  for (let i = 0; i < count; i++) {
    const takenAt = times[i]!;
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
  await fsp.writeFile(marker, JSON.stringify({ count, size, change, schedule, plHistory, rsHistory, withRestic, end }));
  }
  if (on.has('history-only')) {
    log(`history written in ${work}: run again with the same --work and flags to measure`);
    return;
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
    const fLoad = os.loadavg();
    const f = await cli(['forget', '--repo', plRepo, '--vm', 'vm1', ...POLICY, '--tz', 'UTC', '--json']);
    if (f.exitCode !== 0) throw new Error(`pilotlight forget failed: ${f.stderr}`);
    const fr = JSON.parse(f.stdout);
    const afterForget = await dirBytes(plRepo);
    const help = await cli(['prune', '--help']);
    let prune: Phase | null = null;
    let afterPrune: number | null = null;
    let pruneReq: unknown;
    let pruneNote: string | undefined;
    let pruneReport: unknown;
    if (help.exitCode === 0 && /Usage: pilotlight prune/.test(help.stdout)) {
      const pLoad = os.loadavg();
      const p = await cli(['prune', '--repo', plRepo, '--json']);
      prune = phase(p, pLoad);
      if (p.exitCode !== 0) pruneNote = `prune failed: ${p.stderr.trim().split('\n').pop()}`;
      else {
        const { requests, ...rest } = JSON.parse(p.stdout);
        pruneReq = requests;
        pruneReport = rest;
      }
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
      forget: phase(f, fLoad),
      prune,
      ...(pruneNote ? { pruneNote } : {}),
      requests: { forget: fr.requests, ...(pruneReq ? { prune: pruneReq } : {}) },
      ...(pruneReport ? { pruneReport } : {}),
      keptTimes: v.snapshots.filter((d: { outcome: string }) => d.outcome === 'keep').map((d: { time: string }) => new Date(d.time).toISOString().slice(0, 19)).sort(),
    });
  }

  if (withRestic) {
    const before = await dirBytes(rsRepo);
    const fLoad = os.loadavg();
    const f = await timed('restic', ['forget', '--host', 'vm1', ...POLICY, '--json'], { env: rsMeasureEnv });
    if (f.exitCode !== 0) throw new Error(`restic forget failed: ${f.stderr}`);
    const groups = JSON.parse(f.stdout) as { keep: { time: string }[]; remove: { time: string }[] | null }[];
    const keep = groups.flatMap((g) => g.keep);
    const afterForget = await dirBytes(rsRepo);
    const pLoad = os.loadavg();
    const p = await timed('restic', ['prune'], { env: rsMeasureEnv, stdoutFile: path.join(work, 'restic-prune.txt') });
    if (p.exitCode !== 0) throw new Error(`restic prune failed: ${p.stderr}`);
    const pruneOutput = await fsp.readFile(path.join(work, 'restic-prune.txt'), 'utf8');
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
      forget: phase(f, fLoad),
      prune: phase(p, pLoad),
      pruneOutput,
      keptTimes: keep.map((k) => new Date(k.time).toISOString().slice(0, 19)).sort(),
    });
  }

  const pl = results[0]!;
  const rs = results[1];
  const times0 = scheduleTimes(schedule, 0).slice(0, count);
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
      schedule: `${schedule} (count x minutes, newest first: ${describeSchedule(schedule)})`,
      spanDays: +((times0[count - 1]!.getTime() - times0[0]!.getTime()) / 86_400_000).toFixed(1),
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
    const ph = (x: Phase | null) => (x ? `${x.wallS} s (${x.cpuS} s CPU) / ${x.peakRssMiB} MiB` : 'n/a');
    return `| ${r.tool} | ${r.snapshotsBefore} -> ${r.snapshotsKept} | ${ph(r.forget)} | ${ph(r.prune)} | ${mib(r.repoBytesBefore)} | ${mib(r.repoBytesAfterPrune)} | ${mib(r.bytesFreed)} | ${reqText(r)} |`;
  };
  const loads = results.flatMap((r) => [
    `${r.tool} forget ${r.forget.loadBefore.join(' / ')}`,
    ...(r.prune ? [`${r.tool} prune ${r.prune.loadBefore.join(' / ')}`] : []),
  ]);
  const steps = (pl.pruneReport as { stepMs?: Record<string, number>; durationMs?: number } | undefined)?.stepMs;
  let stepText = '';
  if (steps) {
    let prev = 0;
    const parts: string[] = [];
    for (const [k, v] of Object.entries(steps)) {
      parts.push(`${k} ${((v - prev) / 1000).toFixed(1)} s`);
      prev = v;
    }
    stepText = `pilotlight's prune by protocol step (time from the previous step, in-process; start-up and key derivation come before): ${parts.join(', ')}.`;
  }
  const md = [
    `# Retention: forget + prune, ${count} snapshots of a ${fmtSize(size)} disk`,
    '',
    `${out.date.slice(0, 16)} UTC, ${out.machine}, Node ${out.node}. Snapshots, newest first: ${describeSchedule(schedule)} (${out.history.spanDays} days, synthetic consistency times), ` +
      `${(change * 100).toFixed(0)}% of the disk rewritten (random data) before each. Policy \`${out.policy}\`.`,
    ...(schedule === DEFAULT_SCHEDULE
      ? [
          '',
          'Why this history: it is what a repository holds when backups run every 15 minutes and this same policy last ran two days ago ' +
            '(15-minute snapshots for the last three days, the hourly ones it kept for the six days before, its dailies before that). ' +
            'The policy then thins at every tier: 15-minute to hourly beyond the last day, hourly to daily beyond a week, dailies beyond 31 days. ' +
            '(At one snapshot every 135 minutes, --keep-hourly 168 keeps the newest 168 snapshots, 15.75 days, and only the daily rule thins; ' +
            'a month of 15-minute snapshots never thinned would be 2,880 restic backups of 1 GiB.)',
        ]
      : []),
    '',
    '| tool | snapshots | forget (wall (CPU) / peak RSS) | prune (wall (CPU) / peak RSS) | repository before | after prune | freed | store requests (forget; prune) |',
    '|---|---|---|---|---|---|---|---|',
    ...results.map(row),
    '',
    `Load average (1 / 5 / 15 min, 2 cores, shared) just before each measured step: ${loads.join('; ')}.`,
    ...(stepText ? [stepText] : []),
    sameKept === null ? '' : `Same snapshots kept by both tools: ${sameKept ? 'yes' : 'NO'} (compared by consistency time).`,
    ...results.filter((r) => r.pruneNote).map((r) => `${r.tool}: ${r.pruneNote}.`),
    (out.history as { stoppedEarly?: boolean }).stoppedEarly
      ? `The history run was stopped early (the shared machine was too loaded to write all of it in time): ${count} snapshots were measured.`
      : '',
    `History written in ${pl.historySeconds ?? 'n/a'} s (pilotlight, in-process, change lists)${rs ? ` and ${rs.historySeconds ?? 'n/a'} s (restic, re-reading the image)` : ''}; not part of the comparison.`,
    '',
  ].join('\n');
  // notes written by hand under '## Notes' survive a re-run
  const oldMd = await fsp.readFile(path.join(dir, `${name}.md`), 'utf8').catch(() => '');
  const notesAt = oldMd.indexOf('\n## Notes');
  const notes = notesAt >= 0 ? oldMd.slice(notesAt) : '';
  await fsp.writeFile(path.join(dir, `${name}.md`), md + notes);
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
