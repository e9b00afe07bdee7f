/**
 * Finding a VM's latest snapshot costs a constant number of requests whatever the
 * other VMs hold (format 2: records per VM); in format 1 it read every record.
 * Requests are counted by the store's own meter (a real FsStore), not timed.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, it } from 'node:test';
import { Repository } from '../../src/repo/repository.js';
import { SnapshotCatalog, SnapshotRecord, newSnapshotId } from '../../src/snapshot/snapshot-record.js';
import { FsStore } from '../../src/store/fs-store.js';
import { MeteredStore } from '../../src/store/metered-store.js';

let dir: string;
before(async () => {
  dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pl-catalog-'));
});
after(async () => fsp.rm(dir, { recursive: true, force: true }));

function record(vm: string, t: number): SnapshotRecord {
  const time = new Date(Date.UTC(2026, 0, 1) + t * 1000);
  return {
    version: 2,
    id: newSnapshotId(time),
    vm,
    time: time.toISOString(),
    parent: null,
    host: 'test',
    source: 'file',
    disks: [],
    stats: { bytesScanned: 0, bytesNew: 0, bytesStored: 0, chunksNew: 0, chunksReused: 0, chunksZero: 0, durationMs: 0 },
  };
}

/** Requests of `latest('target')` from a fresh process's point of view (cold record cache). */
async function latestRequests(version: 1 | 2, others: number): Promise<{ list: number; get: number; latest: string }> {
  const loc = path.join(dir, `v${version}-${others}`);
  const pw = { password: 'pw' };
  const init = await Repository.init(new FsStore(loc), { encrypted: true, version, ...pw });
  await init.close();
  const w = await Repository.open(new FsStore(loc), pw, path.join(dir, `cache-w-${version}-${others}`));
  const cw = new SnapshotCatalog(w);
  for (let i = 0; i < others; i++) await cw.save(record(`vm-${i % 20}`, i));
  const last = record('target', others + 2);
  await cw.save(record('target', others + 1));
  await cw.save(last);
  await w.close();
  const store = new MeteredStore(new FsStore(loc));
  const r = await Repository.open(store, pw, path.join(dir, `cache-r-${version}-${others}`));
  try {
    await r.cache();
    store.resetMetrics();
    const got = await new SnapshotCatalog(r).latest('target');
    const m = store.metrics();
    return { list: m.list, get: m.get, latest: got!.id === last.id ? 'ok' : got!.id };
  } finally {
    await r.close();
  }
}

it('format 2: latest(vm) lists one prefix and reads only that vm’s records, however many others exist', async () => {
  const few = await latestRequests(2, 0);
  const many = await latestRequests(2, 300);
  assert.equal(few.latest, 'ok');
  assert.equal(many.latest, 'ok');
  assert.deepEqual({ list: many.list, get: many.get }, { list: few.list, get: few.get });
  assert.equal(many.get, 2);
});

it('format 1 (for comparison): latest(vm) reads every record of every vm', async () => {
  const many = await latestRequests(1, 300);
  assert.equal(many.latest, 'ok');
  assert.equal(many.get, 302);
});
