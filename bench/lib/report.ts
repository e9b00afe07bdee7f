/**
 * Turns the benchmark results into a markdown report and a hand-written SVG chart.
 */
import type { StageResult } from './stages.js';

export interface Sample {
  wallS: number;
  cpuS: number;
  rssMB: number;
  repoBytes: number;
  report?: Record<string, unknown>;
}

export interface Agg {
  samples: Sample[];
  wallS: number;
  cpuS: number;
  rssMB: number;
  repoBytes: number;
  error?: string;
}

export interface StepResult {
  label: string;
  vm: string;
  kind: 'first' | 'incremental';
  allocatedBytes: number;
  nonZeroBytes: number;
  changedBytes?: number;
  tools: Record<string, Agg>;
  /** Median over repetitions of peer time / pilotlight time, computed per repetition. */
  speedup: Record<string, number>;
  /** The same for pilotlight without change lists. */
  speedupNoCbt?: Record<string, number>;
}

export interface Results {
  name: string;
  date: string;
  machine: { cpu: string; cores: number; memGiB: number; kernel: string; os: string };
  versions: Record<string, string>;
  settings: Record<string, string>;
  reps: number;
  series: { size: number; states: { name: string; allocatedBytes: number; nonZeroBytes: number; changedBytes?: number; steps: string[] }[]; buildSeconds: number };
  tools: string[];
  steps: StepResult[];
  restore: { label: string; nonZeroBytes: number; tools: Record<string, Agg & { verified?: boolean }>; speedup: Record<string, number> };
  dedup: {
    series: Record<string, { logicalBytes: number; storedBytes: number; ratio: number }>;
    crossVm: Record<string, { logicalBytes: number; storedBytes: number; ratio: number; secondVmAddedBytes: number }>;
  };
  stages: { median: StageResult[]; notes: string[] };
  pilotlightStats?: Record<string, unknown>;
  /** `node -e 0`, `pilotlight --help`, and a backup with an empty change list. */
  pilotlightFixed?: { nodeBare: Agg; startup: Agg; emptyIncremental: Agg };
  /**
   * The last state's incremental run a second time by the service (`run --once`, on a copy
   * of the repository as it was before the CLI run): `job` is the job time the service
   * logs, `process` the whole process (start-up, key derivation, cache open included).
   */
  pilotlightService?: { state: string; job: Agg; process: Agg; speedup: Record<string, number> };
  /** `dd conv=fdatasync` of the restored state's non-zero bytes into a new file, in the same run (median). */
  ddFdatasync?: { bytes: number; wallS: number; mbPerS: number };
  notes: string[];
  runSeconds: number;
}

const mbs = (b: number) => (b / 1e6).toFixed(0);
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '–');
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : '–');
/** Median wall time, with the range over repetitions when there are several. */
const wall = (a: Agg) => {
  if (a.error) return 'failed';
  const xs = a.samples.map((x) => x.wallS);
  return xs.length > 1 ? `${f1(a.wallS)} (${f1(Math.min(...xs))}–${f1(Math.max(...xs))})` : f1(a.wallS);
};
/** Peer time / pilotlight time, in words. */
const speed = (x: number | undefined) =>
  x === undefined || !Number.isFinite(x) ? '–' : x >= 1 ? `${x.toFixed(1)}x faster` : `${(1 / x).toFixed(1)}x slower`;

