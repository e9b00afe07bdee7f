/** Runs the real CLI (bin/pilotlight.js) as a child process, as a user would. */
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const BIN = path.join(ROOT, 'bin', 'pilotlight.js');

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export function start(args: string[], env: Record<string, string | undefined> = {}): ChildProcess {
  return spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
}

export function run(args: string[], env: Record<string, string | undefined> = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = start(args, env);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** Runs and expects exit 0; returns parsed JSON when --json was passed. */
export async function ok(args: string[], env: Record<string, string | undefined> = {}): Promise<RunResult & { json: any }> {
  const r = await run(args, env);
  if (r.code !== 0) throw new Error(`pilotlight ${args.join(' ')} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  return { ...r, json: args.includes('--json') ? JSON.parse(r.stdout) : undefined };
}

/** A scratch directory with its own cache dir; removed by cleanup(). */
export async function scratch(name: string): Promise<{ dir: string; env: Record<string, string>; cleanup: () => Promise<void> }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `pl-${name}-`));
  return {
    dir,
    env: { PILOTLIGHT_CACHE_DIR: path.join(dir, 'cache'), PILOTLIGHT_PASSWORD: 'correct horse battery staple' },
    cleanup: () => fsp.rm(dir, { recursive: true, force: true }),
  };
}

/** A refused command: non-zero exit, exactly one `pilotlight: ...` line on stderr matching `pattern`, no stack trace. */
export function assertCleanFailure(r: RunResult, pattern: RegExp): void {
  assert.notEqual(r.code, 0, `expected failure, got exit 0: ${r.stdout}`);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `expected one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0]!, /^pilotlight: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}
