/**
 * CLI of the service: `run`, `status`, `config check`. Parses and prints; the work is
 * in src/service/.
 */
import { Command, Option } from 'commander';
import { promises as fsp } from 'node:fs';
import { Repository } from '../repo/repository.js';
import { UserError } from '../repo/errors.js';
import { openStore } from '../store/open-store.js';
import { EXIT_RPO_BREACHED } from '../service/exit-codes.js';
import type { VmStatusLine } from '../service/status-report.js';
import { globals, openRepo, printJson } from './context.js';
// yaml, zod, croner and pino load in the commands that use them, not at every start-up

export function registerService(program: Command): void {
  program
    .command('run')
    .description('the protection service: every job on its schedule, metrics, alerts (docs/SERVICE.md)')
    .requiredOption('--config <file>', 'service configuration (YAML)')
    .option('--once', `run every job once and exit: 0 when every VM is within its RPO target, ${EXIT_RPO_BREACHED} when not`)
    .option('--metrics-listen <host:port>', 'serve /metrics and /healthz here (e.g. 127.0.0.1:9464)')
    .addOption(new Option('--log-format <format>', 'json lines, or pretty (default: pretty on a terminal)').choices(['json', 'pretty', 'auto']).default('auto'))
    .addOption(new Option('--lease-ttl <seconds>', 'lifetime of a VM lease without renewal').argParser(Number).hideHelp())
    .action(async (opts: { config: string; once?: boolean; metricsListen?: string; logFormat: 'json' | 'pretty' | 'auto'; leaseTtl?: number }) => {
      const { createLogger, errorFields } = await import('../service/logger.js');
      const log = createLogger({ format: opts.logFormat });
      const { ProtectionService } = await import('../service/service.js');
      const service = await ProtectionService.create({
        configFile: opts.config,
        log,
        metricsListen: opts.metricsListen,
        leaseTtlMs: opts.leaseTtl ? opts.leaseTtl * 1000 : undefined,
      });
      if (opts.once) {
        const within = await service.runOnce();
        await service.stop();
        if (!within) process.exitCode = EXIT_RPO_BREACHED;
        return;
      }
      await service.start();
      await new Promise<void>((resolve) => {
        const onTerm = (sig: NodeJS.Signals) => {
          log.info({ signal: sig }, 'shutting down');
          process.off('SIGTERM', onTerm);
          process.off('SIGINT', onTerm);
          process.off('SIGHUP', onHup);
          void service.stop().finally(resolve);
        };
        const onHup = () => {
          log.info('SIGHUP: reloading the configuration');
          void service.reload().catch((err) => log.error(errorFields(err), 'reload failed'));
        };
        process.on('SIGTERM', onTerm);
        process.on('SIGINT', onTerm);
        process.on('SIGHUP', onHup);
      });
    });

  program
    .command('status')
    .description('every protected VM: newest snapshot, age against the RPO target, last error, EBS shadow (read from the repository)')
    .option('--config <file>', 'the service configuration (default: every VM of --repo)')
    .action(async (opts: { config?: string }, cmd: Command) => {
      const g = globals(cmd);
      const { loadConfig, rpoTargetMs } = await import('../service/config.js');
      const { resolveSecret } = await import('../service/secrets.js');
      const { vmStatuses } = await import('../service/status-report.js');
      const lines: VmStatusLine[] = [];
      if (opts.config) {
        const { config } = await loadConfig(opts.config);
        for (const [name, rc] of Object.entries(config.repositories)) {
          const targets = config.jobs.filter((j) => j.repository === name).flatMap((j) => j.vms.map((vm) => ({ vm, job: j.name, rpoTargetSeconds: rpoTargetMs(j) / 1000 })));
          if (!targets.length) continue;
          const password = rc.password ? await resolveSecret(rc.password, `repositories.${name}.password`) : undefined;
          const store = await openStore(rc.location, { s3Endpoint: rc.s3Endpoint });
          const repo = await Repository.open(store, { password, passwordFile: rc.passwordFile }, rc.cacheDir).catch(async (e) => {
            await store.close();
            throw e;
          });
          try {
            lines.push(...(await vmStatuses(repo, name, targets)));
          } finally {
            await repo.close();
          }
        }
      } else {
        const repo = await openRepo(cmd);
        try {
          lines.push(...(await vmStatuses(repo, repo.location)));
        } finally {
          await repo.close();
        }
      }
      if (g.json) printJson(lines);
      else printStatus(lines);
      if (lines.some((l) => l.withinRpo === false)) process.exitCode = EXIT_RPO_BREACHED;
    });

  const config = program.commands.find((c) => c.name() === 'config') ?? program.command('config').description('service configuration');
  config
    .command('check')
    .description('check a service configuration: every mistake with file, line and field')
    .argument('<file>')
    .action(async (file: string, _opts: unknown, cmd: Command) => {
      const { checkConfigText, formatProblem } = await import('../service/config.js');
      let text: string;
      try {
        text = await fsp.readFile(file, 'utf8');
      } catch (err) {
        throw new UserError(`cannot read ${file}: ${(err as Error).message}`);
      }
      const r = checkConfigText(text, file);
      if (globals(cmd).json) printJson({ ok: r.problems.length === 0, problems: r.problems });
      else if (r.problems.length) for (const p of r.problems) process.stderr.write(`${formatProblem(p)}\n`);
      else {
        const c = r.config!;
        process.stdout.write(`${file}: ok: ${Object.keys(c.repositories).length} repository(ies), ${Object.keys(c.sources).length} source(s), ${c.jobs.length} job(s)\n`);
      }
      if (r.problems.length) process.exitCode = 1;
    });
}

function age(s: number | null): string {
  if (s === null) return 'never';
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172800) return `${(s / 3600).toFixed(1)}h`;
  return `${(s / 86400).toFixed(1)}d`;
}

function printStatus(lines: VmStatusLine[]): void {
  if (!lines.length) {
    process.stdout.write('no protected VMs\n');
    return;
  }
  const rows = lines.map((l) => [
    l.withinRpo === false ? 'BREACH' : l.withinRpo ? 'ok' : '-',
    l.vm,
    l.job ?? '-',
    l.newestSnapshot ?? '(none)',
    `${age(l.ageSeconds)}/${l.rpoTargetSeconds === null ? '-' : age(l.rpoTargetSeconds)}`,
    l.ebs ? `${l.ebs.ebsSnapshotId} lag ${age(l.ebs.lagSeconds)}` : '-',
    l.lastRun?.result === 'failure' || l.lastRun?.result === 'partial' ? `${l.lastRun.failedStep ? l.lastRun.failedStep + ': ' : ''}${l.lastRun.error ?? ''}`.slice(0, 80) : '',
  ]);
  const head = ['STATE', 'VM', 'JOB', 'NEWEST SNAPSHOT', 'AGE/RPO', 'EBS SHADOW', 'LAST ERROR'];
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) process.stdout.write(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(w[i]!))).join('  ').trimEnd() + '\n');
}
