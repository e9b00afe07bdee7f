/**
 * `pilotlight drill` boots a disk it backed up, under qemu-system-x86_64 with TCG
 * (no KVM needed): a generated boot sector (test/support/boot-disk.ts) that reads
 * sectors from several chunks through BIOS int 13h and prints their checksum on
 * COM1. Success when the checksum the test computed appears; failure when the
 * guest prints anything else, and when a chunk of the backup is damaged.
 */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch } from '../support/cli.js';
import { biggestDataPack, flipByte } from '../support/damage.js';
import { makeBootDisk } from '../support/boot-disk.js';

describe('drill', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  let marker: string;
  const base = () => ['--vm', 'boot', '--accel', 'tcg', '--timeout', '60', '--memory', '64', '--repo', repo];

  before(async () => {
    s = await scratch('drill');
    repo = path.join(s.dir, 'repo');
    const image = path.join(s.dir, 'boot.img');
    marker = (await makeBootDisk(image)).marker;
    await ok(['init', '--repo', repo], s.env);
    await ok(['backup', 'file', image, '--vm', 'boot', '--repo', repo], s.env);
  });

  after(async () => s.cleanup());

  it('boots the backup on NVMe (the default bus) and finds the checksum on the serial console', async () => {
    const r = await run(['drill', 'latest', ...base(), '--expect', marker.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), '--json'], s.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, true);
    assert.equal(report.accel, 'tcg');
    assert.equal(report.firmware, 'bios');
    assert.deepEqual(report.booted, ['nvme']);
    assert.deepEqual(report.failed, []);
    assert.equal(report.attempts[0].marker, marker);
    assert.equal(typeof report.attempts[0].timeToMarkerMs, 'number');
    assert.ok(report.attempts[0].consoleTail.includes(marker));
  });

  it('boots on virtio, scsi and ide too, and says which bus booted', async () => {
    const r = await run(['drill', ...base(), '--bus', 'virtio,scsi,ide', '--expect', marker, '--json'], s.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.deepEqual(JSON.parse(r.stdout).booted, ['virtio', 'scsi', 'ide']);
  });

  it('fails, exit 4, when the console never shows the expected text', async () => {
    const r = await run(['drill', ...base(), '--expect', 'sum=XXXX', '--json'], s.env);
    assert.equal(r.code, 4, r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, false);
    assert.deepEqual(report.failed, ['nvme']);
    assert.match(report.attempts[0].reason, /qemu exited .* before/);
    assert.ok(report.attempts[0].consoleTail.includes(marker), 'the tail shows what the guest printed');
  });

  it('fails when a chunk of the backup is damaged: the guest gets a read error, never wrong bytes', async () => {
    // damage the last blob of the data pack (the chunk of the last sector the boot sector reads)
    const { file, size } = await biggestDataPack(repo);
    // the pack ends with the sealed trailer, its u32le length, and (format 2) the magic "PLP2"
    const tail = Buffer.alloc(8);
    const fh = await fsp.open(file, 'r');
    await fh.read(tail, 0, 8, size - 8);
    await fh.close();
    const v2 = tail.subarray(4).toString('latin1') === 'PLP2';
    const trailer = v2 ? tail.readUInt32LE(0) : tail.readUInt32LE(4);
    await flipByte(file, size - (v2 ? 8 : 4) - trailer - 20, 0x40);
    const r = await run(['drill', ...base(), '--expect', marker, '--json'], s.env);
    assert.equal(r.code, 4, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.ok, false);
    assert.match(report.attempts[0].consoleTail, /PILOTLIGHT-DRILL read error/);
    assert.doesNotMatch(report.attempts[0].consoleTail, /sum=/);
  });

  it('bad input is a one-line error', async () => {
    const r = await run(['drill', ...base(), '--bus', 'usb'], s.env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--bus takes nvme, virtio, scsi, ide/);
  });
});
