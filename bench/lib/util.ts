/**
 * Small helpers shared by the benchmark scripts: running commands, sizes, medians.
 * node: built-ins only.
 */
import { spawn, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { promises as fsp, readFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

/** Parses `4G`, `4GiB`, `512M`, `1073741824` into bytes (binary units). */
export function parseSize(s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(s);
  if (!m) throw new Error(`cannot read size '${s}': use a number of bytes or 512M, 4G, 1T`);
  const mult: Record<string, number> = { '': 1, k: KiB, m: MiB, g: GiB, t: 1024 * GiB };
  const v = Math.round(Number(m[1]) * mult[m[2].toLowerCase()]);
  if (v % (64 * KiB) !== 0) throw new Error(`size ${s} is not a multiple of 64 KiB`);
  return v;
}

export function fmtSize(bytes: number): string {
  if (bytes >= GiB) return `${(bytes / GiB).toFixed(2)} GiB`;
  if (bytes >= MiB) return `${(bytes / MiB).toFixed(1)} MiB`;
  if (bytes >= KiB) return `${(bytes / KiB).toFixed(1)} KiB`;
  return `${bytes} B`;
}

/** Decimal megabytes, as throughput figures are usually given. */
export function mb(bytes: number): number {
  return bytes / 1e6;
}

export function sizeLabel(bytes: number): string {
  if (bytes % GiB === 0) return `${bytes / GiB}G`;
  if (bytes % MiB === 0) return `${bytes / MiB}M`;
  return String(bytes);
}

/** Runs a command to completion; throws with its stderr when it fails. */
export function sh(cmd: string, args: string[], opts: SpawnSyncOptions & { allowFail?: boolean } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 256 * MiB, ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0 && !opts.allowFail) {
    const err = String(r.stderr ?? '').trim().split('\n').slice(-15).join('\n');
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}:\n${err}`);
  }
  return String(r.stdout ?? '');
}

/** Like sh, but streams output to this process's stderr (for long steps such as apt-get). */
export function shLoud(cmd: string, args: string[], opts: SpawnSyncOptions = {}): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 2, 2], ...opts });
  if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}`);
}

export function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  const p = r.stdout.trim();
  return r.status === 0 && p ? p : undefined;
}

export interface Timed {
  /** Wall-clock time measured by this process around the child. */
  wallMs: number;
  userS: number;
  sysS: number;
  /** Peak resident set size of the child (largest of the process tree's members, as GNU time reports). */
  maxRssBytes: number;
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command under GNU `/usr/bin/time -v` and returns wall time, CPU time and peak RSS.
 * stdout is collected unless `stdoutFile` is given (then it goes there, e.g. /dev/null).
 */
export async function timed(
  cmd: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; cwd?: string; stdoutFile?: string; input?: string } = {},
): Promise<Timed> {
  const tfile = path.join(os.tmpdir(), `pl-bench-time-${process.pid}-${Math.random().toString(36).slice(2)}.txt`);
  const fh = opts.stdoutFile ? await fsp.open(opts.stdoutFile, 'w') : undefined;
  const t0 = process.hrtime.bigint();
  const child = spawn('/usr/bin/time', ['-v', '-o', tfile, cmd, ...args], {
    env: opts.env ?? process.env,
    cwd: opts.cwd,
    stdio: [opts.input !== undefined ? 'pipe' : 'ignore', fh ? fh.fd : 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => { if (stdout.length < 64 * MiB) stdout += d; });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => { if (stderr.length < 4 * MiB) stderr += d; });
  if (opts.input !== undefined) child.stdin?.end(opts.input);
  const code: number = await new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (c, sig) => resolve(c ?? (sig ? 128 : 1)));
  });
  const wallMs = Number(process.hrtime.bigint() - t0) / 1e6;
  await fh?.close();
  let tv = '';
  try { tv = readFileSync(tfile, 'utf8'); } catch { /* time did not write */ }
  await fsp.rm(tfile, { force: true });
  const num = (re: RegExp) => { const m = re.exec(tv); return m ? Number(m[1]) : NaN; };
  return {
    wallMs,
    userS: num(/User time \(seconds\): ([\d.]+)/),
    sysS: num(/System time \(seconds\): ([\d.]+)/),
    maxRssBytes: num(/Maximum resident set size \(kbytes\): (\d+)/) * 1024,
    exitCode: code,
    stdout,
    stderr,
  };
}

/** Like timed, but throws when the command fails. */
export async function timedOk(cmd: string, args: string[], opts: Parameters<typeof timed>[2] = {}): Promise<Timed> {
  const t = await timed(cmd, args, opts);
  if (t.exitCode !== 0) {
    throw new Error(`${path.basename(cmd)} ${args.join(' ')} exited with ${t.exitCode}:\n${t.stderr.trim().split('\n').slice(-15).join('\n')}`);
  }
  return t;
}

/** Sum of the sizes of all regular files under dir (the bytes a repository really holds). */
export async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  let entries;
  try { entries = await fsp.readdir(dir, { withFileTypes: true }); } catch { return 0; }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) total += await dirBytes(p);
    else if (e.isFile()) total += (await fsp.stat(p)).size;
  }
  return total;
}

/** Bytes of a file that are allocated on disk (st_blocks * 512). */
export async function allocatedBytes(file: string): Promise<number> {
  const st = await fsp.stat(file);
  return st.blocks * 512;
}

export function median(xs: number[]): number {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function isMain(metaUrl: string): boolean {
  const arg = process.argv[1];
  if (!arg) return false;
  return metaUrl === new URL(`file://${path.resolve(arg)}`).href;
}

export function exists(p: string): boolean {
  return existsSync(p);
}

/** Finds the repository root (the folder holding package.json) from this file's location. */
export function repoRoot(metaUrl: string): string {
  let d = path.dirname(new URL(metaUrl).pathname);
  for (let i = 0; i < 6; i++) {
    if (existsSync(path.join(d, 'package.json'))) return d;
    d = path.dirname(d);
  }
  return process.cwd();
}

/** Minimal `--flag value` / `--switch` parser. */
export function parseArgs(argv: string[], switches: string[]): { flags: Record<string, string>; on: Set<string>; rest: string[] } {
  const flags: Record<string, string> = {};
  const on = new Set<string>();
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) { rest.push(a); continue; }
    const [k, inline] = a.slice(2).split('=', 2);
    if (switches.includes(k)) { on.add(k); continue; }
    const v = inline ?? argv[++i];
    if (v === undefined) throw new Error(`--${k} needs a value`);
    flags[k] = v;
  }
  return { flags, on, rest };
}