export function markdown(r: Results): string {
  const L: string[] = [];
  const peers = r.tools.filter((t) => !t.startsWith('pilotlight'));
  L.push(`### ${r.name}: ${r.date.slice(0, 16).replace('T', ' ')} UTC`);
  L.push('');
  L.push(`Machine: ${r.machine.cpu}, ${r.machine.cores} cores, ${r.machine.memGiB} GiB RAM, ${r.machine.os}, Linux ${r.machine.kernel}. ` +
    `Versions: ${Object.entries(r.versions).map(([k, v]) => `${k} ${v}`).join(', ')}. ` +
    `${r.reps} repetition${r.reps > 1 ? 's' : ''}; every figure is the median; speed-ups are computed per repetition (peer time / pilotlight time) and then the median taken. ` +
    `Images in the page cache (warm) for every tool.`);
  L.push('');
  L.push(`Series: ${(r.series.size / 2 ** 30).toFixed(0)} GiB sparse raw disks, ext4, Debian from debootstrap; each state loop-mounted and changed in place.`);
  L.push('');
  L.push('| state | allocated MB | non-zero MB | changed since previous, MB | what changed |');
  L.push('|---|---:|---:|---:|---|');
  for (const s of r.series.states) {
    L.push(`| ${s.name} | ${mbs(s.allocatedBytes)} | ${mbs(s.nonZeroBytes)} | ${s.changedBytes !== undefined ? mbs(s.changedBytes) : '–'} | ${s.steps.join('; ')} |`);
  }
  L.push('');
  L.push(...issue12(r));
  L.push('**Backups** (time = wall clock of the whole command, start-up included; read MB = bytes the tool read from the image: pilotlight says so in its report, restic and borg read the whole file, holes included; image MB/s = non-zero MB of the image protected / time; repo MB = bytes the repository holds after the step)');
  L.push('');
  const spHead = peers.map((p) => `vs ${p}`);
  L.push(`| snapshot | tool | time s (range) | CPU s | peak RSS MB | read MB | image MB/s | repo MB | ${spHead.join(' | ')} |`);
  L.push(`|---|---|---:|---:|---:|---:|---:|---:|${peers.map(() => '---:').join('|')}${peers.length ? '|' : ''}`);
  for (const st of r.steps) {
    for (const t of r.tools) {
      const a = st.tools[t];
      if (!a) continue;
      const sp = t === 'pilotlight' ? peers.map((p) => speed(st.speedup[p]))
        : t === 'pilotlight-no-cbt' && st.speedupNoCbt ? peers.map((p) => speed(st.speedupNoCbt?.[p])) : peers.map(() => '');
      const kind = st.kind === 'first' ? 'first' : `incr., ${mbs(st.changedBytes ?? 0)} MB changed`;
      const scanned = a.samples[0]?.report?.bytesScanned;
      const read = typeof scanned === 'number' ? mbs(scanned) : t.startsWith('pilotlight') ? '?' : `${mbs(r.series.size)} (all)`;
      L.push(`| ${st.label} (${kind}) | ${t} | ${wall(a)} | ${f1(a.cpuS)} | ${a.rssMB.toFixed(0)} | ${read} | ${(st.nonZeroBytes / 1e6 / a.wallS).toFixed(0)} | ${mbs(a.repoBytes)} | ${sp.join(' | ')} |`);
    }
  }
  L.push('');
  L.push(`**Restore** of ${r.restore.label} (MB/s = non-zero MB / time)`);
  L.push('');
  L.push(`| tool | time s (range) | CPU s | peak RSS MB | MB/s | identical to the image | ${peers.map((p) => `pilotlight vs ${p}`).join(' | ')} |`);
  L.push(`|---|---:|---:|---:|---:|---|${peers.map(() => '---:').join('|')}${peers.length ? '|' : ''}`);
  for (const t of r.tools) {
    const a = r.restore.tools[t];
    if (!a) continue;
    const sp = t === 'pilotlight' ? peers.map((p) => speed(r.restore.speedup[p])) : peers.map(() => '');
    L.push(`| ${t} | ${wall(a)} | ${f1(a.cpuS)} | ${a.rssMB.toFixed(0)} | ${(r.restore.nonZeroBytes / 1e6 / a.wallS).toFixed(0)} | ${a.verified === undefined ? 'not checked' : a.verified ? 'yes (cmp)' : '**NO**'} | ${sp.join(' | ')} |`);
  }
  L.push('');
  L.push('**Storage and dedup** (dedup ratio = allocated bytes of the images protected / bytes the repository holds)');
  L.push('');
  L.push('| tool | repo after the series, MB | series ratio | 2 VMs from one template: repo MB | second VM added MB | 2-VM ratio |');
  L.push('|---|---:|---:|---:|---:|---:|');
  for (const t of r.tools) {
    const s = r.dedup.series[t];
    const c = r.dedup.crossVm[t];
    if (!s && !c) continue;
    L.push(`| ${t} | ${s ? mbs(s.storedBytes) : '–'} | ${s ? f2(s.ratio) : '–'} | ${c ? mbs(c.storedBytes) : '–'} | ${c ? mbs(c.secondVmAddedBytes) : '–'} | ${c ? f2(c.ratio) : '–'} |`);
  }
  L.push('');
  L.push('**Machine limits in the same run** (input: the non-zero 64 KiB blocks of the first image, from the page cache)');
  L.push('');
  L.push('| stage | how | threads | MB/s | note |');
  L.push('|---|---|---:|---:|---|');
  for (const s of r.stages.median) L.push(`| ${s.stage} | ${s.how} | ${s.threads} | ${s.mbPerS.toFixed(0)} | ${s.note ?? ''} |`);
  const first = r.steps[0];
  if (first?.tools.pilotlight && !first.tools.pilotlight.error) {
    L.push(`| full pipeline | pilotlight first backup (read, hash, compress, encrypt, pack, index) | all | ${(first.nonZeroBytes / 1e6 / first.tools.pilotlight.wallS).toFixed(0)} | wall clock of the command, start-up included |`);
  }
  L.push('');
  L.push(...timeBudget(r));
  L.push(...fixedCosts(r));
  L.push(...targets(r));
  const ps = r.pilotlightStats;
  if (ps && typeof ps.dedupRatio === 'number' && typeof ps.compressionRatio === 'number') {
    L.push(`pilotlight's own \`stats\` after the series: ${ps.snapshots} snapshots, ${mbs(Number(ps.logicalBytes))} MB logical (non-zero chunks referenced), ` +
      `${ps.uniqueChunks} unique chunks, dedup ${f2(ps.dedupRatio)}x, compression ${f2(ps.compressionRatio)}x, ${mbs(Number(ps.storedBytes))} MB stored.`);
    L.push('');
  }
  L.push('Settings: ' + Object.entries(r.settings).map(([k, v]) => `${k}: ${v}`).join('; ') + '.');
  for (const n of [...r.notes, ...r.stages.notes]) L.push(`- ${n}`);
  L.push('');
  return L.join('\n');
}

