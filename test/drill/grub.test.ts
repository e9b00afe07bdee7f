/**
 * A more realistic drill than the hand-written boot sector: a GRUB rescue image made
 * with grub-mkrescue (GRUB's boot.img, core.img, modules and an ISO 9660 file system,
 * all read through BIOS int 13h from the NBD export), whose grub.cfg prints a file of
 * the image (a random token, so nothing but a real boot can produce it) on COM1.
 * Backed up with pilotlight and booted by `drill` on NVMe under TCG, with BIOS
 * (SeaBIOS) and with UEFI (OVMF: grub-mkrescue's image carries an EFI system partition).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { ok, run, scratch } from '../support/cli.js';

describe('drill: a grub-mkrescue image', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  let repo: string;
  const token = `token-${randomBytes(6).toString('hex')}`;

  before(async () => {
    s = await scratch('drill-grub');
    repo = path.join(s.dir, 'repo');
    const tree = path.join(s.dir, 'tree');
    await fsp.mkdir(path.join(tree, 'boot', 'grub'), { recursive: true });
    await fsp.writeFile(path.join(tree, 'token.txt'), `${token}\n`);
    await fsp.writeFile(
      path.join(tree, 'boot', 'grub', 'grub.cfg'),
      ['serial --unit=0 --speed=115200', 'terminal_input serial', 'terminal_output serial', 'echo "PILOTLIGHT-GRUB from $root"', 'cat /token.txt', 'sleep 600', ''].join('\n'),
    );
    const iso = path.join(s.dir, 'grub.img');
    await promisify(execFile)('grub-mkrescue', ['-o', iso, tree], { timeout: 120_000 });
    await ok(['init', '--repo', repo], s.env);
    await ok(['backup', 'file', iso, '--vm', 'grub', '--repo', repo], s.env);
  });

  after(async () => s.cleanup());

  it('boots on NVMe and GRUB prints the token it read from the backed-up image', async () => {
    const r = await run(['drill', '--vm', 'grub', '--accel', 'tcg', '--memory', '128', '--timeout', '180', '--expect', token, '--json', '--repo', repo], s.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout);
    assert.deepEqual(report.booted, ['nvme']);
    assert.match(report.attempts[0].consoleTail, /PILOTLIGHT-GRUB from hd0/);
    assert.ok(report.attempts[0].consoleTail.includes(token));
  });

  it('boots under UEFI (OVMF) with --firmware efi: the firmware loads GRUB from the NVMe export', async () => {
    const r = await run(['drill', '--vm', 'grub', '--firmware', 'efi', '--accel', 'tcg', '--memory', '256', '--timeout', '240', '--expect', token, '--json', '--repo', repo], s.env);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.firmware, 'efi');
    assert.deepEqual(report.booted, ['nvme']);
    const tail: string = report.attempts[0].consoleTail;
    assert.match(tail, /BdsDxe: (loading|starting) Boot\d+ "UEFI QEMU NVMe/, 'OVMF chose the NVMe disk');
    assert.ok(tail.includes(token));
  });
});
