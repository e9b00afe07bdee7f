/**
 * CLI of the AWS recovery paths: `ebs push`, `ebs list`, `recover ec2`, and the
 * `restore --to s3://` hook. No logic of its own beyond resolving snapshots and
 * printing: the work is in src/cloud/.
 */
import { Command, Option } from 'commander';
// The AWS SDK takes about a second and ~90 MB to load: this file imports only types
// and light modules at the top, and the cloud modules inside the commands that use them.
import { AwsOptions, ebsClient } from '../cloud/aws-clients.js';
import { DEFAULT_CONCURRENCY, DEFAULT_PUT_RATE, IMAGE_DEFAULTS } from '../cloud/defaults.js';
import { getEbsMap, listEbsMaps } from '../cloud/ebs-map.js';
import type { VerifyEbsReport } from '../cloud/ebs-verify.js';
import { CloudError } from '../cloud/errors.js';
import type { PushSnapshotOptions } from '../cloud/ebs-shadow.js';
import type { RecoverFlowOptions } from '../cloud/recover-flow.js';
import type { RestoreToS3Report } from '../cloud/restore-to-s3.js';
import type { ProgressSink } from '../engine/backup.js';
import { openDiskImage } from '../engine/snapshot-image.js';
import { WorkerPool } from '../engine/worker-pool.js';
import { UserError } from '../repo/errors.js';
import type { Repository } from '../repo/repository.js';
import { SnapshotCatalog, SnapshotRecord } from '../snapshot/snapshot-record.js';
import { EXIT_DRILL_INCONCLUSIVE } from '../service/exit-codes.js';
import { formatBytes, globals, openRepo, parseIntOption, printJson } from './context.js';
import { interruptSignal } from './interrupt.js';

function addAwsOptions(cmd: Command): Command {
  return cmd
    .option('--region <region>', 'AWS region (default AWS_REGION / the profile)')
    .addOption(new Option('--ebs-endpoint <url>', 'EBS direct API endpoint (tests; env AWS_ENDPOINT_URL_EBS)').hideHelp())
    .addOption(new Option('--ec2-endpoint <url>', 'EC2 API endpoint (tests; env AWS_ENDPOINT_URL_EC2)').hideHelp());
}

/** Runs a command body; CloudErrors become a JSON error document (with --json) and a one-line message. */
async function run(cmd: Command, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (err) {
    if (err instanceof CloudError) {
      if (globals(cmd).json) printJson(err.toJSON());
      throw new UserError(err.message);
    }
    if (globals(cmd).json && err instanceof UserError) printJson({ error: 'USER_ERROR', message: err.message });
    throw err;
  }
}

/** Reports progress on stderr every 2 s when it is a terminal and --json is off. */
function ticker(enabled: boolean): { tick: (line: string) => void; done: () => void } {
  let last = 0;
  let shown = false;
  return {
    tick(line) {
      if (!enabled || Date.now() - last < 2000) return;
      last = Date.now();
      shown = true;
      process.stderr.write(`\r${line}   `);
    },
    done() {
      if (shown) process.stderr.write('\n');
    },
  };
}

interface EbsPushCliOptions extends Omit<PushSnapshotOptions, 'signal' | 'onProgress' | 'waitIntervalMs'> {
  disk?: number;
}

