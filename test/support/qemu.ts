/**
 * Real QEMU tools for the NBD source tests: qemu-img, qemu-io, qemu-nbd and
 * qemu-storage-daemon (Debian packages qemu-utils and qemu-system-common). Every
 * process started here is stopped by its pid.
 */
import { ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, promises as fsp } from 'node:fs';
import * as net from 'node:net';
import { promisify } from 'node:util';

const exec = promisify(execFile);

export async function sh(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await exec(cmd, args, { maxBuffer: 16 << 20 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr || e.message}`);
  }
}

export const qemuImg = (...args: string[]) => sh('qemu-img', args);

/** Runs qemu-io commands (`write -P 0x11 0 1M`) on an image or NBD URI. */
export function qemuIo(target: string, cmds: string[], format = 'qcow2'): Promise<string> {
  return sh('qemu-io', ['-f', format, ...cmds.flatMap((c) => ['-c', c]), target]);
}

/** A raw copy of what an image (or NBD URI) holds now: the reference a restore must equal. */
export async function rawCopy(source: string, out: string, format = 'qcow2'): Promise<void> {
  await qemuImg('convert', '-U', '-f', format, '-O', 'raw', source, out);
}

function canConnect(where: string | number): Promise<boolean> {
  return new Promise((resolve) => {
    const c = typeof where === 'number' ? net.createConnection({ host: '127.0.0.1', port: where }) : net.createConnection({ path: where });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** Waits until the unix socket accepts connections (the file alone appears before listen()). */
async function waitFor(path: string | number, child: ChildProcess, what: string, stderr: () => string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (child.exitCode !== null) throw new Error(`${what} exited ${child.exitCode}: ${stderr()}`);
    if ((typeof path === 'number' || existsSync(path)) && (await canConnect(path))) {
      await new Promise((r) => setTimeout(r, 50)); // let a failing start-up check finish
      if (child.exitCode !== null) throw new Error(`${what} exited ${child.exitCode}: ${stderr()}`);
      return;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${what}: ${path} does not accept connections`);
}

export interface Daemon {
  pid: number;
  stop(): Promise<void>;
}

function daemon(child: ChildProcess): Daemon {
  return {
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await gone;
    },
  };
}

/** `qemu-nbd -r -t -B NAME...`: serves a qcow2 read-only on a unix socket (or a TCP port on 127.0.0.1). */
export async function startQemuNbd(image: string, socket: string | number, exportName: string, bitmaps: string[] = []): Promise<Daemon> {
  if (typeof socket === 'string') await fsp.rm(socket, { force: true });
  const where = typeof socket === 'number' ? ['-b', '127.0.0.1', '-p', String(socket)] : ['-k', socket];
  const child = spawn('qemu-nbd', ['-r', '-t', '-e', '8', '-f', 'qcow2', ...where, '-x', exportName, ...bitmaps.flatMap((b) => ['-B', b]), image], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  await waitFor(socket, child, 'qemu-nbd', () => err);
  return daemon(child);
}

/** qemu-nbd's answer when it refuses to start (exit code and message). */
export async function qemuNbdRefusal(image: string, socket: string, bitmaps: string[]): Promise<string | undefined> {
  try {
    const d = await startQemuNbd(image, socket, 'probe', bitmaps);
    await d.stop();
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

export interface StorageDaemon extends Daemon {
  nbdSocket: string;
  qmpSocket: string;
  /** URI of the writable export `rw` of node `disk0`. */
  rwUri: string;
}

/**
 * qemu-storage-daemon with node `disk0` (qcow2 on `image`), an NBD server, a writable
 * export `rw` (the "VM" writes through it) and a QMP monitor.
 */
export async function startStorageDaemon(image: string, dir: string): Promise<StorageDaemon> {
  const nbdSocket = `${dir}/nbd.sock`;
  const qmpSocket = `${dir}/qmp.sock`;
  const child = spawn(
    'qemu-storage-daemon',
    [
      '--blockdev', `driver=file,node-name=file0,filename=${image}`,
      '--blockdev', 'driver=qcow2,node-name=disk0,file=file0',
      '--nbd-server', `addr.type=unix,addr.path=${nbdSocket}`,
      '--export', 'type=nbd,id=rw,node-name=disk0,name=rw,writable=on',
      '--chardev', `socket,path=${qmpSocket},server=on,wait=off,id=mon`,
      '--monitor', 'chardev=mon',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  await waitFor(nbdSocket, child, 'qemu-storage-daemon', () => err);
  await waitFor(qmpSocket, child, 'qemu-storage-daemon', () => err);
  return { ...daemon(child), nbdSocket, qmpSocket, rwUri: `nbd+unix:///rw?socket=${nbdSocket}` };
}

/**
 * Leaves a persistent bitmap marked in use, as a QEMU that died would: a qemu-io
 * session opens the image read-write (which sets the in-use flag), writes, and is
 * killed (SIGKILL) before it can close the image.
 */
export async function crashWhileWriting(image: string, write: string): Promise<void> {
  const child = spawn('qemu-io', ['-f', 'qcow2', image], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stdin!.write(`${write}\n`);
  for (let i = 0; i < 400 && !/wrote \d+/.test(out); i++) await new Promise((r) => setTimeout(r, 25));
  if (!/wrote \d+/.test(out)) throw new Error(`qemu-io did not write: ${out}`);
  const gone = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await gone;
}

/** The bitmaps of a qcow2 image as qemu-img info reports them. */
export async function imageBitmaps(image: string): Promise<{ name: string; granularity: number; flags: string[] }[]> {
  const info = JSON.parse(await qemuImg('info', '-U', '--output=json', image)) as { 'format-specific'?: { data?: { bitmaps?: { name: string; granularity: number; flags: string[] }[] } } };
  return info['format-specific']?.data?.bitmaps ?? [];
}
