import { spawn } from 'node:child_process';
import { constants as fsc, promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { UserError } from '../repo/errors.js';
import { Repository } from '../repo/repository.js';
import { SnapshotRecord } from '../snapshot/snapshot-record.js';
import { serveSnapshot } from '../nbd/serve-snapshot.js';

export const BUSES = ['nvme', 'virtio', 'scsi', 'ide'] as const;
export type Bus = (typeof BUSES)[number];
export type Firmware = 'bios' | 'efi';
export type Accel = 'auto' | 'kvm' | 'tcg';

/** A login prompt: what a booted Linux or BSD prints on its serial console. */
export const DEFAULT_EXPECT = /login:/i;

export interface DrillOptions {
  /** Disk to boot from (default 0); the other disks of the snapshot are attached too. */
  disk?: number;
  expect?: RegExp;
  timeoutMs?: number;
  /** Buses to try, in order (default nvme): each is a separate boot. */
  buses?: Bus[];
  firmware?: Firmware;
  accel?: Accel;
  memoryMiB?: number;
  /** The qemu binary (default qemu-system-x86_64 on PATH). */
  qemu?: string;
  /** Bytes of console kept for the report. */
  tailBytes?: number;
  log?: (line: string) => void;
}

export interface BootAttempt {
  bus: Bus;
  ok: boolean;
  /** Milliseconds from qemu's start to the marker, when it appeared. */
  timeToMarkerMs: number | null;
  marker: string | null;
  /** Why it failed: timeout, qemu's exit, ... */
  reason: string | null;
  qemuExit: number | string | null;
  consoleTail: string;
}

export interface DrillReport {
  ok: boolean;
  snapshot: string;
  vm: string;
  disk: number;
  firmware: Firmware;
  accel: 'kvm' | 'tcg';
  expect: string;
  /** The buses that booted and those that did not. */
  booted: Bus[];
  failed: Bus[];
  attempts: BootAttempt[];
  durationMs: number;
}

/** EFI firmware images Debian's ovmf package installs (code, vars template). */
const OVMF = [
  ['/usr/share/OVMF/OVMF_CODE_4M.fd', '/usr/share/OVMF/OVMF_VARS_4M.fd'],
  ['/usr/share/OVMF/OVMF_CODE.fd', '/usr/share/OVMF/OVMF_VARS.fd'],
] as const;

async function kvmUsable(): Promise<boolean> {
  try {
    await fsp.access('/dev/kvm', fsc.R_OK | fsc.W_OK);
    return true;
  } catch {
    return false;
  }
}

async function ovmf(): Promise<readonly [string, string]> {
  for (const pair of OVMF) {
    if (await fsp.stat(pair[0]).catch(() => null)) return pair;
  }
  throw new UserError('--firmware efi needs the OVMF firmware: apt-get install ovmf');
}

function busDevices(bus: Bus, drive: string, bootindex: number | null, n: number): string[] {
  const boot = bootindex === null ? '' : `,bootindex=${bootindex}`;
  switch (bus) {
    case 'nvme':
      return ['-device', `nvme,drive=${drive},serial=pilotlight${n}${boot}`];
    case 'virtio':
      return ['-device', `virtio-blk-pci,drive=${drive}${boot}`];
    case 'scsi':
      return ['-device', `scsi-hd,drive=${drive},bus=scsi0.0${boot}`];
    case 'ide':
      return ['-device', `ide-hd,drive=${drive},bus=ide.${n}${boot}`];
  }
}

/**
 * A boot drill: serves the snapshot over NBD on a private unix socket, boots it
 * under qemu-system-x86_64 (KVM when /dev/kvm is usable, TCG otherwise) with
 * writes discarded (snapshot=on: qemu keeps them in a temporary overlay; the export
 * itself is read-only), and waits for `expect` on the serial console. One boot per
 * bus asked for. Everything started is torn down before it returns; ok only when
 * every bus booted.
 */
export async function runDrill(repo: Repository, record: SnapshotRecord, options: DrillOptions = {}): Promise<DrillReport> {
  const started = Date.now();
  const bootDisk = options.disk ?? 0;
  if (!record.disks[bootDisk]) throw new UserError(`snapshot ${record.id} has ${record.disks.length} disk(s); there is no disk ${bootDisk}`);
  const buses = options.buses?.length ? options.buses : (['nvme'] as Bus[]);
  const firmware = options.firmware ?? 'bios';
  const accel = options.accel === 'tcg' ? 'tcg' : options.accel === 'kvm' || (await kvmUsable()) ? 'kvm' : 'tcg';
  if (options.accel === 'kvm' && !(await kvmUsable())) throw new UserError('--accel kvm: /dev/kvm is not usable by this user');
  const efi = firmware === 'efi' ? await ovmf() : null;
  const expect = options.expect ?? DEFAULT_EXPECT;
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'pilotlight-drill-'));
  const socket = path.join(dir, 'nbd.sock');
  const serving = await serveSnapshot(repo, record, { unix: socket }, { log: options.log }).catch(async (err) => {
    await fsp.rm(dir, { recursive: true, force: true });
    throw err;
  });
  const attempts: BootAttempt[] = [];
  try {
    for (const bus of buses) {
      const args = [
        '-machine', `q35,accel=${accel}`,
        ...(accel === 'kvm' ? ['-cpu', 'host'] : []),
        '-m', String(options.memoryMiB ?? 1024),
        '-smp', '1',
        '-nodefaults', '-no-user-config', '-display', 'none',
        '-chardev', 'stdio,id=console,signal=off', '-serial', 'chardev:console',
        '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04',
        '-net', 'none',
      ];
      if (efi) {
        const vars = path.join(dir, `efivars-${bus}.fd`);
        await fsp.copyFile(efi[1], vars);
        args.push('-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${efi[0]}`, '-drive', `if=pflash,format=raw,unit=1,file=${vars}`);
      }
      if (bus === 'scsi') args.push('-device', 'virtio-scsi-pci,id=scsi0');
      // the boot disk first, then the others
      const order = [bootDisk, ...record.disks.map((_, i) => i).filter((i) => i !== bootDisk)];
      order.forEach((i, n) => {
        const drive = `disk${i}`;
        args.push('-drive', `file=nbd:unix:${socket}:exportname=${i},format=raw,if=none,id=${drive},snapshot=on,cache=unsafe`);
        args.push(...busDevices(bus, drive, n === 0 ? 0 : null, n));
      });
      options.log?.(`drill: booting ${record.vm} ${record.id} disk ${bootDisk} on ${bus} (${firmware}, ${accel})`);
      attempts.push(await boot(options.qemu ?? 'qemu-system-x86_64', args, bus, expect, options.timeoutMs ?? 300_000, options.tailBytes ?? 4096));
    }
  } finally {
    await serving.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
  return {
    ok: attempts.every((a) => a.ok),
    snapshot: record.id,
    vm: record.vm,
    disk: bootDisk,
    firmware,
    accel,
    expect: expect.source,
    booted: attempts.filter((a) => a.ok).map((a) => a.bus),
    failed: attempts.filter((a) => !a.ok).map((a) => a.bus),
    attempts,
    durationMs: Date.now() - started,
  };
}

/** Runs qemu until the marker, its exit, or the timeout; always kills it. */
function boot(qemu: string, args: string[], bus: Bus, expect: RegExp, timeoutMs: number, tailBytes: number): Promise<BootAttempt> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    // the console is matched over a bounded window: memory does not grow with a chatty guest
    let window = '';
    let stderr = '';
    let done = false;
    const finish = (a: Omit<BootAttempt, 'bus' | 'consoleTail'>) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const tail = window.slice(-tailBytes);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const hard = setTimeout(() => child.kill('SIGKILL'), 5000);
        child.once('exit', () => {
          clearTimeout(hard);
          resolve({ bus, ...a, consoleTail: tail });
        });
      } else resolve({ bus, ...a, consoleTail: tail });
    };
    const timer = setTimeout(
      () => finish({ ok: false, timeToMarkerMs: null, marker: null, reason: `no match for /${expect.source}/ within ${timeoutMs / 1000} s`, qemuExit: null }),
      timeoutMs,
    );
    child.stdout!.setEncoding('latin1');
    child.stdout!.on('data', (d: string) => {
      window = (window + d).slice(-65536);
      const m = expect.exec(window);
      if (m) finish({ ok: true, timeToMarkerMs: Date.now() - t0, marker: m[0], reason: null, qemuExit: null });
    });
    child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4096)));
    child.on('error', (err: NodeJS.ErrnoException) =>
      finish({
        ok: false,
        timeToMarkerMs: null,
        marker: null,
        reason: err.code === 'ENOENT' ? `${qemu} is not installed (apt-get install qemu-system-x86)` : err.message,
        qemuExit: null,
      }),
    );
    // 'close' comes after the last console bytes: a marker printed just before exit is seen
    child.on('close', (code, signal) =>
      finish({
        ok: false,
        timeToMarkerMs: null,
        marker: null,
        reason: `qemu exited (${code ?? signal}) before /${expect.source}/ appeared${stderr.trim() ? `: ${stderr.trim().split('\n').slice(-3).join(' | ')}` : ''}`,
        qemuExit: code ?? signal,
      }),
    );
  });
}
