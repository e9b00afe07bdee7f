/**
 * `node dist/bench/qemu-nbd.js [--size 4G] [--dirty 1] [--reps 2] [--keep]`: an incremental
 * backup of a qcow2 disk through qemu-nbd with a QEMU dirty bitmap, against a full read of
 * the allocated extents of the same disk (no bitmap), in the same run, interleaved.
 *
 * The disk: a qcow2 of --size made from a raw image three quarters full (random data, so
 * nothing compresses or dedups by accident), backed up once (the parent); then a bitmap is
 * cleared and --dirty percent of the disk is rewritten in 256 KiB pieces at spread offsets
 * with qemu-io. Both timed runs use that first snapshot as the parent, so every repetition
 * measures the same work; the image file is read once before them, so they all start
 * with the same page cache. Benchmarks are not tests: nothing here asserts a time.
 * Output: markdown on stdout and bench/results/qemu-nbd.{md,json}.
 */
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { KiB, MiB, fmtSize, median, parseArgs, parseSize, repoRoot, sh, timedOk, type Timed } from './lib/util.js';

const root = repoRoot(import.meta.url);
const bin = path.join(root, 'bin', 'pilotlight.js');

function log(msg: string): void {
  process.stderr.write(`[bench qemu-nbd ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

async function makeDisk(dir: string, size: number): Promise<string> {
  const raw = path.join(dir, 'disk.raw');
  const fh = await fsp.open(raw, 'w');
  const block = 16 * MiB;
  for (let off = 0; off < size; off += block) {
    if ((off / block) % 4 !== 3) await fh.write(randomBytes(Math.min(block, size - off)), 0, Math.min(block, size - off), off);
  }
  await fh.truncate(size);
  await fh.close();
  const qcow = path.join(dir, 'disk.qcow2');
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, qcow]);
  await fsp.rm(raw);
  sh('qemu-img', ['bitmap', '--add', qcow, 'b1']);
  return qcow;
}

/** Rewrites `bytes` of the disk in 256 KiB pieces spread over it, each with its own random data. */
async function dirty(dir: string, qcow: string, size: number, bytes: number): Promise<number> {
  const piece = 256 * KiB;
  const n = Math.max(1, Math.round(bytes / piece));
  const stride = Math.floor(size / n / piece) * piece;
  const cmds: string[] = [];
  for (let i = 0; i < n; i++) {
    const f = path.join(dir, `w${i}`);
    await fsp.writeFile(f, randomBytes(piece));
    cmds.push('-c', `write -q -s ${f} ${i * stride + (i % 3) * 64 * KiB} ${piece}`);
  }
  sh('qemu-io', ['-f', 'qcow2', ...cmds, qcow]);
  for (let i = 0; i < n; i++) await fsp.rm(path.join(dir, `w${i}`));
  return n * piece;
}

async function serve(qcow: string, socket: string): Promise<() => Promise<void>> {
  await fsp.rm(socket, { force: true });
  const child = spawn('qemu-nbd', ['-r', '-t', '-e', '4', '-f', 'qcow2', '-k', socket, '-x', 'vda', '-B', 'b1', qcow], { stdio: 'ignore' });
  for (let i = 0; i < 200; i++) {
    try {
      await fsp.stat(socket);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 25));
    }
  }
  await new Promise((r) => setTimeout(r, 200));
  return async () => {
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await gone;
  };
}

interface Run {
  mode: 'incremental (dirty bitmap)' | 'full read (base:allocation)';
  t: Timed;
  bytesScanned: number;
  bytesNew: number;
  reason: string;
}

async function main(): Promise<void> {
  const { flags, on } = parseArgs(process.argv.slice(2), ['keep']);
  const size = parseSize(flags.size ?? '4G');
  const dirtyPct = Number(flags.dirty ?? '1');
  const reps = Number(flags.reps ?? '2');
  const dir = await fsp.mkdtemp(path.join(flags.dir ?? os.tmpdir(), 'pl-bench-qemu-'));
  const env = { ...process.env, PILOTLIGHT_PASSWORD: 'bench', PILOTLIGHT_CACHE_DIR: path.join(dir, 'cache') };
  const repo = path.join(dir, 'repo');
  const socket = path.join(dir, 'nbd.sock');
  const uri = `nbd+unix:///vda?socket=${socket}`;
  try {
    log(`making a ${fmtSize(size)} qcow2 disk (3/4 random data)`);
    const qcow = await makeDisk(dir, size);
    sh('node', [bin, 'init', '--repo', repo], { env });
    let stop = await serve(qcow, socket);
    log('first backup (the parent)');
    let first;
    try {
      first = JSON.parse((await timedOk('node', [bin, 'backup', 'nbd', uri, '--vm', 'bench', '--bitmap', 'b1', '--repo', repo, '--json'], { env })).stdout);
    } finally {
      await stop();
    }
    sh('qemu-img', ['bitmap', '--clear', qcow, 'b1']);
    const dirtied = await dirty(dir, qcow, size, (size * dirtyPct) / 100);
    log(`rewrote ${fmtSize(dirtied)} (${((dirtied / size) * 100).toFixed(2)}% of the disk)`);
    // the same page-cache state for every timed run: the image read once beforehand
    sh('sh', ['-c', `cat '${qcow}' > /dev/null`]);
    stop = await serve(qcow, socket);
    const runs: Run[] = [];
    try {
      for (let rep = 0; rep < reps; rep++) {
        const order = rep % 2 === 0 ? ['incremental', 'full'] : ['full', 'incremental'];
        for (const which of order) {
          const args = ['backup', 'nbd', uri, '--vm', 'bench', '--parent', first.snapshot, '--repo', repo, '--json', ...(which === 'incremental' ? ['--bitmap', 'b1'] : [])];
          const t = await timedOk('node', [bin, ...args], { env });
          const r = JSON.parse(t.stdout);
          runs.push({
            mode: which === 'incremental' ? 'incremental (dirty bitmap)' : 'full read (base:allocation)',
            t,
            bytesScanned: r.bytesScanned,
            bytesNew: r.bytesNew,
            reason: r.disks[0].read.reason,
          });
          log(`${which}: ${fmtSize(r.bytesScanned)} scanned in ${(t.wallMs / 1000).toFixed(1)} s`);
        }
      }
    } finally {
      await stop();
    }
    const modes = ['incremental (dirty bitmap)', 'full read (base:allocation)'] as const;
    const agg = modes.map((m) => {
      const rs = runs.filter((r) => r.mode === m);
      return {
        mode: m,
        wallS: median(rs.map((r) => r.t.wallMs / 1000)),
        cpuS: median(rs.map((r) => r.t.userS + r.t.sysS)),
        maxRssMiB: Math.max(...rs.map((r) => r.t.maxRssBytes / MiB)),
        bytesScanned: rs[0]!.bytesScanned,
        bytesNew: rs[0]!.bytesNew,
        reason: rs[0]!.reason,
      };
    });
    const speedups = runs
      .filter((r) => r.mode === modes[1])
      .map((f, i) => f.t.wallMs / runs.filter((r) => r.mode === modes[0])[i]!.t.wallMs);
    const md = [
      `# QEMU dirty bitmap over NBD: incremental vs full read (${fmtSize(size)} qcow2, ${((dirtied / size) * 100).toFixed(2)}% dirty)`,
      '',
      `${new Date().toISOString()}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, ${sh('qemu-nbd', ['--version']).split('\n')[0]}; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; ${reps} repetition(s), interleaved, medians.`,
      `First backup (parent): ${fmtSize(first.bytesScanned)} scanned in ${(first.durationMs / 1000).toFixed(1)} s.`,
      '',
      '| run | scanned | new | wall s | CPU s | peak RSS |',
      '|---|---:|---:|---:|---:|---:|',
      ...agg.map((a) => `| ${a.mode} | ${fmtSize(a.bytesScanned)} | ${fmtSize(a.bytesNew)} | ${a.wallS.toFixed(2)} | ${a.cpuS.toFixed(2)} | ${a.maxRssMiB.toFixed(0)} MiB |`),
      '',
      `Full read / incremental wall time, median of per-repetition ratios: **${median(speedups).toFixed(1)}x**.`,
      '',
      `Every run, in order: ${runs.map((r) => `${r.mode.split(' ')[0]} ${(r.t.wallMs / 1000).toFixed(1)} s`).join(', ')}.`,
      '',
      ...agg.map((a) => `- ${a.mode}: ${a.reason}`),
      '',
    ].join('\n');
    process.stdout.write(md);
    await fsp.mkdir(path.join(root, 'bench', 'results'), { recursive: true });
    await fsp.writeFile(path.join(root, 'bench', 'results', 'qemu-nbd.md'), md);
    await fsp.writeFile(path.join(root, 'bench', 'results', 'qemu-nbd.json'), JSON.stringify({ size, dirtied, reps, first: { bytesScanned: first.bytesScanned, durationMs: first.durationMs }, agg, speedups }, null, 2));
  } finally {
    if (!on.has('keep')) await fsp.rm(dir, { recursive: true, force: true });
    else log(`kept ${dir}`);
  }
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exitCode = 1;
});


