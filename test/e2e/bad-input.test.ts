/**
 * Bad input gets a clear one-line error, a non-zero exit, and leaves the
 * repository exactly as it was.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { assertCleanFailure, ok, run, scratch } from '../support/cli.js';
import { fingerprint } from '../support/files.js';
import { makeImage } from '../support/images.js';

const MiB = 1 << 20;

describe('bad input', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let img: string;
  let print: Map<string, string>;

  before(async () => {
    s = await scratch('bad');
    repo = path.join(s.dir, 'repo');
    img = path.join(s.dir, 'disk.img');
    await makeImage(img, 4 * MiB, [{ offset: 0, length: MiB, kind: 'random' }]);
    await ok(['init', '--repo', repo], s.env);
    await ok(['backup', 'file', img, '--repo', repo, '--vm', 'v1'], s.env);
    print = await fingerprint(repo);
  });

  after(async () => s.cleanup());

  const unchanged = async () => assert.deepEqual(await fingerprint(repo), print, 'the repository changed');

  it('a missing image', async () => {
    assertCleanFailure(await run(['backup', 'file', path.join(s.dir, 'nope.img'), '--repo', repo, '--vm', 'v1'], s.env), /cannot open image .*no such file/);
    await unchanged();
  });

  it('an image that is a directory', async () => {
    assertCleanFailure(await run(['backup', 'file', s.dir, '--repo', repo, '--vm', 'v1'], s.env), /neither a regular file nor a block device/);
    await unchanged();
  });

  it('an extent past the end of the disk', async () => {
    const cl = path.join(s.dir, 'past.txt');
    await fsp.writeFile(cl, `0 65536\n${4 * MiB - 100} 200\n`);
    assertCleanFailure(
      await run(['backup', 'file', img, '--changed-extents', cl, '--repo', repo, '--vm', 'v1'], s.env),
      /past\.txt:2: .*past the end of the disk/,
    );
    await unchanged();
  });

  it('a malformed change list line', async () => {
    const cl = path.join(s.dir, 'bad.txt');
    await fsp.writeFile(cl, '0 65536\n65536, 4096\n');
    assertCleanFailure(await run(['backup', 'file', img, '--changed-extents', cl, '--repo', repo, '--vm', 'v1'], s.env), /bad\.txt:2: expected "offset length"/);
    await unchanged();
  });

  it('a repository that does not exist', async () => {
    assertCleanFailure(await run(['snapshots', '--repo', path.join(s.dir, 'missing')], s.env), /not a pilotlight repository .*pilotlight init/);
  });

  it('a directory that is not a pilotlight repository', async () => {
    const other = path.join(s.dir, 'other');
    await fsp.mkdir(other);
    await fsp.writeFile(path.join(other, 'config'), '{"hello": "world"}');
    assertCleanFailure(await run(['backup', 'file', img, '--repo', other, '--vm', 'v1'], s.env), /is not a pilotlight repository/);
    assert.deepEqual(await fsp.readdir(other), ['config']);
  });

  it('init refuses a non-empty directory', async () => {
    assertCleanFailure(await run(['init', '--repo', repo], s.env), /already holds a pilotlight repository/);
    await unchanged();
  });

  it('a newer repository format version', async () => {
    const newer = path.join(s.dir, 'newer');
    await fsp.cp(repo, newer, { recursive: true });
    const cfg = JSON.parse(await fsp.readFile(path.join(newer, 'config'), 'utf8'));
    cfg.version = 99;
    await fsp.writeFile(path.join(newer, 'config'), JSON.stringify(cfg));
    assertCleanFailure(await run(['backup', 'file', img, '--repo', newer, '--vm', 'v1'], s.env), /format version 99, newer than .* upgrade pilotlight/);
  });

  it('a wrong password', async () => {
    assertCleanFailure(await run(['snapshots', '--repo', repo], { ...s.env, PILOTLIGHT_PASSWORD: 'wrong' }), /wrong password/);
    assertCleanFailure(await run(['backup', 'file', img, '--repo', repo, '--vm', 'v1'], { ...s.env, PILOTLIGHT_PASSWORD: 'wrong' }), /wrong password/);
    await unchanged();
  });

  it('no password for an encrypted repository', async () => {
    assertCleanFailure(await run(['snapshots', '--repo', repo], { ...s.env, PILOTLIGHT_PASSWORD: undefined }), /encrypted: set PILOTLIGHT_PASSWORD or pass --password-file/);
  });

  it('--password-file works, and a missing one is a clear error', async () => {
    const pf = path.join(s.dir, 'pw');
    await fsp.writeFile(pf, `${s.env.PILOTLIGHT_PASSWORD}\n`);
    await ok(['snapshots', '--repo', repo, '--password-file', pf], { ...s.env, PILOTLIGHT_PASSWORD: undefined });
    assertCleanFailure(await run(['snapshots', '--repo', repo, '--password-file', pf + '.missing'], s.env), /cannot read password file/);
  });

  it('an unknown snapshot, and latest without --vm', async () => {
    const out = path.join(s.dir, 'out.img');
    assertCleanFailure(await run(['restore', 'deadbeef', '--to', out, '--repo', repo], s.env), /no snapshot deadbeef/);
    assertCleanFailure(await run(['restore', 'latest', '--to', out, '--repo', repo], s.env), /'latest' needs --vm/);
    assertCleanFailure(await run(['restore', 'latest', '--vm', 'v1', '--disk', '3', '--to', out, '--repo', repo], s.env), /no disk 3/);
    await assert.rejects(fsp.stat(out));
  });

  it('a change-list count that does not match the images', async () => {
    const cl = path.join(s.dir, 'one.txt');
    await fsp.writeFile(cl, '0 10\n');
    assertCleanFailure(await run(['backup', 'file', img, img, '--changed-extents', cl, '--repo', repo, '--vm', 'v1'], s.env), /give one per image/);
    await unchanged();
  });
});
