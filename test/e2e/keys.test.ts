/**
 * Key management: add / passwd / remove round trips, the last key is never removed,
 * new key files are argon2id (64 MiB, 3 passes, bounds-checked), --password-command, and
 * the warning for a password file others can read.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch } from '../support/cli.js';
import { makeImage } from '../support/images.js';

describe('keys', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let img: string;
  const A = 'first password';
  const B = 'second password';
  const C = 'third password';

  before(async () => {
    s = await scratch('keys');
    repo = path.join(s.dir, 'repo');
    img = path.join(s.dir, 'a.img');
    await makeImage(img, 2 << 20, [{ offset: 0, length: 1 << 20, kind: 'text' }], 21);
    await ok(['init', '--repo', repo], { ...s.env, PILOTLIGHT_PASSWORD: A });
    await ok(['backup', 'file', img, '--vm', 'k', '--repo', repo], { ...s.env, PILOTLIGHT_PASSWORD: A });
  });
  after(async () => s.cleanup());

  const as = (pw: string, extra: Record<string, string> = {}) => ({ ...s.env, PILOTLIGHT_PASSWORD: pw, ...extra });

  it('init writes one version 2 argon2id key file: 64 MiB, 3 passes, 1 lane', async () => {
    const list = (await ok(['key', 'list', '--repo', repo, '--json'], as(A))).json;
    assert.equal(list.length, 1);
    assert.equal(list[0].inUse, true);
    assert.equal(list[0].version, 2);
    assert.equal(list[0].kdf.name, 'argon2id');
    assert.deepEqual({ m: list[0].kdf.m, t: list[0].kdf.t, p: list[0].kdf.p }, { m: 64 * 1024, t: 3, p: 1 });
    assert.equal(list[0].kdf.salt, undefined, 'key list does not print salts');
  });

  it('add, passwd and remove: each password opens exactly while its key file exists', async () => {
    const added = (await ok(['key', 'add', '--repo', repo, '--json'], as(A, { PILOTLIGHT_NEW_PASSWORD: B }))).json.added;
    await ok(['snapshots', '--repo', repo], as(B));
    await ok(['snapshots', '--repo', repo], as(A));
    // passwd replaces the key in use (A's) by C's
    const pf = path.join(s.dir, 'new-pw');
    await fsp.writeFile(pf, `${C}\n`, { mode: 0o600 });
    const changed = (await ok(['key', 'passwd', '--repo', repo, '--new-password-file', pf, '--json'], as(A))).json;
    assert.notEqual(changed.added, changed.removed);
    assert.match((await run(['snapshots', '--repo', repo], as(A))).stderr, /wrong password/);
    await ok(['snapshots', '--repo', repo], as(C));
    // remove B's key while opened with C: C still opens, B does not
    await ok(['key', 'remove', added.slice(0, 8), '--repo', repo], as(C));
    assert.match((await run(['snapshots', '--repo', repo], as(B))).stderr, /wrong password/);
    const out = path.join(s.dir, 'out.img');
    await ok(['restore', 'latest', '--vm', 'k', '--to', out, '--repo', repo], as(C));
  });

  it('the last key file is never removed', async () => {
    const list = (await ok(['key', 'list', '--repo', repo, '--json'], as(C))).json;
    assert.equal(list.length, 1);
    const r = await run(['key', 'remove', list[0].id, '--repo', repo], as(C));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /only key/);
    assert.equal((await fsp.readdir(path.join(repo, 'keys'))).length, 1);
  });

  it('--password-command: stdout is the password; a failing command is a clear error', async () => {
    const env = { ...s.env, PILOTLIGHT_PASSWORD: undefined };
    await ok(['snapshots', '--repo', repo, '--password-command', `printf '%s\\n' '${C}'`], env);
    const r = await run(['snapshots', '--repo', repo, '--password-command', 'echo vault sealed >&2; exit 7'], env);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), 'pilotlight: --password-command exited with 7: vault sealed');
  });

  it('a password file readable by others works, with a warning on stderr', async () => {
    const pf = path.join(s.dir, 'pw-open');
    await fsp.writeFile(pf, C);
    await fsp.chmod(pf, 0o644);
    const r = await ok(['snapshots', '--repo', repo, '--password-file', pf], { ...s.env, PILOTLIGHT_PASSWORD: undefined });
    assert.match(r.stderr, /warning: password file .* is readable by others \(mode 644\)/);
    await fsp.chmod(pf, 0o600);
    const quiet = await ok(['snapshots', '--repo', repo, '--password-file', pf], { ...s.env, PILOTLIGHT_PASSWORD: undefined });
    assert.equal(quiet.stderr, '');
  });

  it('an unencrypted repository refuses a password unless --no-encryption says one is expected', async () => {
    const plain = path.join(s.dir, 'plain');
    await ok(['init', '--no-encryption', '--repo', plain], as(C));
    const r = await run(['snapshots', '--repo', plain], as(C));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /is not encrypted, but a password was given/);
    await ok(['snapshots', '--repo', plain, '--no-encryption'], as(C));
    await ok(['--no-encryption', 'snapshots', '--repo', plain], as(C));
    await ok(['snapshots', '--repo', plain], { ...s.env, PILOTLIGHT_PASSWORD: undefined });
  });
});
