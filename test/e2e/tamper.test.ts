/**
 * An attacker with write access to the bucket but not the password: every edit is
 * refused with a one-line error naming the object, and nothing is written.
 * (Issue 10: these failed before format version 2.)
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch } from '../support/cli.js';
import { listFiles } from '../support/files.js';
import { makeImage } from '../support/images.js';

const MiB = 1 << 20;

/** Names and sizes of every object: what "nothing written" is checked against. */
async function snapshotOfFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const f of await listFiles(dir)) out.push(`${path.relative(dir, f)} ${(await fsp.stat(f)).size}`);
  return out;
}

function oneLine(stderr: string): void {
  assert.equal(stderr.trim().split('\n').length, 1, `expected a one-line error, got:\n${stderr}`);
  assert.doesNotMatch(stderr, /\n\s+at /, 'no stack trace');
}

describe('tampering with the repository', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let base: string;
  let img: string;
  let snapA: string;
  let snapB: string;
  let n = 0;

  /** A fresh copy of the base repository and a fresh cache for it. */
  async function copy(): Promise<{ repo: string; env: Record<string, string> }> {
    const repo = path.join(s.dir, `copy${++n}`);
    await fsp.cp(base, repo, { recursive: true });
    return { repo, env: { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, `cache${n}`) } };
  }

  async function recordFile(repo: string, id: string): Promise<string> {
    const f = (await listFiles(path.join(repo, 'snapshots'))).find((p) => path.basename(p) === id);
    assert.ok(f, `record of ${id} not found`);
    return f;
  }

  before(async () => {
    s = await scratch('tamper');
    base = path.join(s.dir, 'repo');
    img = path.join(s.dir, 'a.img');
    const b = path.join(s.dir, 'b.img');
    await makeImage(img, 4 * MiB, [{ offset: 0, length: 2 * MiB, kind: 'random' }], 11);
    await makeImage(b, 4 * MiB, [{ offset: MiB, length: 2 * MiB, kind: 'random' }], 12);
    await ok(['init', '--repo', base, '--pack-size', '1'], s.env);
    snapA = (await ok(['backup', 'file', img, '--repo', base, '--vm', 'a', '--json'], s.env)).json.snapshot;
    snapB = (await ok(['backup', 'file', b, '--repo', base, '--vm', 'b', '--json'], s.env)).json.snapshot;
  });

  after(async () => s.cleanup());

  it('encryption downgrade (config says none, keys replaced by a kdf-none key): backup refused, nothing written', async () => {
    // a repository the attacker finds freshly made (or whose index files they removed too)
    const repo = path.join(s.dir, 'fresh');
    const env = { ...s.env, PILOTLIGHT_CACHE_DIR: path.join(s.dir, 'cache-fresh') };
    await ok(['init', '--repo', repo], env);
    const cfgPath = path.join(repo, 'config');
    const cfg = JSON.parse(await fsp.readFile(cfgPath, 'utf8'));
    cfg.encryption = 'none';
    delete cfg.auth;
    await fsp.writeFile(cfgPath, JSON.stringify(cfg, null, 2) + '\n');
    for (const k of await fsp.readdir(path.join(repo, 'keys'))) await fsp.rm(path.join(repo, 'keys', k));
    const evil = { version: 1, created: new Date().toISOString(), kdf: { name: 'none' }, data: randomBytes(32).toString('base64') };
    await fsp.writeFile(path.join(repo, 'keys', randomBytes(16).toString('hex')), JSON.stringify(evil));
    const before = await snapshotOfFiles(repo);
    const r = await run(['backup', 'file', img, '--repo', repo, '--vm', 'a'], env);
    assert.notEqual(r.code, 0, `the downgraded repository was accepted:\n${r.stdout}`);
    oneLine(r.stderr);
    assert.match(r.stderr, /not encrypted|unencrypted/);
    assert.deepEqual(await snapshotOfFiles(repo), before, 'nothing may be written');
  });

  it('a record replayed under a newer name is an integrity error naming it', async () => {
    const { repo, env } = await copy();
    const src = await recordFile(repo, snapB);
    const replayId = '29991231T235959Z-deadbeef';
    await fsp.copyFile(src, path.join(path.dirname(src), replayId));
    const r = await run(['restore', 'latest', '--vm', 'b', '--to', path.join(s.dir, `out${n}.img`), '--repo', repo], env);
    assert.equal(r.code, 3, `a replayed record was accepted:\n${r.stdout}${r.stderr}`);
    oneLine(r.stderr);
    assert.match(r.stderr, new RegExp(replayId));
    const list = await run(['snapshots', '--repo', repo], env);
    assert.equal(list.code, 3);
    assert.match(list.stderr, new RegExp(replayId));
  });

  it("a record of another vm copied beside vm b's records is an integrity error naming it", async () => {
    const { repo, env } = await copy();
    const a = await recordFile(repo, snapA);
    const b = await recordFile(repo, snapB);
    const copyId = '29991231T235959Z-0badf00d';
    await fsp.copyFile(a, path.join(path.dirname(b), copyId));
    const r = await run(['restore', 'latest', '--vm', 'b', '--to', path.join(s.dir, `out${n}.img`), '--repo', repo], env);
    assert.equal(r.code, 3, `a copied record was accepted or ignored:\n${r.stdout}${r.stderr}`);
    oneLine(r.stderr);
    assert.match(r.stderr, new RegExp(copyId));
  });

  it('swapped pack files: restore is an integrity error naming the pack', async () => {
    const { repo, env } = await copy();
    const packs = await listFiles(path.join(repo, 'data'));
    assert.ok(packs.length >= 2, `need two data packs, have ${packs.length}`);
    // rotate every data pack's content to the next pack's name, so that whichever packs
    // the snapshot uses, each one it reads holds another pack's bytes
    const tmp = `${packs[0]!}.swap`;
    await fsp.rename(packs[0]!, tmp);
    for (let i = 1; i < packs.length; i++) await fsp.rename(packs[i]!, packs[i - 1]!);
    await fsp.rename(tmp, packs[packs.length - 1]!);
    const r = await run(['restore', snapA, '--to', path.join(s.dir, `out${n}.img`), '--repo', repo], env);
    assert.equal(r.code, 3, r.stderr);
    oneLine(r.stderr);
    const names = packs.map((f) => path.relative(repo, f));
    assert.ok(names.some((x) => r.stderr.includes(x)), `stderr names neither ${names.join(' nor ')}: ${r.stderr}`);
  });

  it('an index file copied over another is an integrity error naming it', async () => {
    const { repo, env } = await copy();
    const idx = await listFiles(path.join(repo, 'index'));
    assert.ok(idx.length >= 2, `need two index files, have ${idx.length}`);
    await fsp.copyFile(idx[0]!, idx[1]!);
    const r = await run(['snapshots', '--repo', repo], env);
    assert.equal(r.code, 3, `a swapped index file was accepted:\n${r.stdout}${r.stderr}`);
    oneLine(r.stderr);
    assert.match(r.stderr, new RegExp(path.relative(repo, idx[1]!)));
  });

  for (const [label, kdf] of [
    ['scrypt N = 2^40', { name: 'scrypt', N: 2 ** 40, r: 8, p: 1 }],
    ['scrypt N = 2^30 (1 TiB of memory)', { name: 'scrypt', N: 2 ** 30, r: 8, p: 1 }],
    ['scrypt p = 2^20 (hours of work)', { name: 'scrypt', N: 2 ** 14, r: 8, p: 2 ** 20 }],
    ['argon2id m = 2^32 KiB (4 TiB of memory)', { name: 'argon2id', m: 2 ** 32, t: 3, p: 1 }],
    ['argon2id t = 2^30 passes', { name: 'argon2id', m: 65536, t: 2 ** 30, p: 1 }],
  ] as const) {
    it(`a key file with ${label} is refused at once with a clear error`, { timeout: 30_000 }, async () => {
      const { repo, env } = await copy();
      const dir = path.join(repo, 'keys');
      for (const k of await fsp.readdir(dir)) {
        const json = JSON.parse(await fsp.readFile(path.join(dir, k), 'utf8'));
        json.kdf = { ...kdf, salt: json.kdf.salt };
        await fsp.writeFile(path.join(dir, k), JSON.stringify(json));
      }
      const r = await run(['snapshots', '--repo', repo], env);
      assert.equal(r.code, 1, r.stderr);
      oneLine(r.stderr);
      assert.match(r.stderr, /key file keys\/[0-9a-f]{32}: .*(scrypt|argon2id|KDF).*(limit|bound|too)/i);
    });
  }
});