export function registerEbs(program: Command): Command {
  const ebs = program.command('ebs').description('keep EBS snapshots in step with pilotlight snapshots (EBS direct APIs)');
  addAwsOptions(
    ebs
      .command('push')
      .description('push a snapshot to EBS: incremental on top of the newest recorded push, recorded in the repository')
      .argument('<snapshot>', "snapshot id (or unique prefix), or 'latest'")
      .requiredOption('--vm <name>', 'the vm')
      .option('--disk <n>', 'only this disk (default: every disk)', parseIntOption('--disk'))
      .option('--rate <n>', `PutSnapshotBlock requests per second per snapshot (default ${DEFAULT_PUT_RATE}, the AWS limit)`, parseIntOption('--rate'))
      .option('--concurrency <n>', `blocks in flight (default ${DEFAULT_CONCURRENCY})`, parseIntOption('--concurrency'))
      .option('--full', 'push every non-zero block without a parent, even when an earlier push is recorded')
      .option('--encrypted', 'encrypt the EBS snapshots (the default EBS KMS key unless --kms-key-arn)')
      .option('--kms-key-arn <arn>', 'KMS key for the EBS snapshots (implies --encrypted)')
      .option('--timeout-minutes <n>', 'minutes AWS waits for the push to complete before abandoning it (default 60)', parseIntOption('--timeout-minutes')),
  ).action(async (ref: string, opts: EbsPushCliOptions & { vm: string }, cmd: Command) =>
    run(cmd, async () => {
      const g = globals(cmd);
      const repo = await openRepo(cmd);
      const interrupt = interruptSignal();
      try {
        const record = await new SnapshotCatalog(repo).resolve(ref, opts.vm);
        const { pushSnapshotToEbs } = await import('../cloud/ebs-shadow.js');
        const progress = ticker(!g.json && process.stderr.isTTY === true);
        const results = await pushSnapshotToEbs(
          repo,
          record,
          { ...opts, signal: interrupt.signal, onProgress: (i, p) => progress.tick(`ebs push disk ${i}: ${p.blocksSent} blocks, ${formatBytes(p.bytesSent)}`) },
          opts.disk === undefined ? undefined : [opts.disk],
        ).finally(() => progress.done());
        if (g.json) printJson({ snapshot: record.id, vm: record.vm, disks: results });
        else {
          for (const r of results) {
            process.stdout.write(
              r.alreadyPushed
                ? `${r.vm} disk ${r.diskIndex} of ${r.snapshot}: already pushed as ${r.ebsSnapshotId}\n`
                : r.unchanged
                ? `${r.vm} disk ${r.diskIndex} of ${r.snapshot}: unchanged since ${r.baseSnapshot}; ${r.ebsSnapshotId} holds it (no new EBS snapshot)\n`
                : `${r.vm} disk ${r.diskIndex} of ${r.snapshot} -> ${r.ebsSnapshotId}` +
                    `${r.parentEbsSnapshotId ? ` (on top of ${r.parentEbsSnapshotId} = ${r.baseSnapshot})` : ' (full)'}: ` +
                    `${r.blocksSent} of ${r.totalBlocks} blocks, ${formatBytes(r.bytesSent)} in ${(r.durationMs / 1000).toFixed(1)} s` +
                    `${r.retries ? `, ${r.retries} retries` : ''}\n`,
            );
          }
        }
      } finally {
        interrupt.dispose();
        await repo.close();
      }
    }),
  );
  addAwsOptions(
    ebs
      .command('verify')
      .description('read the EBS snapshot of a pushed snapshot back (ListSnapshotBlocks, GetSnapshotBlock) and compare it with the repository')
      .argument('<snapshot>', "snapshot id (or unique prefix), or 'latest'")
      .requiredOption('--vm <name>', 'the vm')
      .option('--disk <n>', 'only this disk (default: every disk)', parseIntOption('--disk'))
      .option('--sample <n>', 'compare only this many random blocks per disk (the listing is always checked whole)', parseIntOption('--sample')),
  ).action(async (ref: string, opts: AwsOptions & { vm: string; disk?: number; sample?: number }, cmd: Command) =>
    run(cmd, async () => {
      const g = globals(cmd);
      const repo = await openRepo(cmd);
      const { verifyEbsSnapshot } = await import('../cloud/ebs-verify.js');
      const pool = new WorkerPool(repo);
      const client = await ebsClient(opts);
      try {
        const record = await new SnapshotCatalog(repo).resolve(ref, opts.vm);
        const reports: (VerifyEbsReport & { diskIndex: number })[] = [];
        for (const i of opts.disk === undefined ? record.disks.map((_, k) => k) : [opts.disk]) {
          const m = await getEbsMap(repo.store, record.vm, i, record.id);
          if (!m) throw new UserError(`snapshot ${record.id} disk ${i} was not pushed to EBS: nothing to verify ('pilotlight ebs push ${record.id} --vm ${record.vm}')`);
          const r = await verifyEbsSnapshot({ ebs: client, image: openDiskImage(repo, pool, record, i), ebsSnapshotId: m.ebsSnapshotId, sample: opts.sample });
          reports.push({ diskIndex: i, ...r });
          if (!g.json) {
            process.stdout.write(
              `${r.ok ? 'ok' : 'MISMATCH'}: ${record.vm} disk ${i} of ${record.id} = ${r.ebsSnapshotId}: ${r.blocksListed} blocks listed, ` +
                `${r.blocksNonZero} non-zero in the image, ${r.blocksCompared} compared` +
                `${r.missing.length ? `, missing ${r.missing.join(' ')}` : ''}${r.mismatched.length ? `, different ${r.mismatched.join(' ')}` : ''}\n`,
            );
          }
        }
        if (g.json) printJson({ snapshot: record.id, vm: record.vm, ok: reports.every((r) => r.ok), disks: reports });
        if (!reports.every((r) => r.ok)) process.exitCode = 3;
      } finally {
        client.destroy();
        await pool.close();
        await repo.close();
      }
    }),
  );
  ebs
    .command('list')
    .description('EBS snapshots recorded for a vm, oldest first')
    .requiredOption('--vm <name>', 'the vm')
    .option('--disk <n>', 'disk index', parseIntOption('--disk'), 0)
    .action(async (opts: { vm: string; disk: number }, cmd: Command) =>
      run(cmd, async () => {
        const repo = await openRepo(cmd);
        try {
          const maps = await listEbsMaps(repo.store, opts.vm, opts.disk);
          if (globals(cmd).json) printJson(maps);
          else for (const m of maps) process.stdout.write(`${m.snapshot}  ${m.snapshotTime}  ${m.ebsSnapshotId}  ${m.volumeSizeGiB} GiB  ${m.blocksSent} block(s)${m.parentEbsSnapshotId ? `  parent ${m.parentEbsSnapshotId}` : ''}\n`);
        } finally {
          await repo.close();
        }
      }),
    );
  return ebs;
}

