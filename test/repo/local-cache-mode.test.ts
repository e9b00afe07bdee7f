/** The local cache holds every chunk id and every snapshot record's plaintext: only its owner may read it. */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { it } from 'node:test';
import { LocalCache } from '../../src/repo/local-cache.js';

const mode = async (p: string) => (await fsp.stat(p)).mode & 0o777;

it('local cache: a new cache directory (and the directories made for it) are 0700 under umask 022', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-cache-mode-'));
  const old = process.umask(0o022);
  try {
    const root = path.join(dir, 'fresh', 'pilotlight');
    const cache = await LocalCache.open('0123456789abcdef0123456789abcdef', root);
    await cache.close();
    assert.equal(await mode(root), 0o700);
    assert.equal(await mode(path.join(root, '0123456789abcdef0123456789abcdef')), 0o700);
    assert.equal(await mode(path.join(root, '0123456789abcdef0123456789abcdef', 'cache')), 0o700);
  } finally {
    process.umask(old);
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

it('local cache: an existing world-readable cache directory of a repository is tightened to 0700', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-cache-mode-'));
  try {
    const repoDir = path.join(dir, 'ffffffffffffffffffffffffffffffff');
    await fsp.mkdir(path.join(repoDir, 'cache'), { recursive: true, mode: 0o755 });
    await fsp.chmod(repoDir, 0o755);
    await fsp.chmod(path.join(repoDir, 'cache'), 0o755);
    const cache = await LocalCache.open('ffffffffffffffffffffffffffffffff', dir);
    await cache.close();
    assert.equal(await mode(repoDir), 0o700);
    assert.equal(await mode(path.join(repoDir, 'cache')), 0o700);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
