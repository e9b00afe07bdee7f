/**
 * CLI of the AWS recovery paths: `ebs push`, `ebs list`, `recover ec2`, and the
 * `restore --to s3://` hook. No logic of its own beyond resolving snapshots and
 * printing: the work is in src/cloud/.
 */
import { Command, Option } from 'commander';
// The AWS SDK takes about a second and ~90 MB to load: this file imports only types
// and light modules at the top, and the cloud modules inside the commands that use them.
import type { EBSClient } from '@aws-sdk/client-ebs';
import type { EC2Client } from '@aws-sdk/client-ec2';
import type { EbsPushResult, PushSnapshotRef } from '../cloud/ebs-push.js';
import { DEFAULT_CONCURRENCY, DEFAULT_PUT_RATE, IMAGE_DEFAULTS } from '../cloud/defaults.js';
import { getEbsMap, listEbsMaps } from '../cloud/ebs-map.js';
import type { VerifyEbsReport } from '../cloud/ebs-verify.js';
import { CloudError } from '../cloud/errors.js';
import type { RecoverDisk, RecoverEc2Report } from '../cloud/ec2-recover.js';
import type { UploadImageResult } from '../cloud/s3-image-upload.js';
import type { ProgressSink } from '../engine/backup.js';
import { openDiskImage } from '../engine/snapshot-image.js';
import { WorkerPool } from '../engine/worker-pool.js';
import { UserError } from '../repo/errors.js';
import type { Repository } from '../repo/repository.js';
import { SnapshotCatalog, SnapshotRecord } from '../snapshot/snapshot-record.js';
import { interruptSignal } from './commands.js';
import { formatBytes, globals, openRepo, parseIntOption, printJson } from './context.js';

/** AWS options shared by the cloud commands. */
interface AwsOptions {
  region?: string;
  ebsEndpoint?: string;
  ec2Endpoint?: string;
}

function addAwsOptions(cmd: Command): Command {
  return cmd
    .option('--region <region>', 'AWS region (default AWS_REGION / the profile)')
    .addOption(new Option('--ebs-endpoint <url>', 'EBS direct API endpoint (tests; env AWS_ENDPOINT_URL_EBS)').hideHelp())
    .addOption(new Option('--ec2-endpoint <url>', 'EC2 API endpoint (tests; env AWS_ENDPOINT_URL_EC2)').hideHelp());
}

function region(o: AwsOptions): string | undefined {
  return o.region ?? (process.env.AWS_REGION || process.env.AWS_DEFAULT_REGION || undefined);
}

export async function ebsClient(o: AwsOptions): Promise<EBSClient> {
  const { EBSClient } = await import('@aws-sdk/client-ebs');
  // pilotlight retries PutSnapshotBlock itself (with backoff and a rate limit), so the SDK does not.
  const endpoint = o.ebsEndpoint ?? (process.env.AWS_ENDPOINT_URL_EBS || undefined);
  return new EBSClient({ region: region(o) ?? (endpoint ? 'us-east-1' : undefined), endpoint, maxAttempts: 1 });
}

export async function ec2Client(o: AwsOptions): Promise<EC2Client> {
  const { EC2Client } = await import('@aws-sdk/client-ec2');
  const endpoint = o.ec2Endpoint ?? (process.env.AWS_ENDPOINT_URL_EC2 || undefined);
  return new EC2Client({ region: region(o) ?? (endpoint ? 'us-east-1' : undefined), endpoint });
}

