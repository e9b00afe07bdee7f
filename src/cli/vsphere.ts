/**
 * CLI for the vSphere source: `backup vsphere` and `doctor vsphere`.
 * The core CLI wires them: registerVsphereBackup(backupCommand) and registerDoctor(program).
 *
 * The vSphere password comes from --vsphere-password-file or VSPHERE_PASSWORD; it is
 * not named --password-file because that global option is the repository password.
 */
import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { runBackupJob } from '../service/job.js';
import { UserError } from '../repo/errors.js';
import type { VsphereSource } from '../source/vsphere/vsphere-source.js';
import { addAfterBackupOptions, afterBackupJobOptions, printJobResult } from './backup-output.js';
import { globals, openRepo, printJson, storeRequests } from './context.js';
import { interruptSignal } from './interrupt.js';
import { terminalProgress } from './progress.js';

interface ConnOpts {
  server: string;
  username?: string;
  vspherePasswordFile?: string;
  thumbprint?: string;
  insecure?: boolean;
  vm?: string;
  vmMoref?: string;
  transport: string;
  vddkLibdir?: string;
}

function password(o: ConnOpts): string | undefined {
  if (o.vspherePasswordFile) {
    let t: string;
    try {
      t = readFileSync(o.vspherePasswordFile, 'utf8');
    } catch (err) {
      throw new UserError(`cannot read the vSphere password file ${o.vspherePasswordFile}: ${(err as Error).message}`);
    }
    const pw = t.replace(/\r?\n$/, '');
    if (!pw) throw new UserError(`the vSphere password file ${o.vspherePasswordFile} is empty`);
    return pw;
  }
  return process.env.VSPHERE_PASSWORD;
}

function connectionOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--server <host>', 'vCenter or ESXi host name, host:port, or https://HOST/sdk')
    .option('--vm <name>', 'the VM, by name')
    .option('--vm-moref <id>', 'the VM, by managed object id (vm-42)')
    .option('--username <user>', 'vSphere user (env VSPHERE_USER)', process.env.VSPHERE_USER)
    .option('--vsphere-password-file <file>', 'file holding the vSphere password (env VSPHERE_PASSWORD)')
    .option('--thumbprint <sha1>', "SHA-1 thumbprint of the server's TLS certificate (AA:BB:...); connecting is refused on a mismatch")
    .option('--insecure', 'do not check the certificate thumbprint (trusted networks only)')
    .option('--transport <modes>', 'VDDK transport modes, in order of preference (nbdssl, nbd, hotadd, san)', 'nbdssl:nbd')
    .option('--vddk-libdir <dir>', 'an extracted VDDK 7 or 8: its directory or its lib64/ (env VDDK_LIBDIR)', process.env.VDDK_LIBDIR);
}

export function registerVsphereBackup(backup: Command): void {
  addAfterBackupOptions(connectionOptions(backup.command('vsphere').description('back up a vSphere VM: snapshot, Changed Block Tracking, VDDK reads')))
    .option('--quiesce', 'quiesce the guest file systems (VMware Tools) for the snapshot')
    .option('--verify-unchanged <percent>', 'read this percent of the chunks CBT calls unchanged and compare them with the parent', (v) => {
      const n = Number(v);
      if (!(n >= 0 && n <= 100)) throw new UserError(`--verify-unchanged takes a percent between 0 and 100, got ${v}`);
      return n;
    })
    .option('--parent <snapshot>', "parent snapshot: 'auto' (latest of the vm), 'none', or an id", 'auto')
    .action(async (opts: ConnOpts & { quiesce?: boolean; verifyUnchanged?: number; parent: string; ebsShadow?: boolean; region?: string }, cmd: Command) => {
      if (!opts.vm && !opts.vmMoref) throw new UserError('give the VM with --vm NAME or --vm-moref vm-N');
      if (!opts.username) throw new UserError('give the vSphere user with --username or VSPHERE_USER');
      const pw = password(opts);
      if (pw === undefined) throw new UserError('give the vSphere password with --vsphere-password-file FILE or VSPHERE_PASSWORD');
      if (!opts.vddkLibdir) throw new UserError('give the extracted VDDK directory (or its lib64/) with --vddk-libdir or VDDK_LIBDIR');
      const g = globals(cmd);
      const repo = await openRepo(cmd);
      const { signal, dispose } = interruptSignal();
      let source: VsphereSource | undefined;
      try {
        // loaded on use: the SOAP stack costs every other command start-up time and memory
        const { VsphereSource } = await import('../source/vsphere/vsphere-source.js');
        source = await VsphereSource.open({
          server: opts.server,
          username: opts.username,
          password: pw,
          thumbprint: opts.thumbprint,
          insecure: opts.insecure,
          vm: opts.vm,
          vmMoref: opts.vmMoref,
          transport: opts.transport,
          quiesce: opts.quiesce,
          vddkLibDir: opts.vddkLibdir,
          log: g.json ? undefined : (m) => process.stderr.write(`pilotlight: ${m}\n`),
        });
        const result = await runBackupJob(repo, source, {
          parent: opts.parent,
          progress: g.json ? undefined : terminalProgress('backup'),
          signal,
          sourceKind: 'vsphere',
          verifyUnchangedPercent: opts.verifyUnchanged,
          ...afterBackupJobOptions(opts),
        });
        const requests = storeRequests(repo);
        printJobResult(result, g.json === true, { ...(requests ? { requests } : {}), vsphere: { notes: source.notes, cbtEnabledNow: source.cbtWasEnabled } }, false);
      } finally {
        dispose();
        // a cleanup failure is reported but does not hide why the backup failed
        await source?.close().catch((e: Error) => {
          process.stderr.write(`pilotlight: ${e.message}\n`);
          process.exitCode = process.exitCode || 1;
        });
        await repo.close();
      }
    });
}

export function registerDoctor(program: Command): void {
  const doctor = program.commands.find((c) => c.name() === 'doctor') ?? program.command('doctor').description('check that a source can be backed up');
  connectionOptions(doctor.command('vsphere').description('check connectivity, thumbprint, login, the VM, CBT and VDDK loading'))
    .option('--snapshot-test', 'also create and remove a snapshot, and open its disks through VDDK')
    .action(async (opts: ConnOpts & { snapshotTest?: boolean }, cmd: Command) => {
      const { runDoctor } = await import('../source/vsphere/doctor.js');
      const checks = await runDoctor({
        server: opts.server,
        username: opts.username,
        password: password(opts),
        thumbprint: opts.thumbprint,
        insecure: opts.insecure,
        vm: opts.vm,
        vmMoref: opts.vmMoref,
        vddkLibDir: opts.vddkLibdir,
        transport: opts.transport,
        snapshotTest: opts.snapshotTest,
      });
      const ok = checks.every((c) => c.ok);
      if (globals(cmd).json) printJson({ ok, checks });
      else for (const c of checks) process.stdout.write(`${c.ok ? 'ok  ' : 'FAIL'} ${c.check.padEnd(12)} ${c.detail}\n`);
      if (!ok) process.exitCode = 1;
    });
}

/** For a core CLI that registers commands with one call per file. */
export function register(program: Command): void {
  const backup = program.commands.find((c) => c.name() === 'backup') ?? program.command('backup');
  registerVsphereBackup(backup);
  registerDoctor(program);
}