const COLORS: Record<string, string> = {
  pilotlight: '#d9480f',
  'pilotlight-no-cbt': '#f59f00',
  restic: '#1971c2',
  borg: '#2f9e44',
};

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Two panels: repository size after each snapshot (lines), backup time per snapshot (bars). */
export function svg(r: Results): string {
  const W = 960;
  const H = 400;
  const pw = 380;
  const ph = 250;
  const top = 70;
  const panels = [60, 560];
  const labels = r.steps.map((s) => s.label);
  const tools = r.tools.filter((t) => r.steps.some((s) => s.tools[t] && !s.tools[t].error));
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`);
  out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
  out.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${esc(`${r.name}: pilotlight vs peers, ${r.date.slice(0, 10)} (median of ${r.reps})`)}</text>`);

  const axes = (x0: number, title: string, max: number, unit: string) => {
    out.push(`<text x="${x0 + pw / 2}" y="${top - 14}" text-anchor="middle" font-size="13" font-weight="bold">${esc(title)}</text>`);
    out.push(`<line x1="${x0}" y1="${top + ph}" x2="${x0 + pw}" y2="${top + ph}" stroke="#333"/>`);
    out.push(`<line x1="${x0}" y1="${top}" x2="${x0}" y2="${top + ph}" stroke="#333"/>`);
    for (let i = 0; i <= 5; i++) {
      const v = (max * i) / 5;
      const y = top + ph - (ph * i) / 5;
      out.push(`<line x1="${x0}" y1="${y}" x2="${x0 + pw}" y2="${y}" stroke="#e9ecef"/>`);
      out.push(`<text x="${x0 - 6}" y="${y + 4}" text-anchor="end" fill="#495057">${Number.isInteger(max / 5) || v >= 100 ? v.toFixed(0) : v.toFixed(1)}</text>`);
    }
    out.push(`<text transform="translate(${x0 - 42},${top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#495057">${esc(unit)}</text>`);
    labels.forEach((l, i) => {
      const x = x0 + (pw * (i + 0.5)) / labels.length;
      out.push(`<text x="${x}" y="${top + ph + 18}" text-anchor="middle" fill="#495057">${esc(l)}</text>`);
    });
  };

  // Left: repository size.
  const sizeMax = niceMax(Math.max(...r.steps.flatMap((s) => tools.map((t) => (s.tools[t]?.repoBytes ?? 0) / 1e6))));
  axes(panels[0], 'Repository size after each snapshot', sizeMax, 'MB');
  for (const t of tools) {
    const pts = r.steps.map((s, i) => {
      const a = s.tools[t];
      if (!a || a.error) return undefined;
      const x = panels[0] + (pw * (i + 0.5)) / labels.length;
      const y = top + ph - (ph * a.repoBytes) / 1e6 / sizeMax;
      return [x, y] as const;
    }).filter((p): p is readonly [number, number] => p !== undefined);
    const dash = t === 'pilotlight-no-cbt' ? ' stroke-dasharray="7 5"' : '';
    out.push(`<polyline fill="none" stroke="${COLORS[t] ?? '#868e96'}" stroke-width="2.5"${dash} points="${pts.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`);
    for (const [x, y] of pts) out.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3.5" fill="${COLORS[t] ?? '#868e96'}"/>`);
  }

  // Right: backup time, grouped bars.
  const timeMax = niceMax(Math.max(...r.steps.flatMap((s) => tools.map((t) => s.tools[t]?.wallS ?? 0))));
  axes(panels[1], 'Backup time per snapshot', timeMax, 'seconds (wall clock)');
  const gw = pw / labels.length;
  const bw = (gw * 0.8) / Math.max(1, tools.length);
  r.steps.forEach((s, i) => {
    tools.forEach((t, k) => {
      const a = s.tools[t];
      if (!a || a.error) return;
      const h = (ph * a.wallS) / timeMax;
      const x = panels[1] + gw * i + gw * 0.1 + bw * k;
      out.push(`<rect x="${x.toFixed(1)}" y="${(top + ph - h).toFixed(1)}" width="${(bw - 1).toFixed(1)}" height="${h.toFixed(1)}" fill="${COLORS[t] ?? '#868e96'}"><title>${esc(`${t} ${s.label}: ${a.wallS.toFixed(2)} s`)}</title></rect>`);
    });
  });

  // Legend.
  let lx = 60;
  for (const t of tools) {
    const y = H - 22;
    const label = t === 'pilotlight' ? 'pilotlight (CBT change lists)' : t === 'pilotlight-no-cbt' ? 'pilotlight (no change lists)' : t;
    out.push(`<rect x="${lx}" y="${y - 10}" width="14" height="14" fill="${COLORS[t] ?? '#868e96'}"/>`);
    out.push(`<text x="${lx + 20}" y="${y + 2}">${esc(label)}</text>`);
    lx += 20 + label.length * 7 + 30;
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/**
 * Where the first backup's time goes: the CPU seconds each stage would need at the speed
 * measured in-process (one thread), next to the CPU seconds pilotlight really used.
 */
function timeBudget(r: Results): string[] {
  const a = r.steps[0]?.tools.pilotlight;
  if (!a || a.error) return [];
  const rep = a.samples[0]?.report ?? {};
  const scanned = typeof rep.bytesScanned === 'number' ? rep.bytesScanned : r.steps[0].allocatedBytes;
  const fresh = typeof rep.bytesNew === 'number' ? rep.bytesNew : r.steps[0].nonZeroBytes;
  const stored = typeof rep.bytesStored === 'number' ? rep.bytesStored : a.repoBytes;
  const find = (how: string) => r.stages.median.find((s) => s.how.startsWith(how));
  const parts: [string, number][] = [];
  const hash = find('pilotlight hasher (native');
  if (hash) parts.push(['BLAKE3', scanned / 1e6 / hash.mbPerS]);
  const z = find('pilotlight zstd');
  if (z) parts.push(['zstd -1', fresh / 1e6 / z.mbPerS]);
  const enc = find('pilotlight AES');
  if (enc) parts.push(['AES-GCM', stored / 1e6 / enc.mbPerS]);
  const pw = r.stages.median.find((s) => s.stage === 'pack write');
  if (pw) parts.push(['pack write', stored / 1e6 / pw.mbPerS]);
  const rd = find('cat');
  if (rd) parts.push(['read', scanned / 1e6 / rd.mbPerS]);
  if (!parts.length) return [];
  const sum = parts.reduce((x, [, v]) => x + v, 0);
  const restoreLine: string[] = [];
  const rs = r.restore.tools.pilotlight;
  const dz = find('pilotlight zstd (64');
  const op = find('pilotlight AES-256-GCM open');
  if (rs && !rs.error && hash && dz && op) {
    const nz = r.restore.nonZeroBytes / 1e6;
    const st = (r.dedup.series.pilotlight?.storedBytes ?? 0) / 1e6 * (r.restore.nonZeroBytes / Math.max(1, r.dedup.series.pilotlight?.logicalBytes ?? 1));
    const need = st / op.mbPerS + nz / dz.mbPerS + nz / hash.mbPerS;
    restoreLine.push(`Restore of ${r.restore.label}: ${f1(rs.cpuS)} CPU s in ${f1(rs.wallS)} s; decrypting (~${mbs(st * 1e6)} MB), decompressing and re-hashing ${mbs(nz * 1e6)} MB ` +
      `need about ${f2(need)} CPU s at the one-thread speeds above (ideal on ${r.machine.cores} cores: ${f2(need / r.machine.cores)} s), before writing the image.`, '');
  }
  return [
    `Where the first backup's time goes (pilotlight, medians): it used ${f1(a.cpuS)} CPU s in ${f1(a.wallS)} s of wall clock ` +
      `(${f2(a.cpuS / a.wallS)} of ${r.machine.cores} cores busy). At the one-thread speeds measured above, its stages need ` +
      parts.map(([k, v]) => `${k} ${f2(v)} s`).join(', ') + ` = ${f2(sum)} CPU s; the other ${f2(Math.max(0, a.cpuS - sum))} CPU s are start-up, ` +
      `index, manifests, copies and messages between threads. Ideal on ${r.machine.cores} cores: ${f2(sum / r.machine.cores)} s.`,
    '',
    ...restoreLine,
  ];
}

/** Least-squares line through (x, y) points: y = a + b x. */
function fit(pts: [number, number][]): { a: number; b: number } | undefined {
  if (pts.length < 2) return undefined;
  const n = pts.length;
  const mx = pts.reduce((s, [x]) => s + x, 0) / n;
  const my = pts.reduce((s, [, y]) => s + y, 0) / n;
  const sxx = pts.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  if (sxx === 0) return undefined;
  const b = pts.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0) / sxx;
  return { a: my - b * mx, b };
}