function toRef(r: SnapshotRecord): PushSnapshotRef {
  return { id: r.id, vm: r.vm, time: new Date(r.time).toISOString(), disks: r.disks.map((d) => ({ name: d.name, capacity: d.capacity })) };
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

export interface EbsPushCliOptions extends AwsOptions {
  disk?: number;
  rate?: number;
  concurrency?: number;
  full?: boolean;
  timeoutMinutes?: number;
  encrypted?: boolean;
  kmsKeyArn?: string;
  json?: boolean;
  waitIntervalMs?: number;
  /** Stops the push (Ctrl-C): nothing is recorded, the EBS snapshot is left pending. */
  signal?: AbortSignal;
}

/**
 * Pushes disks of one snapshot to EBS (all disks when `disks` is undefined) and records
 * the EBS snapshot ids in the repository. Used by `ebs push` and by `backup --ebs-shadow`.
 */
export async function pushSnapshotToEbs(repo: Repository, record: SnapshotRecord, opts: EbsPushCliOptions = {}, disks?: number[]): Promise<EbsPushResult[]> {
  const { ebsPush } = await import('../cloud/ebs-push.js');
  const catalog = new SnapshotCatalog(repo);
  const pool = new WorkerPool(repo);
  const ebs = await ebsClient(opts);
  const ec2 = await ec2Client(opts);
  const progress = ticker(!opts.json && process.stderr.isTTY === true);
  try {
    const out: EbsPushResult[] = [];
    for (const diskIndex of disks ?? record.disks.map((_, i) => i)) {
      const r = await ebsPush({
        ebs,
        ec2,
        store: repo.store,
        snapshot: toRef(record),
        diskIndex,
        region: await ebs.config.region().catch(() => {
          throw new UserError('no AWS region: set AWS_REGION (or a region in the AWS profile) or pass --region');
        }),
        ratePerSecond: opts.rate,
        concurrency: opts.concurrency,
        full: opts.full,
        encrypted: opts.encrypted,
        kmsKeyArn: opts.kmsKeyArn,
        timeoutMinutes: opts.timeoutMinutes,
        waitIntervalMs: opts.waitIntervalMs,
        signal: opts.signal,
        openImage: async (s, i) => openDiskImage(repo, pool, typeof s === 'string' ? await catalog.load(s) : s.id === record.id ? record : await catalog.load(s.id), i),
        onProgress: (p) => progress.tick(`ebs push disk ${diskIndex}: ${p.blocksSent} blocks, ${formatBytes(p.bytesSent)}`),
      });
      out.push(r);
    }
    return out;
  } finally {
    progress.done();
    ebs.destroy();
    ec2.destroy();
    await pool.close();
  }
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
        const results = await pushSnapshotToEbs(repo, record, { ...opts, json: g.json, signal: interrupt.signal }, opts.disk === undefined ? undefined : [opts.disk]);
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

export interface RestoreToS3Options {
  s3Endpoint?: string;
  json?: boolean;
  progress?: ProgressSink;
  partSize?: number;
  concurrency?: number;
  storageClass?: string;
}

export interface RestoreToS3Report extends UploadImageResult {
  snapshot: string;
  vm: string;
  disk: number;
  to: string;
}

/**
 * `restore SNAP --to s3://BUCKET/KEY`: the raw image of one disk, streamed into one S3
 * object (multipart, holes as zeros). The core restore command calls it.
 */
export async function restoreToS3(repo: unknown, record: unknown, disk: number, url: string, opts: Record<string, unknown> = {}): Promise<RestoreToS3Report> {
  const r = repo as Repository;
  const rec = record as SnapshotRecord;
  const o = opts as RestoreToS3Options;
  const { createS3Client, parseS3Url, uploadImageToS3 } = await import('../cloud/s3-image-upload.js');
  const { bucket, key } = parseS3Url(url);
  const pool = new WorkerPool(r);
  const s3 = createS3Client({ endpoint: o.s3Endpoint });
  try {
    const image = openDiskImage(r, pool, rec, disk);
    o.progress?.start(image.capacity);
    let last = 0;
    const res = await uploadImageToS3({
      s3,
      bucket,
      key,
      image,
      partSize: o.partSize,
      concurrency: o.concurrency,
      metadata: { 'pilotlight-snapshot': rec.id, 'pilotlight-disk': String(disk) },
      onProgress: (done) => {
        o.progress?.advance(done - last);
        last = done;
      },
    });
    o.progress?.stop();
    const report = { snapshot: rec.id, vm: rec.vm, disk, to: url, ...res };
    if (!o.json) {
      process.stdout.write(
        `restored ${rec.vm} disk ${disk} of ${rec.id} to ${url}: ${formatBytes(res.size)} in ${res.parts} parts ` +
          `(${formatBytes(res.zeroBytes)} of holes sent as zeros) in ${(res.durationMs / 1000).toFixed(1)} s\n`,
      );
    }
    return report;
  } catch (err) {
    o.progress?.stop();
    if (err instanceof CloudError) throw new UserError(err.message);
    throw err;
  } finally {
    s3.destroy();
    await pool.close();
  }
}

interface RecoverCliOptions extends AwsOptions {
  vm: string;
  via: 'ebs' | 'import';
  name?: string;
  architecture: string;
  bootMode?: string;
  rootDevice: string;
  ena: boolean;
  sriov: boolean;
  volumeType: string;
  instanceType?: string;
  subnet?: string;
  securityGroup?: string[];
  keyName?: string;
  tag?: string[];
  staging?: string;
  roleName?: string;
  push?: boolean;
  waitInterval: number;
  waitTimeout: number;
  drill?: boolean;
  keep?: boolean;
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
      const { cleanupDrill, consoleOutput, importSnapshotFromS3, recoverEc2 } = await import('../cloud/ec2-recover.js');
      const { parseS3Url } = await import('../cloud/s3-image-upload.js');
      const repo = await openRepo(cmd);
      const ec2 = await ec2Client(opts);
      const log = (s: string) => {
        if (!g.json) process.stderr.write(`${s}\n`);
      };
      try {
        if (opts.drill && (!opts.instanceType || !opts.subnet)) {
          throw new UserError('--drill needs --instance-type and --subnet (an isolated subnet: no route to the internet or production)');
        }
        const catalog = new SnapshotCatalog(repo);
        const wait = { intervalMs: opts.waitInterval * 1000, timeoutMs: opts.waitTimeout * 1000 };
        let record: SnapshotRecord;
        const disks: RecoverDisk[] = [];
        const pushed: EbsPushResult[] = [];
        const uploads: RestoreToS3Report[] = [];
        const imports: { importTaskId: string; snapshotId: string }[] = [];
        if (opts.via === 'ebs') {
          if (ref) record = await catalog.resolve(ref, opts.vm);
          else {
            const all = await catalog.list(opts.vm);
            if (all.length === 0) throw new UserError(`no snapshot of vm ${JSON.stringify(opts.vm)} in ${repo.location}`);
            // Newest first; stop at the first snapshot whose every disk was pushed.
            const found: SnapshotRecord[] = [];
            for (const r of [...all].reverse()) {
              const maps = await Promise.all(r.disks.map((_, i) => getEbsMap(repo.store, r.vm, i, r.id)));
              if (maps.every(Boolean)) {
                found.push(r);
                break;
              }
            }
            if (!found.length && !opts.push) {
              throw new UserError(`no snapshot of ${opts.vm} was pushed to EBS yet: run 'pilotlight ebs push latest --vm ${opts.vm}', or pass --push, or --via import`);
            }
            record = found.length ? found[found.length - 1] : all[all.length - 1];
          }
          for (let i = 0; i < record.disks.length; i++) {
            let m = await getEbsMap(repo.store, record.vm, i, record.id);
            if (!m && opts.push) {
              log(`pushing ${record.vm} disk ${i} of ${record.id} to EBS...`);
              const [r] = await pushSnapshotToEbs(repo, record, { ...opts, json: g.json }, [i]);
              pushed.push(r);
              m = await getEbsMap(repo.store, record.vm, i, record.id);
            }
            if (!m) {
              throw new UserError(
                `snapshot ${record.id} disk ${i} was not pushed to EBS: run 'pilotlight ebs push ${record.id} --vm ${record.vm}' (or pass --push, or use --via import)`,
              );
            }
            disks.push({ snapshotId: m.ebsSnapshotId, volumeSizeGiB: m.volumeSizeGiB });
          }
        } else {
          record = await catalog.resolve(ref ?? 'latest', opts.vm);
          if (!opts.staging) throw new UserError('--via import needs --staging s3://BUCKET/PREFIX for the raw images');
          const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(opts.staging);
          if (!m) throw new UserError(`--staging ${JSON.stringify(opts.staging)} is not s3://BUCKET/PREFIX`);
          const prefix = m[2].replace(/\/+$/, '');
          for (let i = 0; i < record.disks.length; i++) {
            const url = `s3://${m[1]}/${prefix ? prefix + '/' : ''}${record.vm.replace(/[^A-Za-z0-9._-]/g, '_')}/${record.id}/disk${i}.raw`;
            log(`uploading ${record.vm} disk ${i} to ${url}...`);
            const up = await restoreToS3(repo, record, i, url, { s3Endpoint: g.s3Endpoint, json: true });
            uploads.push(up);
            const { bucket, key } = parseS3Url(url);
            log(`importing ${url} (ImportSnapshot)...`);
            const imp = await importSnapshotFromS3(ec2, { bucket, key, roleName: opts.roleName, description: `pilotlight ${record.vm} ${record.id} disk ${i}`, ...wait });
            imports.push(imp);
            disks.push({ snapshotId: imp.snapshotId });
          }
        }
        const tags: Record<string, string> = { Name: `${record.vm} (pilotlight ${record.id})`, 'pilotlight:vm': record.vm, 'pilotlight:snapshot': record.id };
        for (const t of opts.tag ?? []) {
          const eq = t.indexOf('=');
          if (eq <= 0) throw new UserError(`--tag ${JSON.stringify(t)} is not KEY=VALUE`);
          tags[t.slice(0, eq)] = t.slice(eq + 1);
        }
        const name = opts.name ?? `pilotlight-${record.vm.replace(/[^A-Za-z0-9()[\]./\-'@_ ]/g, '_')}-${record.id}`.slice(0, 128);
        const report: RecoverEc2Report = await recoverEc2({
          ec2,
          disks,
          image: {
            name,
            description: `pilotlight recovery of ${record.vm} snapshot ${record.id}`,
            architecture: opts.architecture,
            rootDeviceName: opts.rootDevice,
            bootMode: opts.bootMode,
            enaSupport: opts.ena,
            sriovNetSupport: opts.sriov ? 'simple' : null,
            volumeType: opts.volumeType,
          },
          launch: opts.instanceType
            ? { instanceType: opts.instanceType, subnetId: opts.subnet, securityGroupIds: opts.securityGroup, keyName: opts.keyName, tags }
            : undefined,
          ...wait,
          onStage: (stage, d) => log(`${stage}: ${Object.values(d).join(' ')}`),
        });
        let drill: { console: string; consoleBytes: number; booted: boolean; cleanedUp: boolean } | undefined;
        if (opts.drill && report.instanceId) {
          log(`waiting for the console output of ${report.instanceId}...`);
          const text = await consoleOutput(ec2, report.instanceId, { intervalMs: wait.intervalMs, timeoutMs: opts.consoleTimeout * 1000 });
          if (!opts.keep) {
            await cleanupDrill(ec2, { instanceId: report.instanceId, imageId: report.imageId });
            log(`drill over: terminated ${report.instanceId}, deregistered ${report.imageId} (the EBS snapshots stay)`);
          }
          drill = { console: text, consoleBytes: Buffer.byteLength(text), booted: text.length > 0, cleanedUp: !opts.keep };
          if (!text) process.exitCode = 2;
        }
        const out = { vm: record.vm, snapshot: record.id, via: opts.via, ...report, pushed, uploads, imports, ...(drill ? { drill } : {}) };
        if (g.json) printJson(out);
        else if (drill) {
          process.stdout.write(drill.console || `no console output from ${report.instanceId} within ${opts.consoleTimeout} s: the drill is inconclusive\n`);
          process.stdout.write(`${report.instanceId}\n`);
        } else if (report.instanceId) process.stdout.write(`${report.instanceId}\n`);
        else process.stdout.write(`${report.imageId}\n`);
      } finally {
        ec2.destroy();
        await repo.close();
      }
    }),
  );
  return recover;
}
