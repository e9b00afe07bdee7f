import { Command } from 'commander';
import { UserError } from '../repo/errors.js';
import { SnapshotCatalog } from '../snapshot/snapshot-record.js';
import { formatBytes, globals, openRepo, parseIntOption } from './context.js';

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
