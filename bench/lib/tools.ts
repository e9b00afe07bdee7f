/**
 * The backup tools under test, behind one small interface, each run as a child process
 * under `/usr/bin/time -v` so wall time, CPU time and peak RSS are measured the same way.
 *
 * Every tool backs up the same path, <work>/src/<vm>/disk.img, a hard link to the state's
 * image, so restic and borg see one file changing from snapshot to snapshot (as with a VM
 * whose disk file is rewritten in place) and pilotlight sees the same disk name each time.
 */
import { promises as fsp, existsSync } from 'node:fs';
import * as path from 'node:path';
import { timedOk, dirBytes, sh, type Timed } from './util.js';

export interface BackupStep {
  vm: string;
  /** The state's image file. */
  image: string;
  /** Change list relative to the VM's previous state, when there is one. */
  changes?: string;
  /** First backup of this vm in this repository. */
  first: boolean;
  label: string;
}

export interface BackupResult extends Timed {
  /** What the tool said about the run (pilotlight's --json report), when it says anything. */
  report?: Record<string, unknown>;
}

export interface Tool {
  /** Row name in the tables: pilotlight, pilotlight-no-cbt, restic, borg. */
  readonly name: string;
  /** Settings that matter for the comparison, for the report. */
  readonly settings: string;
  init(): Promise<Timed>;
  backup(step: BackupStep): Promise<BackupResult>;
  /** Restores the latest snapshot of vm to `to` (a file path); returns the timing and the file written. */
  restore(vm: string, toDir: string): Promise<{ t: Timed; file: string }>;
  /** Bytes the repository holds (sum of file sizes, the local cache not included). */
  repoBytes(): Promise<number>;
  /** Bytes of the tool's local cache outside the repository. */
  cacheBytes(): Promise<number>;
}

const PASSWORD = 'pilotlight-bench-password';

async function link(work: string, step: BackupStep): Promise<string> {
  const dir = path.join(work, 'src', step.vm);
  await fsp.mkdir(dir, { recursive: true });
  const p = path.join(dir, 'disk.img');
  await fsp.rm(p, { force: true });
  await fsp.link(step.image, p);
  return p;
}

export class Pilotlight implements Tool {
  readonly repo: string;
  readonly cache: string;
  readonly env: NodeJS.ProcessEnv;
  constructor(readonly name: string, private readonly root: string, private readonly work: string, private readonly useChanges: boolean) {
    this.repo = path.join(work, 'repo');
    this.cache = path.join(work, 'cache');
    this.env = { ...process.env, PILOTLIGHT_PASSWORD: PASSWORD, PILOTLIGHT_CACHE_DIR: this.cache };
  }
  get settings(): string {
    return `encrypted (AES-256-GCM), default codec; incrementals ${this.useChanges ? 'with --changed-extents (CBT lists)' : 'without change lists (reads all allocated extents, SEEK_DATA)'}`;
  }
  private cli(args: string[]) {
    return timedOk(process.execPath, [path.join(this.root, 'bin', 'pilotlight.js'), ...args], { env: this.env });
  }
  init() {
    return this.cli(['init', '--repo', this.repo]);
  }
  async backup(step: BackupStep): Promise<BackupResult> {
    const img = await link(this.work, step);
    const args = ['backup', 'file', img, '--repo', this.repo, '--vm', step.vm, '--json'];
    if (this.useChanges && step.changes && !step.first) args.push('--changed-extents', step.changes);
    const t = await this.cli(args);
    let report: Record<string, unknown> | undefined;
    try { report = JSON.parse(t.stdout); } catch {
      try { report = JSON.parse(t.stdout.trim().split('\n').filter(Boolean).pop() ?? '{}'); } catch { /* keep undefined */ }
    }
    return { ...t, report };
  }
  /** Start-up floor: loading the CLI and printing its help. */
  startup() {
    return this.cli(['--help']);
  }
  /** The fixed cost of a backup: an incremental whose change list is empty. */
  async emptyIncremental(step: BackupStep): Promise<BackupResult> {
    const empty = path.join(this.work, 'empty.changes');
    await fsp.writeFile(empty, '');
    const img = await link(this.work, step);
    return this.cli(['backup', 'file', img, '--repo', this.repo, '--vm', step.vm, '--json', '--changed-extents', empty]);
  }
  /** Copies the repository and cache aside, so that the next backup can be run a second way on the same parent. */
  async forkForService(): Promise<void> {
    const dir = path.join(this.work, 'svc');
    await fsp.rm(dir, { recursive: true, force: true });
    await fsp.mkdir(dir, { recursive: true });
    sh('cp', ['-a', this.repo, path.join(dir, 'repo')]);
    sh('cp', ['-a', this.cache, path.join(dir, 'cache')]);
  }
  /**
   * The same backup run by the service (`pilotlight run --config --once`) on the copy
   * forkForService made: the service derives the key and opens the cache when it
   * starts, then runs the job; `jobS` is the job's time as the service logs it (source
   * opened, chunks read, stored, committed; the lease and the freshness check before it
   * are not included), the other figures are the whole process's.
   */
  async serviceIncremental(step: BackupStep): Promise<BackupResult & { jobS: number }> {
    const dir = path.join(this.work, 'svc');
    const img = await link(this.work, step);
    const cfg = path.join(dir, 'pilotlight.yaml');
    const lines = [
      'repositories:',
      '  main:',
      `    location: ${JSON.stringify(path.join(dir, 'repo'))}`,
      '    password: { env: PILOTLIGHT_PASSWORD }',
      `    cacheDir: ${JSON.stringify(path.join(dir, 'cache'))}`,
      'sources:',
      `  ${step.vm}:`,
      '    file:',
      `      images: [${JSON.stringify(img)}]`,
      ...(step.changes ? [`      changedExtents: [${JSON.stringify(step.changes)}]`] : []),
      'jobs:',
      '  - name: bench',
      '    repository: main',
      `    vms: [${step.vm}]`,
      '    every: 15m',
    ];
    await fsp.writeFile(cfg, lines.join('\n') + '\n');
    const t = await this.cli(['run', '--config', cfg, '--once', '--log-format', 'json']);
    const done = (t.stdout + '\n' + t.stderr).split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'backup done');
    if (!done || typeof done.seconds !== 'number') throw new Error(`pilotlight run --once: no 'backup done' line:\n${t.stderr.slice(-2000)}`);
    await fsp.rm(dir, { recursive: true, force: true });
    return { ...t, jobS: done.seconds, report: done };
  }
  async restore(vm: string, toDir: string) {
    await fsp.mkdir(toDir, { recursive: true });
    const file = path.join(toDir, `${vm}.img`);
    const t = await this.cli(['restore', 'latest', '--vm', vm, '--to', file, '--repo', this.repo]);
    return { t, file };
  }
  async stats(): Promise<Record<string, unknown> | undefined> {
    try {
      const t = await this.cli(['stats', '--repo', this.repo, '--json']);
      return JSON.parse(t.stdout);
    } catch { return undefined; }
  }
  repoBytes() { return dirBytes(this.repo); }
  cacheBytes() { return dirBytes(this.cache); }
}