/**
 * `restore SNAP --to s3://BUCKET/KEY` (the core restore command calls it): the work is
 * in src/cloud/restore-to-s3.ts; this prints.
 */
export async function restoreToS3(repo: unknown, record: unknown, disk: number, url: string, opts: Record<string, unknown> = {}): Promise<RestoreToS3Report> {
  const o = opts as { s3Endpoint?: string; json?: boolean; progress?: ProgressSink; storageClass?: string };
  const { restoreSnapshotToS3 } = await import('../cloud/restore-to-s3.js');
  try {
    const res = await restoreSnapshotToS3(repo as Repository, record as SnapshotRecord, disk, url, { s3Endpoint: o.s3Endpoint, progress: o.progress });
    if (!o.json) {
      process.stdout.write(
        `restored ${res.vm} disk ${disk} of ${res.snapshot} to ${url}: ${formatBytes(res.size)} in ${res.parts} parts ` +
          `(${formatBytes(res.zeroBytes)} of holes sent as zeros) in ${(res.durationMs / 1000).toFixed(1)} s\n`,
      );
    }
    return res;
  } catch (err) {
    if (err instanceof CloudError) throw new UserError(err.message);
    throw err;
  }
}

/** The recover flow's options as commander gives them: waits in seconds. */
interface RecoverCliOptions extends Omit<RecoverFlowOptions, 'ref' | 'waitIntervalMs' | 'waitTimeoutMs' | 'consoleTimeoutMs' | 'log' | 's3Endpoint'> {
  waitInterval: number;
  waitTimeout: number;
  consoleTimeout: number;
}

