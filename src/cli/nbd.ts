import { Command } from 'commander';
import { UserError } from '../repo/errors.js';
import { SnapshotCatalog } from '../snapshot/snapshot-record.js';
import { formatBytes, globals, openRepo, parseIntOption, printJson } from './context.js';

/** Resolves on the first SIGINT/SIGTERM. */
function untilSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off('SIGINT', on);
      process.off('SIGTERM', on);
      resolve(sig);
    };
    process.on('SIGINT', on);
    process.on('SIGTERM', on);
  });
}

function parseHostPort(v: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(v);
  if (!m || Number(m[3]) > 65535) throw new UserError(`--metrics-listen takes HOST:PORT, got ${JSON.stringify(v)}`);
  return { host: m[1] ?? m[2]!, port: Number(m[3]) };
}

export function registerServe(program: Command): void {
  const serve = program.command('serve').description('serve snapshots to other programs');
  serve
    .command('nbd')
    .description('serve the disks of a snapshot over NBD (read-only unless --overlay), fetching chunks as they are read')
    .argument('<snapshot>', "snapshot id (or unique prefix), or 'latest'")
    .option('--vm <name>', 'the vm (needed with latest)')
    .option('--disk <n>', 'serve only this disk (default: every disk, each an export named by index and by name)', parseIntOption('--disk'))
    .requiredOption('--listen <address>', 'unix:PATH or HOST:PORT (e.g. 127.0.0.1:10809)')
    .option('--overlay <file>', 'copy-on-write: writes go to this local sparse file (never to the repository)')
    .option('--cache-mib <n>', 'verified-chunk cache in MiB', parseIntOption('--cache-mib'), 256)
    .option('--metrics-listen <host:port>', 'serve Prometheus metrics on http://HOST:PORT/metrics')
    .action(
      async (
        ref: string,
        opts: { vm?: string; disk?: number; listen: string; overlay?: string; cacheMib: number; metricsListen?: string },
        cmd: Command,
      ) => {
        const { parseListen } = await import('../nbd/server.js');
        const { serveSnapshot } = await import('../nbd/serve-snapshot.js');
        const { listenMetrics } = await import('../nbd/metrics.js');
        const listen = parseListen(opts.listen);
        const metricsAt = opts.metricsListen ? parseHostPort(opts.metricsListen) : undefined;
        const repo = await openRepo(cmd);
        try {
          const record = await new SnapshotCatalog(repo).resolve(ref, opts.vm);
          const log = (line: string) => process.stderr.write(`pilotlight: ${line}\n`);
          const serving = await serveSnapshot(repo, record, listen, {
            disk: opts.disk,
            overlay: opts.overlay,
            cacheBytes: opts.cacheMib * 1024 * 1024,
            log,
          });
          const metrics = metricsAt ? await listenMetrics(metricsAt.host, metricsAt.port) : undefined;
          const ready = {
            event: 'listening',
            address: serving.address,
            snapshot: serving.snapshot,
            vm: serving.vm,
            exports: serving.exports,
            metrics: metrics ? `http://${metricsAt!.host}:${metrics.port}/metrics` : null,
            pid: process.pid,
          };
          if (globals(cmd).json) process.stdout.write(JSON.stringify(ready) + '\n');
          else {
            process.stdout.write(`serving snapshot ${serving.snapshot} of ${serving.vm} on ${serving.address}\n`);
            for (const e of serving.exports) {
              process.stdout.write(`  export ${e.names.map((n) => JSON.stringify(n)).join(' = ')}: ${formatBytes(e.size)}, ${e.writable ? `copy-on-write to ${opts.overlay}` : 'read-only'}\n`);
            }
            if (ready.metrics) process.stdout.write(`  metrics on ${ready.metrics}\n`);
          }
          const sig = await untilSignal();
          log(`${sig}: closing connections`);
          await serving.close();
          await metrics?.close();
        } finally {
          await repo.close();
        }
      },
    );
}

