/**
 * A service protecting many small VMs (bench, not a test):
 *
 *   node dist/bench/service/fleet.js [--vms 50] [--every 60s] [--minutes 10] [--size-mib 64] [--change-kib 512]
 *
 * Generates one raw image per VM (--size-mib, a quarter of it data), starts `pilotlight
 * run` with one job protecting every VM, and between runs rewrites --change-kib of
 * every image (new data each interval). Samples the service's CPU time and RSS from
 * /proc every second, scrapes /metrics at the end, and reports whether every VM stayed
 * within its RPO target (2x the interval) for the whole run: the largest
 * pilotlight_rpo_seconds seen per VM (after the first interval) against the target.
 * Output: JSON on stdout and bench/results/service-fleet-<date>.json.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const bin = path.join(root, 'bin', 'pilotlight.js');
function arg(name: string, d: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : d;
}
const vms = Number(arg('--vms', '50'));
const every = arg('--every', '60s');
const minutes = Number(arg('--minutes', '10'));
const sizeMiB = Number(arg('--size-mib', '64'));
const changeKiB = Number(arg('--change-kib', '512'));
const everyMs = Number(every.replace(/s$/, '')) * 1000;
const MiB = 1024 * 1024;

const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-fleet-'));
const env = { ...process.env, PILOTLIGHT_CACHE_DIR: path.join(dir, 'cache'), PILOTLIGHT_PASSWORD: 'bench-password' };
const names = Array.from({ length: vms }, (_, i) => `vm${String(i).padStart(3, '0')}`);
for (const vm of names) {
  const fh = await fsp.open(path.join(dir, `${vm}.img`), 'w');
  await fh.truncate(sizeMiB * MiB);
  await fh.write(randomBytes(sizeMiB * MiB / 4), 0, sizeMiB * MiB / 4, 0);
  await fh.close();
}
await new Promise<void>((resolve, reject) => {
  const p = spawn(process.execPath, [bin, '--repo', path.join(dir, 'repo'), 'init'], { env, stdio: 'ignore' });
  p.on('close', (c) => (c === 0 ? resolve() : reject(new Error(`init exited ${c}`))));
});
const cfg = path.join(dir, 'fleet.yaml');
await fsp.writeFile(
  cfg,
  `repositories:\n  main:\n    location: ${dir}/repo\n    password: { env: PILOTLIGHT_PASSWORD }\n` +
    `sources:\n${names.map((vm) => `  ${vm}: { file: { images: [${dir}/${vm}.img] } }`).join('\n')}\n` +
    `jobs:\n  - name: fleet\n    repository: main\n    vms: [${names.join(', ')}]\n    every: ${every}\n    parallelism: 4\nservice:\n  parallelism: 4\n  statusInterval: 5s\n`,
);
const port = 9700 + Math.floor(Math.random() * 200);
const svc = spawn(process.execPath, [bin, 'run', '--config', cfg, '--metrics-listen', `127.0.0.1:${port}`, '--log-format', 'json'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
let log = '';
svc.stderr!.on('data', (d) => (log += d));
const clk = 100; // USER_HZ
const samples: { t: number; cpuS: number; rssMiB: number }[] = [];
const t0 = Date.now();
const sampler = setInterval(() => {
  try {
    const stat = readFileSync(`/proc/${svc.pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    const cpu = (Number(stat[11]) + Number(stat[12])) / clk;
    const rss = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${svc.pid}/status`, 'utf8'))![1]) / 1024;
    samples.push({ t: (Date.now() - t0) / 1000, cpuS: cpu, rssMiB: rss });
  } catch {
    // process gone
  }
}, 1000);
const maxRpo = new Map<string, number>();
const scrape = async () => {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`).catch(() => null);
  if (!res?.ok) return null;
  return parsePrometheusTextFormat(await res.text());
};
// change every image once per interval, and watch the RPO after the first interval (the initial full backups)
const changer = setInterval(async () => {
  for (const vm of names) {
    const fh = await fsp.open(path.join(dir, `${vm}.img`), 'r+');
    await fh.write(randomBytes(changeKiB * 1024), 0, changeKiB * 1024, Math.floor(Math.random() * (sizeMiB / 4 - 1)) * MiB);
    await fh.close();
  }
}, everyMs);
const watcher = setInterval(async () => {
  if (Date.now() - t0 < 2 * everyMs) return;
  const m = await scrape();
  for (const s of m?.find((f) => f.name === 'pilotlight_rpo_seconds')?.metrics ?? []) {
    const vm = s.labels!.vm!;
    maxRpo.set(vm, Math.max(maxRpo.get(vm) ?? 0, Number(s.value)));
  }
}, 2000);
await new Promise((r) => setTimeout(r, minutes * 60_000));
const final = await scrape();
clearInterval(changer);
clearInterval(watcher);
clearInterval(sampler);
svc.kill('SIGTERM');
const code = await new Promise<number | null>((r) => svc.on('close', (c) => r(c)));
const runs: Record<string, number> = {};
for (const s of final?.find((f) => f.name === 'pilotlight_backup_runs_total')?.metrics ?? []) runs[s.labels!.result!] = (runs[s.labels!.result!] ?? 0) + Number(s.value);
const target = 2 * everyMs / 1000;
const worst = Math.max(...maxRpo.values());
const last = samples[samples.length - 1]!;
const out = {
  date: new Date().toISOString(),
  vms,
  every,
  minutes,
  imageMiB: sizeMiB,
  changedKiBPerInterval: changeKiB,
  cores: os.cpus().length,
  node: process.version,
  rpoTargetSeconds: target,
  worstRpoSeconds: Number(worst.toFixed(1)),
  vmsOverTarget: [...maxRpo].filter(([, v]) => v > target).map(([vm]) => vm),
  rpoHeld: [...maxRpo.values()].every((v) => v <= target) && maxRpo.size === vms,
  runs,
  overruns: (log.match(/overrun/g) ?? []).length,
  serviceCpuSeconds: Number(last.cpuS.toFixed(1)),
  serviceCpuPercentOfOneCore: Number(((100 * last.cpuS) / last.t).toFixed(1)),
  serviceRssMiB: { max: Math.round(Math.max(...samples.map((s) => s.rssMiB))), last: Math.round(last.rssMiB) },
  exitCode: code,
};
process.stdout.write(JSON.stringify(out, null, 2) + '\n');
await fsp.mkdir(path.join(root, 'bench', 'results'), { recursive: true });
await fsp.writeFile(path.join(root, 'bench', 'results', `service-fleet-${out.date.slice(0, 10)}.json`), JSON.stringify(out, null, 2) + '\n');
await fsp.rm(dir, { recursive: true, force: true });