function fixedCosts(r: Results): string[] {
  const f = r.pilotlightFixed;
  const pts: [number, number][] = r.steps
    .filter((s) => s.kind === 'incremental' && s.tools.pilotlight && !s.tools.pilotlight.error)
    .map((s) => [(s.changedBytes ?? 0) / 1e6, s.tools.pilotlight.wallS]);
  if (f) pts.push([0, f.emptyIncremental.wallS]);
  const line = fit(pts);
  if (!f && !line) return [];
  const out: string[] = [];
  if (f) {
    out.push(`Fixed costs of pilotlight (medians): \`node -e 0\` ${f2(f.nodeBare.wallS)} s; \`pilotlight --help\` (loading the CLI) ${f2(f.startup.wallS)} s, ` +
      `${f1(f.startup.rssMB)} MB RSS; an incremental backup with an empty change list ${f2(f.emptyIncremental.wallS)} s, ${f2(f.emptyIncremental.cpuS)} CPU s, ${f1(f.emptyIncremental.rssMB)} MB RSS.`);
  }
  if (line && line.b > 0) {
    out.push(`Incrementals with change lists fit time ≈ ${f2(line.a)} s + changed MB / ${(1 / line.b).toFixed(0)} MB/s (least squares over ${pts.length} points${f ? ', the empty one included' : ''}).`);
  }
  out.push('');
  return out;
}

