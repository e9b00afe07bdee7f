/**
 * S3Store's spool (openAppend): the local file a data pack is written to before it is
 * sent. A writer killed mid-spool leaves its file; the next writer's first openAppend
 * removes it. No S3 request is made before a commit, so no server is needed here.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { it } from 'node:test';
import { S3Store } from '../../src/store/s3-store.js';
import { killWhenReady } from '../support/killed-writer.js';

const settings = (spoolDir: string) => ({
  bucket: 'spool-test',
  endpoint: 'http://127.0.0.1:9', // never contacted: nothing is committed
  credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
  spoolDir,
});

it('S3 spool: a writer killed (SIGKILL) mid-spool leaves a 0600 file that the next writer removes; abort removes its own', async () => {
  const spoolDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-spool-'));
  try {
    const storeModule = new URL('../../src/store/s3-store.js', import.meta.url).href;
    const pid = await killWhenReady(
      `const { S3Store } = await import(${JSON.stringify(storeModule)});
       const a = await new S3Store(${JSON.stringify(settings(spoolDir))}).openAppend('data/');
       await a.append([Buffer.alloc(2 << 20, 3)]);`,
      'spooled',
    );

    const left = await fsp.readdir(spoolDir);
    assert.equal(left.length, 1);
    assert.match(left[0]!, new RegExp(`^pilotlight-spool-${pid}-[0-9a-f]+$`));
    const st = await fsp.stat(path.join(spoolDir, left[0]!));
    assert.equal(st.size, 2 << 20);
    assert.equal(st.mode & 0o777, 0o600);

    const store = new S3Store(settings(spoolDir));
    const mine = await store.openAppend('data/');
    assert.deepEqual(
      (await fsp.readdir(spoolDir)).map((n) => n.split('-')[2]),
      [String(process.pid)],
      "the dead writer's spool is gone, this one's is there",
    );
    await mine.append([Buffer.from('x')]);
    await mine.abort();
    assert.deepEqual(await fsp.readdir(spoolDir), []);
    await store.close();
  } finally {
    await fsp.rm(spoolDir, { recursive: true, force: true });
  }
});

it('S3 spool directory: PILOTLIGHT_SPOOL_DIR names it; openStore refuses one that is not a directory, before any request', async () => {
  const spoolDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-spool-env-'));
  const saved = process.env.PILOTLIGHT_SPOOL_DIR;
  try {
    process.env.PILOTLIGHT_SPOOL_DIR = spoolDir;
    const { spoolDir: _none, ...noSpoolDir } = settings(spoolDir);
    const store = new S3Store(noSpoolDir);
    const a = await store.openAppend('data/');
    await a.append([Buffer.from('abc')]);
    assert.deepEqual((await fsp.readdir(spoolDir)).length, 1, 'the spool file is in the directory the environment names');
    await a.abort();
    await store.close();

    const { openStore } = await import('../../src/store/open-store.js');
    const file = path.join(spoolDir, 'a-file');
    await fsp.writeFile(file, '');
    for (const bad of [file, path.join(spoolDir, 'missing')]) {
      process.env.PILOTLIGHT_SPOOL_DIR = bad;
      // the endpoint is never contacted: the directory is checked first
      await assert.rejects(openStore('s3://spool-test/p', { s3Endpoint: 'http://127.0.0.1:9' }), new RegExp(`spool directory ${bad} is not a directory`));
    }
  } finally {
    if (saved === undefined) delete process.env.PILOTLIGHT_SPOOL_DIR;
    else process.env.PILOTLIGHT_SPOOL_DIR = saved;
    await fsp.rm(spoolDir, { recursive: true, force: true });
  }
});
