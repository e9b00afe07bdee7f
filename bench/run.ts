/**
 * `npm run bench` — pilotlight on a realistic VM disk series, with restic and borg side by side.
 *
 *   npm run bench -- [--peers] [--size 4G] [--states 4] [--reps 3] [--quick] [--rebuild] [--name NAME]
 *                    [--tools pilotlight,pilotlight-no-cbt,restic,borg] [--publish]
 *
 * One script, one series (bench/make-series), one machine state:
 * - each tool backs up web1's states in order (first backup, then incrementals: pilotlight with
 *   the CBT change lists and, as `pilotlight-no-cbt`, without them; restic and borg re-read the
 *   image), then restores the last state; repository size after each step; wall time, CPU time
 *   and peak RSS of every process from `/usr/bin/time -v`;
 * - tools run interleaved step by step (order rotated each repetition), and pilotlight's
 *   speed-up over a peer is computed per repetition before taking the median, so noise from
 *   other work on this shared machine mostly cancels;
 * - dedup: over the series, and across two VMs cloned from one template (web1-0 + web2-0);
 * - the machine's limits on the same data in the same run (bench/lib/stages.ts).
 * Output: markdown on stdout (and bench/results/<name>.md), bench/results/<name>.json and .svg.
 * Benchmarks are not tests: nothing here asserts a time.
 */