/**
 * The machine's ceiling for the per-chunk work of a first backup, from the
 * one-thread rates measured in the same run: cores / (1/hash + 1/zstd +
 * (stored/raw)/seal) MB/s of input (sealing runs on the compressed bytes).
 */
export function pipelineCeiling(r: Results): { mbPerS: number; parts: string } | undefined {
  const st = r.stages.median;
  const h = st.find((s) => s.stage === 'BLAKE3' && s.how.includes('native')) ?? st.find((s) => s.stage === 'BLAKE3' && s.how.includes('pilotlight'));
  const z = st.find((s) => s.stage === 'compress' && s.how.includes('pilotlight') && s.how.includes('zstd')) ?? st.find((s) => s.stage === 'compress' && s.how.includes('zstd'));
  const e = st.find((s) => s.stage === 'encrypt');
  if (!h || !z || !e) return undefined;
  const ratio = Number(/ratio ([\d.]+)/.exec(z.note ?? '')?.[1] ?? 1);
  const perByte = 1 / h.mbPerS + 1 / z.mbPerS + 1 / ratio / e.mbPerS;
  return {
    mbPerS: r.machine.cores / perByte,
    parts: `${r.machine.cores} cores / (1/${h.mbPerS.toFixed(0)} hash + 1/${z.mbPerS.toFixed(0)} zstd-1 + 1/${ratio.toFixed(2)}/${e.mbPerS.toFixed(0)} seal) MB/s`,
  };
}

