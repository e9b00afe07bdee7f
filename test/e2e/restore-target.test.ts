/**
 * Restore targets: written atomically (a killed `restore --force` leaves the old
 * image whole), 0600 unless --mode, sparse at 4 KiB granularity, and recorded in
 * a sidecar so that `--since` refuses a target that does not hold the base
 * snapshot, was written since, or whose last update did not finish.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch, start } from '../support/cli.js';
import { allocatedBytes, changeList, makeImage, mutate, sameBytes } from '../support/images.js';

const MiB = 1 << 20;
const KiB = 1024;
const SIZE = 160 * MiB;

async function sha(file: string): Promise<string> {
  return createHash('sha256').update(await fsp.readFile(file)).digest('hex');
}

/** Starts the CLI, waits until `ready()` is true, SIGKILLs it; returns how it ended (null: it finished first). */
async function killWhen(args: string[], env: Record<string, string>, ready: () => Promise<boolean>): Promise<NodeJS.Signals | null> {
  const child = start(args, env);
  const ended = new Promise<NodeJS.Signals | null>((resolve) => child.on('close', (_code, signal) => resolve(signal)));
  let done = false;
  void ended.then(() => (done = true));
  while (!done) {
    if (await ready().catch(() => false)) {
      child.kill('SIGKILL');
      break;
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return ended;
}

describe('restore targets', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let img: string;
  let snapA: string;
  let snapB: string;
  let snapC: string;
  let imgA: string;
  let imgB: string;

  before(async () => {
    s = await scratch('target');
    repo = path.join(s.dir, 'repo');
    img = path.join(s.dir, 'disk.img');
    // Chunks that are partly zero: 4 KiB of data, 8 KiB of zeros, 4 KiB of data, and so on.
    const partly = Array.from({ length: 64 }, (_, i) => [
      { offset: 8 * MiB + i * 64 * KiB, length: 4 * KiB, kind: 'text' as const },
      { offset: 8 * MiB + i * 64 * KiB + 12 * KiB, length: 4 * KiB, kind: 'random' as const },
    ]).flat();
    await makeImage(img, SIZE, [{ offset: 0, length: 2 * MiB, kind: 'text' }, ...partly, { offset: 32 * MiB, length: 96 * MiB, kind: 'random' }]);
    await ok(['init', '--repo', repo], s.env);
    snapA = (await ok(['backup', 'file', img, '--repo', repo, '--vm', 'v', '--json'], s.env)).json.snapshot;
    imgA = path.join(s.dir, 'a.img');
    await fsp.copyFile(img, imgA);
    // B rewrites most of the random region: a --since update from A has 64 MiB to write.
    const change = [{ offset: 40 * MiB, length: 64 * MiB }];
    await mutate(img, change, 7);
    const cl = path.join(s.dir, 'b.changes');
    await fsp.writeFile(cl, changeList(change));
    snapB = (await ok(['backup', 'file', img, '--changed-extents', cl, '--repo', repo, '--vm', 'v', '--json'], s.env)).json.snapshot;
    imgB = path.join(s.dir, 'b.img');
    await fsp.copyFile(img, imgB);
    await mutate(img, [{ offset: 0, length: 4096 }], 8);
    await fsp.writeFile(cl, changeList([{ offset: 0, length: 4096 }]));
    snapC = (await ok(['backup', 'file', img, '--changed-extents', cl, '--repo', repo, '--vm', 'v', '--json'], s.env)).json.snapshot;
  });

  after(async () => s.cleanup());

  it('a restored file is 0600 whatever the umask, --mode sets other bits, and a sidecar records what it holds', async () => {
    const out = path.join(s.dir, 'mode.img');
    await ok(['restore', snapA, '--to', out, '--repo', repo], s.env);
    assert.equal((await fsp.stat(out)).mode & 0o777, 0o600);
    const rec = JSON.parse(await fsp.readFile(`${out}.pilotlight`, 'utf8'));
    assert.equal(rec.snapshot, snapA);
    assert.equal(rec.state, 'complete');
    assert.equal(rec.disk, 0);
    const out2 = path.join(s.dir, 'mode2.img');
    await ok(['restore', snapA, '--to', out2, '--repo', repo, '--mode', '0640'], s.env);
    assert.equal((await fsp.stat(out2)).mode & 0o777, 0o640);
    const bad = await run(['restore', snapA, '--to', path.join(s.dir, 'mode3.img'), '--repo', repo, '--mode', 'rw'], s.env);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /--mode takes octal/);
  });

  it('is byte-identical and no less sparse than the source at 4 KiB granularity', async () => {
    const out = path.join(s.dir, 'sparse.img');
    await ok(['restore', snapA, '--to', out, '--repo', repo], s.env);
    assert.ok(await sameBytes(imgA, out), 'restored image differs');
    const src = await allocatedBytes(imgA);
    const got = await allocatedBytes(out);
    assert.ok(got <= src, `restored image has ${got} bytes allocated, the source ${src}: zero 4 KiB blocks inside chunks were written`);
  });

  it('SIGKILL during restore --force leaves the old image byte-identical, and the next restore sweeps the temporary file', async () => {
    const out = path.join(s.dir, 'standby.img');
    await ok(['restore', snapA, '--to', out, '--repo', repo], s.env);
    const before = await sha(out);
    const tmpOf = async () => (await fsp.readdir(s.dir)).filter((n) => n.startsWith('.standby.img.restore-'));
    const signal = await killWhen(['restore', snapB, '--to', out, '--repo', repo, '--force'], s.env, async () => {
      const t = await tmpOf();
      return t.length > 0 && (await allocatedBytes(path.join(s.dir, t[0]!))) > 8 * MiB;
    });
    assert.equal(signal, 'SIGKILL', 'the restore finished before it could be killed: the test proved nothing');
    assert.equal(await sha(out), before, 'the old image changed');
    assert.equal((await tmpOf()).length, 1, 'the killed restore left its temporary file');
    await ok(['restore', snapB, '--to', out, '--repo', repo, '--force'], s.env);
    assert.ok(await sameBytes(imgB, out));
    assert.deepEqual(await tmpOf(), []);
  });

  it('--since updates a target that holds the base, and records the new snapshot', async () => {
    const out = path.join(s.dir, 'inc.img');
    await ok(['restore', snapA, '--to', out, '--repo', repo], s.env);
    const r = (await ok(['restore', snapB, '--to', out, '--since', snapA, '--repo', repo, '--json'], s.env)).json;
    assert.ok(r.bytesWritten <= 64 * MiB + 64 * KiB, `wrote ${r.bytesWritten}`);
    assert.ok(await sameBytes(imgB, out));
    assert.equal(JSON.parse(await fsp.readFile(`${out}.pilotlight`, 'utf8')).snapshot, snapB);
    // and again from B to C
    await ok(['restore', snapC, '--to', out, '--since', snapB, '--repo', repo], s.env);
    assert.ok(await sameBytes(img, out));
  });

  it('--since refuses a target that holds another snapshot', async () => {
    const out = path.join(s.dir, 'wrongbase.img');
    await ok(['restore', snapA, '--to', out, '--repo', repo], s.env);
    const before = await sha(out);
    const r = await run(['restore', snapC, '--to', out, '--since', snapB, '--repo', repo], s.env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`holds snapshot ${snapA} disk 0, not snapshot ${snapB}.*--since ${snapA}`));
    assert.equal(await sha(out), before, 'a refused update wrote to the target');
  });

  it('--since refuses a target that was written since, even with its modification time set back', async () => {
    const out = path.join(s.dir, 'booted.img');
    await ok(['restore', snapA, '--to', out, '--repo', repo], s.env);
    const st = await fsp.stat(out);
    const fh = await fsp.open(out, 'r+');
    await fh.write(Buffer.from('booted'), 0, 6, 100 * MiB);
    await fh.close();
    await fsp.utimes(out, st.atime, st.mtime);
    const r = await run(['restore', snapB, '--to', out, '--since', snapA, '--repo', repo], s.env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /no longer holds snapshot .* (changed|written) since .*restore in full/);
  });

  it('--since refuses a target with no record, and one whose last update was killed', async () => {
    const out = path.join(s.dir, 'killed.img');
    await fsp.copyFile(imgA, out);
    const none = await run(['restore', snapB, '--to', out, '--since', snapA, '--repo', repo], s.env);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /has no record of what it holds/);

    await fsp.rm(out);
    await ok(['restore', snapA, '--to', out, '--repo', repo], s.env);
    const rec = `${out}.pilotlight`;
    const signal = await killWhen(['restore', snapB, '--to', out, '--since', snapA, '--repo', repo], s.env, async () =>
      JSON.parse(await fsp.readFile(rec, 'utf8')).state === 'updating',
    );
    assert.equal(signal, 'SIGKILL', 'the update finished before it could be killed: the test proved nothing');
    const r = await run(['restore', snapB, '--to', out, '--since', snapA, '--repo', repo], s.env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`last --since update of .* \\(from ${snapA} to ${snapB}\\) did not finish.*restore in full`));
    // the way out the message gives
    await ok(['restore', snapB, '--to', out, '--repo', repo, '--force'], s.env);
    assert.ok(await sameBytes(imgB, out));
  });
});
