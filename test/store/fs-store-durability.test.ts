/**
 * FsStore: new directories are made durable before put returns, and the temporary files
 * of writers that were killed are removed, never those of a live writer.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { it } from 'node:test';
import { FsStore, tempOwner } from '../../src/store/fs-store.js';

const FS_STORE_JS = fileURLToPath(new URL('../../src/store/fs-store.js', import.meta.url));

async function tempFiles(dir: string): Promise<string[]> {
  return (await fsp.readdir(dir).catch(() => [] as string[])).filter((n) => n.startsWith('.tmp-'));
}

it('fs: put into new directories calls fsync on every new directory and its parent up to the root (recorded through the injected sync hook; a power loss is not simulated)', async () => {
  const base = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-fs-dur-'));
  try {
    const root = path.join(base, 'repo');
    const synced: string[] = [];
    const store = new FsStore(root, { syncDir: async (d, real) => { synced.push(d); await real(d); } });
    await store.put('data/ab/abcdef', Buffer.from('pack bytes'));
    // data/ and data/ab/ are new: their entries live in root and data/, and the file's in data/ab/
    for (const d of [path.join(root, 'data', 'ab'), path.join(root, 'data'), root]) {
      assert.ok(synced.includes(d), `${d} was not fsynced (synced: ${synced.join(', ')})`);
    }
    // root itself was new too: its entry lives in base
    assert.ok(synced.includes(base), `${base} was not fsynced`);
    synced.length = 0;
    await store.put('data/ab/abcdef2', Buffer.from('more'));
    assert.deepEqual(synced, [path.join(root, 'data', 'ab')], 'an existing directory: only it is synced');
  } finally {
    await fsp.rm(base, { recursive: true, force: true });
  }
});

it('fs: a writer killed with SIGKILL mid-put leaves a temp file; it stays while the writer lives and is swept once it is dead', async () => {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-fs-kill-'));
  const script = path.join(root, '..', `${path.basename(root)}-writer.mjs`);
  try {
    await new FsStore(root).put('data/cd/existing', Buffer.from('x'));
    // The child is a real process doing a real put; the injected file-sync hook holds it between
    // writing the temp file and renaming it, so that the kill lands mid-put every time.
    await fsp.writeFile(
      script,
      `import { FsStore } from ${JSON.stringify(FS_STORE_JS)};
       const store = new FsStore(process.argv[2], { syncFile: async () => { setInterval(() => {}, 60000); process.stdout.write('writing\\n'); await new Promise(() => {}); } });
       await store.put('data/cd/cdcdcd', Buffer.alloc(1 << 20, 7));`,
    );
    const child = spawn(process.execPath, [script, root], { stdio: ['ignore', 'pipe', 'inherit'] });
    const exited = new Promise((r) => child.on('exit', r));
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d) => /writing/.test(String(d)) && resolve());
      child.on('exit', () => reject(new Error('writer exited early')));
    });
    const dir = path.join(root, 'data', 'cd');
    const temps = await tempFiles(dir);
    assert.equal(temps.length, 1, 'the writer has its temp file');
    assert.equal(tempOwner(temps[0]!)?.pid, child.pid, 'the temp names its writer');

    assert.equal(child.exitCode, null, 'the writer is alive, mid-put');
    const sweeper = new FsStore(root);
    assert.equal(await sweeper.sweepTemp(), 0, 'a live writer`s temp is never removed');
    await sweeper.put('data/cd/other', Buffer.from('y'));
    assert.deepEqual(await tempFiles(dir), temps, 'nor by a put into its directory');

    assert.equal(child.exitCode, null, 'the writer is still alive');
    child.kill('SIGKILL');
    await exited;
    // a fresh store (another process would be the same): the first put into the directory sweeps it
    await new FsStore(root).put('data/cd/third', Buffer.from('z'));
    assert.deepEqual(await tempFiles(dir), [], 'the dead writer`s temp is gone');
    const names: string[] = [];
    for await (const b of sweeper.list('data/')) names.push(b.name);
    assert.deepEqual(names.sort(), ['data/cd/existing', 'data/cd/other', 'data/cd/third']);
  } finally {
    await fsp.rm(root, { recursive: true, force: true });
    await fsp.rm(script, { force: true });
  }
});

it('fs: temps of another host (pid unknowable) or of the old naming are removed only once older than the safe age', async () => {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-fs-age-'));
  try {
    const store = new FsStore(root);
    await store.put('data/ef/efef', Buffer.from('x'));
    const dir = path.join(root, 'data', 'ef');
    const young = path.join(dir, '.tmp-00000000-1-aaaaaaaaaaaaaaaa');
    const old = path.join(dir, '.tmp-00000000-1-bbbbbbbbbbbbbbbb');
    const legacy = path.join(dir, '.tmp-cccccccccccccccc');
    for (const f of [young, old, legacy]) await fsp.writeFile(f, 'half');
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await fsp.utimes(old, twoHoursAgo, twoHoursAgo);
    await fsp.utimes(legacy, twoHoursAgo, twoHoursAgo);
    assert.equal(await store.sweepTemp(), 2);
    assert.deepEqual(await tempFiles(dir), [path.basename(young)]);
  } finally {
    await fsp.rm(root, { recursive: true, force: true });
  }
});