/** Issue 12's table (pilotlight against borg fixed-64K and restic per step) and its goals, with CPU, RSS and the efficiency ratios. */
function issue12(r: Results): string[] {
  const borg = r.tools.includes('borg-fixed64k') ? 'borg-fixed64k' : r.tools.includes('borg') ? 'borg' : undefined;
  const restic = r.tools.includes('restic') ? 'restic' : undefined;
  const L: string[] = [];
  const ratio = (sp: number | undefined) => (sp !== undefined && Number.isFinite(sp) ? f2(1 / sp) : '');
  const cell = (a: Agg | undefined) => (a && !a.error ? wall(a) : '–');
  const rows: { step: string; pl?: Agg; b?: Agg; rs?: Agg; spB?: number; spR?: number; eff?: string }[] = r.steps.map((st, i) => ({
    step: i === 0 ? `first backup (${st.label})` : `incremental ${st.label}, ${mbs(st.changedBytes ?? 0)} MB changed (CBT list)`,
    pl: st.tools.pilotlight,
    b: borg ? st.tools[borg] : undefined,
    rs: restic ? st.tools[restic] : undefined,
    spB: borg ? st.speedup[borg] : undefined,
    spR: restic ? st.speedup[restic] : undefined,
  }));
  const svc = r.pilotlightService;
  if (svc) {
    rows.push({
      step: `the same incremental (${svc.state}) run by the service: job time (\`run --once\`; RSS of the whole process)`,
      pl: { ...svc.job, cpuS: NaN },
      b: borg ? r.steps[r.steps.length - 1]?.tools[borg] : undefined,
      rs: restic ? r.steps[r.steps.length - 1]?.tools[restic] : undefined,
      spB: borg ? svc.speedup[borg] : undefined,
      spR: restic ? svc.speedup[restic] : undefined,
    });
  }
  rows.push({
    step: `restore of ${r.restore.label} (${mbs(r.restore.nonZeroBytes)} MB non-zero)`,
    pl: r.restore.tools.pilotlight,
    b: borg ? r.restore.tools[borg] : undefined,
    rs: restic ? r.restore.tools[restic] : undefined,
    spB: borg ? r.restore.speedup[borg] : undefined,
    spR: restic ? r.restore.speedup[restic] : undefined,
  });
  L.push(`**Issue 12's table** (wall seconds, median and range; ratios = pilotlight time / peer time, per repetition, median; ${borg ?? 'borg'} = \`--chunker-params fixed,65536 --sparse\`)`);
  L.push('');
  // Efficiency: the first backup's MB/s over the pipeline ceiling, the restore's over dd conv=fdatasync, both of this run.
  const ceil = pipelineCeiling(r);
  const fb = r.steps[0]?.tools.pilotlight;
  if (ceil && fb && !fb.error) rows[0]!.eff = `${((r.steps[0]!.nonZeroBytes / 1e6 / fb.wallS / ceil.mbPerS) * 100).toFixed(0)}% of the pipeline ceiling (${ceil.mbPerS.toFixed(0)} MB/s)`;
  const rp = r.restore.tools.pilotlight;
  if (r.ddFdatasync && rp && !rp.error) rows[rows.length - 1]!.eff = `${((r.restore.nonZeroBytes / 1e6 / rp.wallS / r.ddFdatasync.mbPerS) * 100).toFixed(0)}% of dd conv=fdatasync (${r.ddFdatasync.mbPerS.toFixed(0)} MB/s)`;
  L.push(`| step | pilotlight s | CPU s | peak RSS MB | ${borg ?? 'borg'} s | restic s | pilotlight / ${borg ?? 'borg'} | pilotlight / restic | pilotlight efficiency |`);
  L.push('|---|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const x of rows) {
    L.push(`| ${x.step} | ${cell(x.pl)} | ${x.pl ? f1(x.pl.cpuS) : '–'} | ${x.pl ? x.pl.rssMB.toFixed(0) : '–'} | ${cell(x.b)} | ${cell(x.rs)} | ${ratio(x.spB)} | ${ratio(x.spR)} | ${x.eff ?? '–'} |`);
  }
  L.push('');
  if (svc) {
    L.push(`The service's \`run --once\` process as a whole (start-up, key derivation, cache open, then the job): ${wall(svc.process)} s, ${f1(svc.process.cpuS)} CPU s, ${svc.process.rssMB.toFixed(0)} MB peak RSS. A running service pays all but the job once, when it starts.`);
    L.push('');
  }
  const goals: [string, string, boolean | undefined][] = [];
  const first = rows[0]!;
  if (first.spB !== undefined) goals.push([`first backup <= 0.5x ${borg}`, ratio(first.spB), 1 / first.spB <= 0.5]);
  if (first.spR !== undefined) goals.push(['first backup <= 0.25x restic', ratio(first.spR), 1 / first.spR <= 0.25]);
  if (ceil && fb && !fb.error) {
    const rate = r.steps[0]!.nonZeroBytes / 1e6 / fb.wallS;
    goals.push([`pipeline efficiency >= 85% (first backup MB/s over the ceiling ${ceil.parts} = ${ceil.mbPerS.toFixed(0)} MB/s)`, `${rate.toFixed(0)} MB/s = ${((rate / ceil.mbPerS) * 100).toFixed(0)}%`, rate / ceil.mbPerS >= 0.85]);
  }
  const q = r.steps[r.steps.length - 1];
  if (q && q.kind === 'incremental') {
    const worst = Math.min(...[borg, restic].filter((t): t is string => !!t).map((t) => q.speedup[t]!).filter(Number.isFinite));
    if (Number.isFinite(worst)) goals.push([`15-minute incremental (${q.label}) <= 0.1x either peer (CLI: a new process, key derivation and cache open included)`, ratio(worst), 1 / worst <= 0.1]);
  }
  if (svc) {
    const worst = Math.min(...[borg, restic].filter((t): t is string => !!t).map((t) => svc.speedup[t]!).filter(Number.isFinite));
    if (Number.isFinite(worst)) goals.push([`15-minute incremental (${svc.state}) <= 0.1x either peer, run by the service (job time; the peers' CLI times)`, ratio(worst), 1 / worst <= 0.1]);
  }
  const rest = r.restore.tools.pilotlight;
  if (rest && !rest.error) {
    const fastest = Math.min(...[borg, restic].filter((t): t is string => !!t).map((t) => r.restore.speedup[t]!).filter(Number.isFinite));
    if (Number.isFinite(fastest)) goals.push(['restore >= 2x faster than the faster peer', `${f2(fastest)}x`, fastest >= 2]);
    if (r.ddFdatasync) {
      const rr = r.restore.nonZeroBytes / 1e6 / rest.wallS;
      goals.push([`restore >= 75% of dd conv=fdatasync of the same bytes (${r.ddFdatasync.mbPerS.toFixed(0)} MB/s)`, `${rr.toFixed(0)} MB/s = ${((rr / r.ddFdatasync.mbPerS) * 100).toFixed(0)}%`, rr / r.ddFdatasync.mbPerS >= 0.75]);
    }
  }
  const all = [...r.steps.map((s) => s.tools.pilotlight), rest, svc?.process].filter((a): a is Agg => !!a && !a.error);
  if (all.length) {
    const rss = Math.max(...all.map((a) => Math.max(...a.samples.map((x) => x.rssMB))));
    goals.push(['peak RSS <= 150 MB (every backup, the service run and the restore, worst repetition)', `${rss.toFixed(0)} MB`, rss <= 150]);
  }
  const pl = r.dedup.series.pilotlight?.storedBytes;
  const rs = r.dedup.series.restic?.storedBytes;
  if (pl && rs) goals.push(['repository size about 1.0x restic\'s (no worse than before)', `${f2(pl / rs)}x`, pl / rs <= 1.05]);
  if (goals.length) {
    L.push('**Issue 12 goals** (reported, not asserted)');
    L.push('');
    L.push('| goal | measured | met |');
    L.push('|---|---|---|');
    for (const [g, m, ok] of goals) L.push(`| ${g} | ${m} | ${ok === undefined ? '–' : ok ? 'yes' : 'no'} |`);
    L.push('');
  }
  return L;
}

