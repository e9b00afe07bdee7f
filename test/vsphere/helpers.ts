/**
 * Shared helpers for the vSphere tests: locate (and if needed build) the test doubles
 * (vcsim launcher, fake VDDK library) via scripts/vsphere-test-setup.sh, and start vcsim.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir, homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'package.json')) || !existsSync(path.join(dir, 'scripts'))) {
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root');
    dir = up;
  }
  return dir;
}

export function cacheDir(): string {
  return (
    process.env.PILOTLIGHT_VSPHERE_CACHE ??
    path.join(process.env.XDG_CACHE_HOME ?? path.join(homedir(), '.cache'), 'pilotlight-vsphere-test')
  );
}

export interface TestBinaries {
  vcsim: string;
  vddkLibDir: string;
}

let built: TestBinaries | undefined;

/** Builds the test doubles when missing; throws (never skips) when that is impossible. */
export function testBinaries(): TestBinaries {
  if (built) return built;
  const root = repoRoot();
  const script = path.join(root, 'scripts', 'vsphere-test-setup.sh');
  try {
    execFileSync('sh', [script], { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    throw new Error(
      `the vSphere test doubles could not be built; run \`sh scripts/vsphere-test-setup.sh\` ` +
        `(needs golang-go and golang-github-vmware-govmomi-dev, and gcc): ${e.stderr?.toString().trim() || e.message}`,
    );
  }
  const dir = cacheDir();
  const b = { vcsim: path.join(dir, 'bin', 'pilotlight-vcsim'), vddkLibDir: path.join(dir, 'fake-vddk', 'lib64') };
  if (!existsSync(b.vcsim) || !existsSync(path.join(b.vddkLibDir, 'libvixDiskLib.so'))) {
    throw new Error(`the vSphere test doubles are missing from ${dir}; run \`sh scripts/vsphere-test-setup.sh\``);
  }
  built = b;
  return b;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), `pilotlight-${prefix}-`));
}

export interface Vcsim {
  url: string;
  thumbprint: string;
  stop(): Promise<void>;
}

export const VCSIM_USER = 'backup-operator';
/** With XML and shell metacharacters, to prove the SOAP request escapes them. */
export const VCSIM_PASSWORD = 'simulator<&>"secret\'';

/** Starts vcsim (test double) on 127.0.0.1 with fixed credentials. */
export async function startVcsim(args: string[] = []): Promise<Vcsim> {
  const bin = testBinaries().vcsim;
  const child: ChildProcess = spawn(bin, ['-username', VCSIM_USER, '-password', VCSIM_PASSWORD, ...args], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let err = '';
  child.stderr!.on('data', (d) => (err += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d.toString();
      const nl = out.indexOf('\n');
      if (nl >= 0) resolve(out.slice(0, nl));
    });
    child.on('exit', (code) => reject(new Error(`vcsim exited (${code}): ${err}`)));
    setTimeout(() => reject(new Error(`vcsim did not start in 30 s: ${err}`)), 30000).unref();
  });
  const info = JSON.parse(line) as { url: string; thumbprint: string };
  return {
    url: info.url,
    thumbprint: info.thumbprint,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.stdin!.end();
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      }),
  };
}

/** Parses the fake VDDK call log and returns handles/connections never closed. */
export function unclosed(logFile: string, fromOffset = 0): { handles: string[]; connections: string[]; exited: boolean; initialized: boolean } {
  const lines = existsSync(logFile) ? readFileSync(logFile, 'utf8').slice(fromOffset).split('\n') : [];
  const handles = new Set<string>();
  const conns = new Set<string>();
  let inits = 0;
  let exits = 0;
  for (const l of lines) {
    let m: RegExpMatchArray | null;
    if ((m = l.match(/^Open ok handle=(\S+)/))) handles.add(m[1]);
    else if ((m = l.match(/^Close handle=(\S+)/))) handles.delete(m[1]);
    else if ((m = l.match(/^ConnectEx ok conn=(\S+)/))) conns.add(m[1]);
    else if ((m = l.match(/^Disconnect conn=(\S+)/))) conns.delete(m[1]);
    else if (l.startsWith('InitEx')) inits++;
    else if (l === 'Exit') exits++;
  }
  return { handles: [...handles], connections: [...conns], exited: inits > 0 && exits === inits, initialized: inits > 0 };
}

/**
 * Runs the CLI of this build (the same tree as the tests) with `backup vsphere` and
 * `doctor vsphere` registered, whether or not the core CLI wires them yet.
 */
const DRIVER = `
const [mainUrl, vsUrl, ...args] = process.argv.slice(2);
const m = await import(mainUrl);
const vs = await import(vsUrl);
const program = await m.buildProgram();
const backup = program.commands.find((c) => c.name() === 'backup');
if (!backup.commands.some((c) => c.name() === 'vsphere')) vs.registerVsphereBackup(backup);
const doctor = program.commands.find((c) => c.name() === 'doctor');
if (!doctor || !doctor.commands.some((c) => c.name() === 'vsphere')) vs.registerDoctor(program);
try { await program.parseAsync(['node', 'pilotlight', ...args]); }
catch (e) {
  if (e && e.code && String(e.code).startsWith('commander.')) process.exitCode = e.exitCode;
  else { process.stderr.write('pilotlight: ' + (e && e.message) + '\\n'); process.exitCode = 1; }
}
`;

/** node arguments that run the CLI driver: [driver.mjs, main.js URL, vsphere.js URL]. */
export function cliDriver(dir: string): string[] {
  const driver = path.join(dir, 'cli-driver.mjs');
  writeFileSync(driver, DRIVER);
  return [
    driver,
    new URL('../../src/cli/main.js', import.meta.url).href,
    new URL('../../src/cli/vsphere.js', import.meta.url).href,
  ];
}

export function runCli(dir: string, args: string[], extraEnv: NodeJS.ProcessEnv = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [...cliDriver(dir), ...args], { env: { ...process.env, ...extraEnv }, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const e = Object.assign(new Error(`pilotlight ${args.join(' ')} failed (${err.code}): ${stderr || err.message}`), { stdout, stderr, exitCode: err.code });
        reject(e);
      } else resolve(stdout);
    });
  });
}