export function registerRecover(program: Command): Command {
  const recover = program.command('recover').description('bring a VM back in the cloud');
  addAwsOptions(
    recover
      .command('ec2')
      .description('register an AMI from the EBS snapshots of a pilotlight snapshot and optionally launch it')
      .argument('[snapshot]', 'snapshot id or prefix (default: the newest snapshot whose every disk was pushed to EBS)')
      .requiredOption('--vm <name>', 'the vm')
      .addOption(new Option('--via <route>', 'ebs: from pushed EBS snapshots (minutes); import: restore to S3 + ImportSnapshot (slow)').choices(['ebs', 'import']).default('ebs'))
      .option('--name <ami-name>', 'AMI name (default pilotlight-VM-SNAPSHOT)')
      .addOption(new Option('--architecture <arch>', 'CPU architecture').choices(['x86_64', 'arm64', 'i386']).default(IMAGE_DEFAULTS.architecture))
      .addOption(new Option('--boot-mode <mode>', `firmware the AMI boots with (default: ${IMAGE_DEFAULTS.bootMode}; uefi for arm64)`).choices(['legacy-bios', 'uefi', 'uefi-preferred']))
      .option('--root-device <name>', 'root device name', IMAGE_DEFAULTS.rootDeviceName)
      .option('--no-ena', 'do not flag the AMI for ENA networking')
      .option('--no-sriov', 'do not flag the AMI for SR-IOV (Intel 82599 VF) networking')
      .option('--volume-type <type>', 'EBS volume type of the disks', IMAGE_DEFAULTS.volumeType)
      .option('--instance-type <type>', 'launch an instance of this type (without it only the AMI is registered)')
      .option('--subnet <id>', 'subnet to launch into (for a drill: an isolated one)')
      .option('--security-group <id...>', 'security group ids')
      .option('--key-name <name>', 'EC2 key pair name')
      .option('--tag <key=value...>', 'tags for the instance and its volumes')
      .option('--staging <s3://BUCKET/PREFIX>', 'with --via import: where the raw images are uploaded')
      .option('--role-name <name>', 'with --via import: the VM Import service role (default vmimport)')
      .option('--push', 'with --via ebs: push disks that were not pushed yet, first')
      .option('--wait-interval <s>', 'seconds between state polls', (v) => Number(v), 5)
      .option('--wait-timeout <s>', 'seconds to wait for the image and the instance', (v) => Number(v), 3600)
      .option('--drill', 'recovery drill: launch (needs --instance-type and an isolated --subnet), print the console output, then terminate the instance and deregister the AMI')
      .option('--keep', 'with --drill: leave the instance and the AMI running')
      .option('--console-timeout <s>', 'with --drill: seconds to wait for console output', (v) => Number(v), 600),
  ).action(async (ref: string | undefined, opts: RecoverCliOptions, cmd: Command) =>
    run(cmd, async () => {
      const g = globals(cmd);
      const { recoverToEc2 } = await import('../cloud/recover-flow.js');
      const repo = await openRepo(cmd);
      try {
        const out = await recoverToEc2(repo, {
          ...opts,
          ref,
          s3Endpoint: g.s3Endpoint,
          waitIntervalMs: opts.waitInterval * 1000,
          waitTimeoutMs: opts.waitTimeout * 1000,
          consoleTimeoutMs: opts.consoleTimeout * 1000,
          log: (line) => {
            if (!g.json) process.stderr.write(`${line}\n`);
          },
        });
        const drill = out.drill;
        if (drill && !drill.booted) process.exitCode = EXIT_DRILL_INCONCLUSIVE;
        if (g.json) printJson(out);
        else if (drill) {
          process.stdout.write(drill.console || `no console output from ${out.instanceId} within ${opts.consoleTimeout} s: the drill is inconclusive\n`);
          process.stdout.write(`${out.instanceId}\n`);
        } else if (out.instanceId) process.stdout.write(`${out.instanceId}\n`);
        else process.stdout.write(`${out.imageId}\n`);
      } finally {
        await repo.close();
      }
    }),
  );
  return recover;
}