/** The targets of issues 6 and 2, next to what this run measured. */
function targets(r: Results): string[] {
  const pl = r.steps.map((s) => s.tools.pilotlight).filter((a) => a && !a.error);
  if (!pl.length) return [];
  const rows: [string, string, boolean | undefined][] = [];
  const first = r.steps[0];
  const sp = (peer: string) => first.speedup[peer];
  if (Number.isFinite(sp('borg'))) rows.push(['first backup in at most 1/3 of borg\'s time', `${f1(sp('borg'))}x faster`, sp('borg') >= 3]);
  if (Number.isFinite(sp('restic'))) rows.push(['first backup in at most 1/4 of restic\'s time', `${f1(sp('restic'))}x faster`, sp('restic') >= 4]);
  for (const peer of ['restic', 'borg']) {
    const inc = r.steps.filter((s) => s.kind === 'incremental').map((s) => s.speedup[peer]).filter(Number.isFinite);
    if (inc.length) {
      const lo = Math.min(...inc);
      rows.push([`incrementals with change lists at least 10x faster than ${peer}`, `${inc.map((x) => f1(x)).join(', ')}x`, lo >= 10]);
    }
  }
  const plRepo = r.dedup.series.pilotlight?.storedBytes;
  const rsRepo = r.dedup.series.restic?.storedBytes;
  const bgRepo = r.dedup.series.borg?.storedBytes;
  if (plRepo && rsRepo) rows.push(['repository within 10% of restic\'s (zstd)', `${(((plRepo / rsRepo) - 1) * 100).toFixed(0)}% (${mbs(plRepo)} vs ${mbs(rsRepo)} MB)`, plRepo <= rsRepo * 1.1]);
  if (plRepo && bgRepo) rows.push(['repository smaller than borg\'s', `${mbs(plRepo)} vs ${mbs(bgRepo)} MB`, plRepo < bgRepo]);
  const rest = r.restore.tools.pilotlight;
  const rss = Math.max(...pl.map((a) => a.rssMB), rest && !rest.error ? rest.rssMB : 0);
  rows.push(['peak RSS under 300 MB (backups and restore)', `${rss.toFixed(0)} MB`, rss < 300]);
  const fbRate = first.nonZeroBytes / 1e6 / first.tools.pilotlight.wallS;
  rows.push(['first backup at 500 MB/s or more (non-zero bytes, encrypted, compressed)', `${fbRate.toFixed(0)} MB/s`, fbRate >= 500]);
  if (rest && !rest.error) {
    const rr = r.restore.nonZeroBytes / 1e6 / rest.wallS;
    rows.push(['restore at 500 MB/s or more', `${rr.toFixed(0)} MB/s`, rr >= 500]);
  }
  const L = ['**Against the targets** of issues 6 and 2 (reported, not asserted)', '', '| target | measured | met |', '|---|---|---|'];
  for (const [t, m, ok] of rows) L.push(`| ${t} | ${m} | ${ok === undefined ? '–' : ok ? 'yes' : 'no'} |`);
  L.push('');
  return L;
}