function parseRegex(v: string): RegExp {
  try {
    return new RegExp(v);
  } catch (err) {
    throw new UserError(`--expect: ${(err as Error).message}`);
  }
}

function parseSeconds(v: string): number {
  const n = Number(v);
  if (!(n > 0)) throw new UserError(`--timeout takes a number of seconds, got ${JSON.stringify(v)}`);
  return n;
}

export function registerDrill(program: Command): void {
  program
    .command('drill')
    .description('boot a snapshot under qemu-system-x86_64 from an NBD export (writes discarded) and wait for a marker on the serial console')
    .argument('[snapshot]', "snapshot id (or unique prefix), or 'latest'", 'latest')
    .requiredOption('--vm <name>', 'the vm')
    .option('--disk <n>', 'the disk to boot from', parseIntOption('--disk'), 0)
    .option('--expect <regex>', 'what a successful boot prints on the serial console (default: a login prompt)')
    .option('--timeout <seconds>', 'give up after this long', parseSeconds, 300)
    .option('--bus <list>', 'disk bus, or a comma list to try each: nvme (as EC2 Nitro presents EBS), virtio, scsi, ide', 'nvme')
    .option('--firmware <kind>', 'bios or efi (efi needs the ovmf package)', 'bios')
    .option('--accel <kind>', 'auto (KVM when /dev/kvm is usable, else TCG), kvm or tcg', 'auto')
    .option('--memory <MiB>', 'guest memory', parseIntOption('--memory'), 1024)
    .action(
      async (
        ref: string,
        opts: { vm: string; disk: number; expect?: string; timeout: number; bus: string; firmware: string; accel: string; memory: number },
        cmd: Command,
      ) => {
        const { BUSES, runDrill } = await import('../drill/drill.js');
        const buses = opts.bus.split(',').map((b) => b.trim());
        for (const b of buses) if (!(BUSES as readonly string[]).includes(b)) throw new UserError(`--bus takes ${BUSES.join(', ')} (or a comma list), got ${JSON.stringify(b)}`);
        if (opts.firmware !== 'bios' && opts.firmware !== 'efi') throw new UserError(`--firmware takes bios or efi, got ${JSON.stringify(opts.firmware)}`);
        if (!['auto', 'kvm', 'tcg'].includes(opts.accel)) throw new UserError(`--accel takes auto, kvm or tcg, got ${JSON.stringify(opts.accel)}`);
        const expect = opts.expect !== undefined ? parseRegex(opts.expect) : undefined;
        const json = globals(cmd).json;
        const repo = await openRepo(cmd);
        try {
          const record = await new SnapshotCatalog(repo).resolve(ref, opts.vm);
          const report = await runDrill(repo, record, {
            disk: opts.disk,
            expect,
            timeoutMs: opts.timeout * 1000,
            buses: buses as ('nvme' | 'virtio' | 'scsi' | 'ide')[],
            firmware: opts.firmware,
            accel: opts.accel as 'auto' | 'kvm' | 'tcg',
            memoryMiB: opts.memory,
            log: (line) => process.stderr.write(`pilotlight: ${line}\n`),
          });
          if (json) printJson(report);
          else {
            for (const a of report.attempts) {
              process.stdout.write(
                a.ok
                  ? `drill ${report.vm} ${report.snapshot}: booted on ${a.bus} (${report.firmware}, ${report.accel}): ${JSON.stringify(a.marker)} after ${(a.timeToMarkerMs! / 1000).toFixed(1)} s\n`
                  : `drill ${report.vm} ${report.snapshot}: did NOT boot on ${a.bus} (${report.firmware}, ${report.accel}): ${a.reason}\n`,
              );
              process.stdout.write(`--- console tail (${a.bus}) ---\n${a.consoleTail.replace(/\r/g, '')}\n---\n`);
            }
          }
          if (!report.ok) process.exitCode = 4;
        } finally {
          await repo.close();
        }
      },
    );
}