import { promises as fsp, readFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { spawnSync } from 'node:child_process';
import { makeSeries, defaultSeriesDir, type SeriesState } from './make-series.js';
import { parseArgs, parseSize, sizeLabel, median, sh, shLoud, which, repoRoot, fmtSize, timedOk, MiB } from './lib/util.js';
import { Pilotlight, Restic, Borg, pilotlightAvailable, toolVersion, type Tool } from './lib/tools.js';
import { denseSample, measureStages, type StageResult } from './lib/stages.js';
import { quarterHourState } from './lib/quarter-hour.js';
import { markdown, svg, type Results, type StepResult, type Agg, type Sample } from './lib/report.js';

const root = repoRoot(import.meta.url);

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function aptInstall(pkgs: string[]): void {
  log(`installing ${pkgs.join(' ')} from Debian`);
  shLoud('apt-get', ['install', '-y', '-q', ...pkgs], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
}

function ensurePrograms(peers: boolean, notes: string[]): void {
  const need: string[] = [];
  if (!existsSync('/usr/bin/time')) need.push('time');
  if (peers) {
    if (!which('restic')) need.push('restic');
    if (!which('borg')) need.push('borgbackup');
    if (!which('b3sum')) need.push('b3sum');
  }
  if (need.length) {
    try { aptInstall(need); } catch (e) {
      try { sh('apt-get', ['update', '-q']); aptInstall(need); } catch {
        notes.push(`could not install ${need.join(' ')}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
  }
}

function aggregate(samples: Sample[], error?: string): Agg {
  return {
    samples,
    wallS: median(samples.map((s) => s.wallS)),
    cpuS: median(samples.map((s) => s.cpuS)),
    rssMB: median(samples.map((s) => s.rssMB)),
    repoBytes: median(samples.map((s) => s.repoBytes)),
    ...(error ? { error } : {}),
  };
}

function machine() {
  let osName: string = os.platform();
  try { osName = /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? osName; } catch { /* keep */ }
  return { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), os: osName };
}

async function main(): Promise<void> {
  const started = Date.now();
  const { flags, on } = parseArgs(process.argv.slice(2), ['peers', 'quick', 'rebuild', 'publish', 'help', 'skip-cross']);
  if (on.has('help')) {
    process.stdout.write('usage: npm run bench -- [--peers] [--size 4G] [--states 4] [--reps 3] [--quick] [--rebuild] [--name NAME] [--tools a,b] [--publish]\n');
    return;
  }
  if (flags.report) {
    // Re-render the markdown and SVG of an earlier run from its JSON.
    const r = JSON.parse(readFileSync(flags.report, 'utf8')) as Results;
    const base = flags.report.replace(/\.json$/, '');
    await fsp.writeFile(`${base}.svg`, svg(r));
    await fsp.writeFile(`${base}.md`, markdown(r));
    process.stdout.write(markdown(r));
    if (on.has('publish')) await publish(markdown(r), r.name);
    return;
  }
  const quick = on.has('quick');
  const peers = on.has('peers');
  const size = parseSize(flags.size ?? (quick ? '2G' : '4G'));
  const reps = Number(flags.reps ?? (quick ? 1 : 3));
  const nStates = Number(flags.states ?? 4);
  const name = flags.name ?? `debian-${sizeLabel(size)}${quick ? '-quick' : ''}`;
  const notes: string[] = [];

  ensurePrograms(peers, notes);
  const cacheDir = path.join(root, 'bench', 'cache');
  const series = await makeSeries({ size, states: nStates, cloneStates: 1, out: defaultSeriesDir(cacheDir, size), cacheDir, rebuild: on.has('rebuild') });
  const sdir = defaultSeriesDir(cacheDir, size);
  const web1States = series.states.filter((s) => s.vm === 'web1').sort((a, b) => a.index - b.index).slice(0, nStates);
  // and the 15-minute incremental: 40 scattered writes on top of the last state
  const web1 = [...web1States, quarterHourState(defaultSeriesDir(cacheDir, size), web1States[web1States.length - 1]!)];
  const web2 = series.states.find((s) => s.vm === 'web2' && s.index === 0);
  const img = (s: SeriesState) => path.join(sdir, s.image);

  let toolNames = ['pilotlight', 'pilotlight-no-cbt', ...(peers ? ['restic', 'borg-fixed64k', 'borg'] : [])];
  if (flags.tools) toolNames = flags.tools.split(',');
  if (!pilotlightAvailable(root)) {
    const had = toolNames.some((t) => t.startsWith('pilotlight'));
    toolNames = toolNames.filter((t) => !t.startsWith('pilotlight'));
    if (had) notes.push('pilotlight rows pending: dist/src/cli/main.js was not built when this ran');
  }
  if (peers) for (const [t, cmd] of [['restic', 'restic'], ['borg', 'borg'], ['borg-fixed64k', 'borg']]) {
    if (toolNames.includes(t) && !which(cmd)) { toolNames = toolNames.filter((x) => x !== t); notes.push(`${t} not installed: skipped`); }
  }
  log(`series ${sdir}: ${web1.map((s) => s.name).join(', ')}; tools: ${toolNames.join(', ')}; ${reps} repetition(s)`);

  const workRoot = path.join(cacheDir, 'work');
  const make = (t: string, dir: string): Tool => {
    switch (t) {
      case 'pilotlight': return new Pilotlight(t, root, dir, true);
      case 'pilotlight-no-cbt': return new Pilotlight(t, root, dir, false);
      case 'restic': return new Restic(dir);
      case 'borg': return new Borg(dir);
      case 'borg-fixed64k': return new Borg(dir, true);
      default: throw new Error(`unknown tool ${t}`);
    }
  };

  // samples[step][tool][rep]
  const samples: Sample[][][] = web1.map(() => toolNames.map(() => []));
  const restoreSamples: Sample[][] = toolNames.map(() => []);
  const verified: (boolean | undefined)[] = toolNames.map(() => undefined);
  const errors: (string | undefined)[] = toolNames.map(() => undefined);
  const stageRuns: StageResult[][] = [];
  let stageNotes: string[] = [];
  let settings: Record<string, string> = {};
  let plStats: Record<string, unknown> | undefined;
  const fixed = { nodeBare: [] as Sample[], startup: [] as Sample[], empty: [] as Sample[] };
  // The last (15-minute) state backed up a second time by the service, on a copy of the repository as it was before it.
  const serviceSamples: (Sample & { jobS: number })[] = [];
  const sample = path.join(sdir, 'web1-0.nonzero.bin');
  denseSample(img(web1[0]), sample);
  const inProcess = quick ? 256 * MiB : 1024 * MiB;
  const lastState = web1[web1.length - 1]!;
  const lastSample = path.join(sdir, `${lastState.name}.nonzero.bin`);
  const lastSampleBytes = denseSample(img(lastState), lastSample);
  const ddRuns: number[] = [];

  for (let rep = 0; rep < reps; rep++) {
    const repDir = path.join(workRoot, `rep${rep}`);
    await fsp.rm(repDir, { recursive: true, force: true });
    const tools = toolNames.map((t) => make(t, path.join(repDir, t)));
    settings = Object.fromEntries(tools.map((t) => [t.name, t.settings]));
    const alive = tools.map((_, k) => errors[k] === undefined);
    for (let k = 0; k < tools.length; k++) {
      if (!alive[k]) continue;
      try { await tools[k].init(); } catch (e) { alive[k] = false; errors[k] = `init: ${(e as Error).message}`; }
    }
    for (let i = 0; i < web1.length; i++) {
      const st = web1[i];
      const order = tools.map((_, k) => (k + rep + i) % tools.length);
      for (const k of order) {
        if (!alive[k]) continue;
        const step = { vm: 'web1', image: img(st), changes: st.changes ? path.join(sdir, st.changes) : undefined, first: i === 0, label: st.name };
        const viaService = tools[k] instanceof Pilotlight && tools[k].name === 'pilotlight' && i === web1.length - 1 && i > 0 && step.changes !== undefined;
        try {
          if (viaService) await (tools[k] as Pilotlight).forkForService();
          const r = await tools[k].backup(step);
          samples[i][k].push({ wallS: r.wallMs / 1000, cpuS: r.userS + r.sysS, rssMB: r.maxRssBytes / 1e6, repoBytes: await tools[k].repoBytes(), report: r.report });
          log(`rep ${rep + 1}/${reps} ${st.name} ${tools[k].name}: ${(r.wallMs / 1000).toFixed(2)} s, ${(r.maxRssBytes / 1e6).toFixed(0)} MB RSS, repo ${fmtSize(samples[i][k].at(-1)!.repoBytes)}`);
          if (viaService) {
            const v = await (tools[k] as Pilotlight).serviceIncremental(step);
            serviceSamples.push({ wallS: v.wallMs / 1000, cpuS: v.userS + v.sysS, rssMB: v.maxRssBytes / 1e6, repoBytes: 0, jobS: v.jobS, report: v.report });
            log(`rep ${rep + 1}/${reps} ${st.name} pilotlight service (run --once): job ${v.jobS.toFixed(2)} s, process ${(v.wallMs / 1000).toFixed(2)} s, ${(v.maxRssBytes / 1e6).toFixed(0)} MB RSS`);
          }
        } catch (e) {
          alive[k] = false;
          errors[k] = `${st.name}: ${(e as Error).message}`;
          log(`${tools[k].name} failed: ${errors[k]}`);
        }
      }
    }
    const last = web1[web1.length - 1];
    for (const k of tools.map((_, k) => (k + rep) % tools.length)) {
      if (!alive[k]) continue;
      const to = path.join(repDir, `restore-${tools[k].name}`);
      try {
        const { t, file } = await tools[k].restore('web1', to);
        restoreSamples[k].push({ wallS: t.wallMs / 1000, cpuS: t.userS + t.sysS, rssMB: t.maxRssBytes / 1e6, repoBytes: 0 });
        log(`rep ${rep + 1}/${reps} restore ${tools[k].name}: ${(t.wallMs / 1000).toFixed(2)} s`);
        if (rep === 0) {
          const same = spawnSync('cmp', ['-s', file, img(last)]).status === 0;
          verified[k] = same;
          if (!same) notes.push(`${tools[k].name}: the restored image differs from ${last.name}`);
        }
      } catch (e) {
        errors[k] = `restore: ${(e as Error).message}`;
        log(`${tools[k].name} restore failed: ${errors[k]}`);
      }
      await fsp.rm(to, { recursive: true, force: true });
    }
    // The machine's write rate for the same bytes: dd conv=fdatasync of the restored state's non-zero data.
    try {
      const ddOut = path.join(repDir, 'dd.out');
      const t = await timedOk('dd', [`if=${lastSample}`, `of=${ddOut}`, 'bs=4M', 'conv=fdatasync', 'status=none']);
      ddRuns.push(t.wallMs / 1000);
      await fsp.rm(ddOut, { force: true });
    } catch (e) { notes.push(`dd conv=fdatasync failed: ${(e as Error).message.split('\n')[0]}`); }
    if (rep === 0) {
      const pl = tools.find((t) => t.name === 'pilotlight');
      if (pl instanceof Pilotlight) plStats = await pl.stats();
      // Local caches are not counted in repository sizes; say how big they are.
      for (const t of tools) notes.push(`${t.name}: local cache outside the repository after the series: ${fmtSize(await t.cacheBytes())}`);
    }
    // Fixed costs of pilotlight: start-up, and a backup with nothing to read.
    const plk = tools.findIndex((t) => t.name === 'pilotlight');
    const pl = tools[plk];
    if (pl instanceof Pilotlight && alive[plk]) {
      try {
        const toS = (t: { wallMs: number; userS: number; sysS: number; maxRssBytes: number }): Sample =>
          ({ wallS: t.wallMs / 1000, cpuS: t.userS + t.sysS, rssMB: t.maxRssBytes / 1e6, repoBytes: 0 });
        fixed.nodeBare.push(toS(await timedOk(process.execPath, ['-e', '0'])));
        fixed.startup.push(toS(await pl.startup()));
        fixed.empty.push(toS(await pl.emptyIncremental({ vm: 'web1', image: img(last), first: false, label: `${last.name} again` })));
      } catch (e) { notes.push(`pilotlight fixed-cost runs failed: ${(e as Error).message.split('\n')[0]}`); }
    }
    log(`rep ${rep + 1}/${reps}: machine limits`);
    const st = await measureStages(root, sample, inProcess);
    stageRuns.push(st.results);
    stageNotes = st.notes;
    await fsp.rm(repDir, { recursive: true, force: true });
  }

  // Two VMs from one template, once (sizes do not vary between repetitions).
  const cross: Results['dedup']['crossVm'] = {};
  if (web2 && !on.has('skip-cross')) {
    const dir = path.join(workRoot, 'cross');
    await fsp.rm(dir, { recursive: true, force: true });
    for (let k = 0; k < toolNames.length; k++) {
      const t = make(toolNames[k], path.join(dir, toolNames[k]));
      if (toolNames[k] === 'pilotlight-no-cbt') continue; // same chunks as pilotlight for first backups
      try {
        await t.init();
        await t.backup({ vm: 'web1', image: img(web1[0]), first: true, label: web1[0].name });
        const a = await t.repoBytes();
        await t.backup({ vm: 'web2', image: img(web2), first: true, label: web2.name });
        const b = await t.repoBytes();
        const logical = web1[0].allocatedBytes + web2.allocatedBytes;
        cross[toolNames[k]] = { logicalBytes: logical, storedBytes: b, ratio: logical / b, secondVmAddedBytes: b - a };
        log(`two VMs ${toolNames[k]}: ${fmtSize(b)} stored, web2 added ${fmtSize(b - a)}`);
      } catch (e) {
        notes.push(`${toolNames[k]} two-VM run failed: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    await fsp.rm(dir, { recursive: true, force: true });
  }

  // Aggregate.
  const speedups = (per: Sample[][], base = 'pilotlight'): Record<string, number> => {
    const out: Record<string, number> = {};
    const plIdx = toolNames.indexOf(base);
    if (plIdx < 0) return out;
    toolNames.forEach((t, k) => {
      if (k === plIdx) return;
      const n = Math.min(per[k].length, per[plIdx].length);
      out[t] = median(Array.from({ length: n }, (_, r) => per[k][r].wallS / per[plIdx][r].wallS));
    });
    return out;
  };
  /** The service's job time for the last state, with its speed-ups over the peers' CLI runs of the same state, per repetition. */
  const serviceResult = (): NonNullable<Results['pilotlightService']> => {
    const jobs = serviceSamples.map((x) => ({ ...x, wallS: x.jobS }));
    const withJob = toolNames.map((t, k) => (t === 'pilotlight' ? jobs : samples[web1.length - 1]![k]!));
    return { state: web1[web1.length - 1]!.name, job: aggregate(jobs), process: aggregate(serviceSamples), speedup: speedups(withJob) };
  };
  const steps: StepResult[] = web1.map((st, i) => ({
    label: st.name,
    vm: 'web1',
    kind: i === 0 ? 'first' : 'incremental',
    allocatedBytes: st.allocatedBytes,
    nonZeroBytes: st.nonZeroBytes,
    ...(st.changedBytes !== undefined ? { changedBytes: st.changedBytes } : {}),
    tools: Object.fromEntries(toolNames.map((t, k) => [t, aggregate(samples[i][k], samples[i][k].length < reps ? errors[k] : undefined)]).filter(([, a]) => (a as Agg).samples.length > 0)),
    speedup: speedups(samples[i]),
    speedupNoCbt: speedups(samples[i], 'pilotlight-no-cbt'),
  }));
  const seriesDedup: Results['dedup']['series'] = {};
  const logicalSeries = web1.reduce((a, s) => a + s.allocatedBytes, 0);
  toolNames.forEach((t, k) => {
    const lastS = samples[web1.length - 1][k];
    if (lastS.length) {
      const stored = median(lastS.map((s) => s.repoBytes));
      seriesDedup[t] = { logicalBytes: logicalSeries, storedBytes: stored, ratio: logicalSeries / stored };
    }
  });
  // Stage medians by (stage, how).
  const stageMed: StageResult[] = (stageRuns[0] ?? []).map((s0) => {
    const all = stageRuns.map((run) => run.find((x) => x.stage === s0.stage && x.how === s0.how)).filter((x): x is StageResult => !!x);
    const sec = median(all.map((x) => x.seconds));
    return { ...s0, seconds: sec, mbPerS: s0.bytes / 1e6 / sec };
  });
  errors.forEach((e, k) => { if (e) notes.push(`${toolNames[k]} failed: ${e.split('\n').slice(0, 3).join(' / ')}`); });

  let plVersion = 'not built';
  try {
    plVersion = `${JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version} (${sh('git', ['-C', root, 'rev-parse', '--short', 'HEAD']).trim()})`;
  } catch { /* not a checkout */ }
  const versions: Record<string, string> = { node: process.version };
  if (toolNames.some((t) => t.startsWith('pilotlight'))) versions.pilotlight = plVersion;
  if (toolNames.includes('restic')) versions.restic = toolVersion('restic', ['version']).replace(/^restic\s+/, '').split(' ')[0];
  if (toolNames.some((t) => t.startsWith('borg'))) versions.borg = toolVersion('borg', ['--version']).replace(/^borg\s+/, '');
  if (which('b3sum')) versions.b3sum = toolVersion('b3sum', ['--version']).replace(/^b3sum\s+/, '');
  if (which('zstd')) versions.zstd = (/v([\d.]+)/.exec(toolVersion('zstd', ['--version'])) ?? ['', '?'])[1];
  if (which('lz4')) versions.lz4 = (/v([\d.]+)/.exec(toolVersion('lz4', ['--version'])) ?? ['', '?'])[1];

  const last = web1[web1.length - 1];
  const results: Results = {
    name,
    date: new Date().toISOString(),
    machine: machine(),
    versions,
    settings,
    reps,
    series: {
      size,
      buildSeconds: series.buildSeconds,
      states: [...web1, ...(web2 ? [web2] : [])].map((s) => ({ name: s.name, allocatedBytes: s.allocatedBytes, nonZeroBytes: s.nonZeroBytes, changedBytes: s.changedBytes, steps: s.steps })),
    },
    tools: toolNames,
    steps,
    restore: {
      label: last.name,
      nonZeroBytes: last.nonZeroBytes,
      tools: Object.fromEntries(toolNames.map((t, k) => [t, { ...aggregate(restoreSamples[k]), ...(verified[k] !== undefined ? { verified: verified[k] } : {}) }]).filter(([, a]) => (a as Agg).samples.length > 0)),
      speedup: speedups(restoreSamples),
    },
    dedup: { series: seriesDedup, crossVm: cross },
    stages: { median: stageMed, notes: stageNotes },
    ...(plStats ? { pilotlightStats: plStats } : {}),
    ...(serviceSamples.length ? { pilotlightService: serviceResult() } : {}),
    ...(fixed.startup.length ? { pilotlightFixed: { nodeBare: aggregate(fixed.nodeBare), startup: aggregate(fixed.startup), emptyIncremental: aggregate(fixed.empty) } } : {}),
    ...(ddRuns.length ? { ddFdatasync: { bytes: lastSampleBytes, wallS: median(ddRuns), mbPerS: lastSampleBytes / 1e6 / median(ddRuns) } } : {}),
    notes,
    runSeconds: Math.round((Date.now() - started) / 1000),
  };
  const outDir = path.join(root, 'bench', 'results');
  await fsp.mkdir(outDir, { recursive: true });
  const md = markdown(results);
  await fsp.writeFile(path.join(outDir, `${name}.json`), JSON.stringify(results, null, 2) + '\n');
  await fsp.writeFile(path.join(outDir, `${name}.svg`), svg(results));
  await fsp.writeFile(path.join(outDir, `${name}.md`), md);
  process.stdout.write(md);
  if (on.has('publish')) await publish(md, name);
  log(`wrote bench/results/${name}.{json,svg,md} in ${results.runSeconds} s`);
}

/** Replaces the results section of docs/BENCHMARKS.md with a run's report. */
async function publish(md: string, name: string): Promise<void> {
  const doc = path.join(root, 'docs', 'BENCHMARKS.md');
  const text = readFileSync(doc, 'utf8');
  const a = text.indexOf('<!-- bench-results -->');
  const b = text.indexOf('<!-- /bench-results -->');
  if (a < 0 || b < a) { log('docs/BENCHMARKS.md has no <!-- bench-results --> markers: not updated'); return; }
  const chart = `![repository size and backup time per snapshot](../bench/results/${name}.svg)\n\n`;
  await fsp.writeFile(doc, text.slice(0, a) + '<!-- bench-results -->\n' + md.replace(/^### /, '### Run ') + '\n' + chart + text.slice(b));
  log('updated docs/BENCHMARKS.md');
}

main().catch((e) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.stack ?? e.message : e}\n`);
  process.exit(1);
});
