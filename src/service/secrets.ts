/**
 * Secrets by reference: `{ env: NAME }`, `{ file: PATH }` (trailing newline dropped) or
 * `{ command: "..." }` (run with /bin/sh, its stdout minus the trailing newline). The
 * values are never logged; the logger also redacts fields named like secrets.
 */
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { promisify } from 'node:util';
import { UserError } from '../repo/errors.js';
import type { SecretRef } from './config-schema.js';

const run = promisify(execFile);

export async function resolveSecret(ref: SecretRef, what: string): Promise<string> {
  let value: string;
  if ('env' in ref) {
    const v = process.env[ref.env];
    if (v === undefined || v === '') throw new UserError(`${what}: environment variable ${ref.env} is not set`);
    value = v;
  } else if ('file' in ref) {
    try {
      value = (await fsp.readFile(ref.file, 'utf8')).replace(/\r?\n$/, '');
    } catch (err) {
      throw new UserError(`${what}: cannot read ${ref.file}: ${(err as Error).message}`);
    }
  } else {
    try {
      value = (await run('/bin/sh', ['-c', ref.command], { timeout: 60_000, maxBuffer: 1 << 20 })).stdout.replace(/\r?\n$/, '');
    } catch (err) {
      // the command's output is not repeated: it may hold part of the secret
      throw new UserError(`${what}: the command failed (exit ${(err as { code?: unknown }).code ?? '?'})`);
    }
  }
  if (!value) throw new UserError(`${what}: the secret is empty`);
  return value;
}