export class Restic implements Tool {
  readonly name = 'restic';
  readonly settings = 'repository v2, --compression auto (zstd), default content-defined chunking (512 KiB-8 MiB), AES-256-CTR + Poly1305';
  readonly repo: string;
  readonly cache: string;
  readonly env: NodeJS.ProcessEnv;
  constructor(private readonly work: string) {
    this.repo = path.join(work, 'repo');
    this.cache = path.join(work, 'cache');
    this.env = { ...process.env, RESTIC_PASSWORD: PASSWORD, RESTIC_REPOSITORY: this.repo, RESTIC_CACHE_DIR: this.cache };
  }
  init() {
    return timedOk('restic', ['init', '--repository-version', '2', '-q'], { env: this.env });
  }
  async backup(step: BackupStep): Promise<BackupResult> {
    await link(this.work, step);
    return timedOk('restic', ['backup', '-q', '--compression', 'auto', '--host', step.vm, path.join(step.vm, 'disk.img')],
      { env: this.env, cwd: path.join(this.work, 'src') });
  }
  async restore(vm: string, toDir: string) {
    await fsp.mkdir(toDir, { recursive: true });
    const t = await timedOk('restic', ['restore', 'latest', '-q', '--host', vm, '--target', toDir], { env: this.env });
    return { t, file: path.join(toDir, vm, 'disk.img') };
  }
  repoBytes() { return dirBytes(this.repo); }
  cacheBytes() { return dirBytes(this.cache); }
}

/**
 * borg 1.2. `fixed` is its fastest mode for disk images (`--chunker-params
 * fixed,65536 --sparse`: 64 KiB fixed chunks like pilotlight's, holes skipped),
 * the strongest borg peer for VM disks; the default buzhash chunker is kept as
 * `borg`.
 */
export class Borg implements Tool {
  readonly name: string;
  readonly settings: string;
  readonly repo: string;
  readonly base: string;
  readonly env: NodeJS.ProcessEnv;
  private n = 0;
  constructor(private readonly work: string, private readonly fixed = false) {
    this.name = fixed ? 'borg-fixed64k' : 'borg';
    this.settings = fixed
      ? 'repokey (AES-256-CTR + HMAC-SHA256; this CPU has SHA-NI), -C zstd,1, --chunker-params fixed,65536 --sparse, extract --sparse'
      : 'repokey (AES-256-CTR + HMAC-SHA256; this CPU has SHA-NI), -C zstd,1, default buzhash chunker (2^19..2^23), extract --sparse';
    this.repo = path.join(work, 'repo');
    this.base = path.join(work, 'base');
    this.env = {
      ...process.env, BORG_PASSPHRASE: PASSWORD, BORG_REPO: this.repo, BORG_BASE_DIR: this.base,
      BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes', BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
    };
  }
  async init() {
    await fsp.mkdir(this.work, { recursive: true });
    return timedOk('borg', ['init', '-e', 'repokey'], { env: this.env });
  }
  async backup(step: BackupStep): Promise<BackupResult> {
    await link(this.work, step);
    const chunker = this.fixed ? ['--chunker-params', 'fixed,65536', '--sparse'] : [];
    return timedOk('borg', ['create', '-C', 'zstd,1', ...chunker, `::${step.vm}-${this.n++}`, path.join(step.vm, 'disk.img')],
      { env: this.env, cwd: path.join(this.work, 'src') });
  }
  async restore(vm: string, toDir: string) {
    await fsp.mkdir(toDir, { recursive: true });
    const last = sh('borg', ['list', '--short', '--glob-archives', `${vm}-*`, '--last', '1'], { env: this.env }).trim();
    const t = await timedOk('borg', ['extract', '--sparse', `::${last}`], { env: this.env, cwd: toDir });
    return { t, file: path.join(toDir, vm, 'disk.img') };
  }
  repoBytes() { return dirBytes(this.repo); }
  cacheBytes() { return dirBytes(this.base); }
}

export function pilotlightAvailable(root: string): boolean {
  return existsSync(path.join(root, 'dist', 'src', 'cli', 'main.js')) && existsSync(path.join(root, 'bin', 'pilotlight.js'));
}

export function toolVersion(cmd: string, args: string[]): string {
  try { return sh(cmd, args).trim().split('\n')[0]; } catch { return 'not installed'; }
}
