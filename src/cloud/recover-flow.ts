/**
 * `recover ec2`: chooses the snapshot, gets its disks into EBS snapshots (recorded
 * pushes, a push on demand, or restore to S3 + ImportSnapshot), registers an AMI,
 * optionally launches it, and for a drill reads the console and cleans up.
 */
import type { Repository } from '../repo/repository.js';
import { UserError } from '../repo/errors.js';
import { SnapshotCatalog, SnapshotRecord } from '../snapshot/snapshot-record.js';
import { AwsOptions, ec2Client } from './aws-clients.js';
import { IMAGE_DEFAULTS } from './defaults.js';
import { getEbsMap } from './ebs-map.js';
import type { EbsPushResult } from './ebs-push.js';
import { pushSnapshotToEbs } from './ebs-shadow.js';
import type { RecoverDisk, RecoverEc2Report } from './ec2-recover.js';
import { RestoreToS3Report, restoreSnapshotToS3 } from './restore-to-s3.js';

export interface RecoverFlowOptions extends AwsOptions {
  /** Snapshot id or prefix; default the newest snapshot whose every disk was pushed to EBS. */
  ref?: string;
  vm: string;
  via: 'ebs' | 'import';
  name?: string;
  architecture?: string;
  bootMode?: string;
  rootDevice?: string;
  ena?: boolean;
  sriov?: boolean;
  volumeType?: string;
  instanceType?: string;
  subnet?: string;
  securityGroup?: string[];
  keyName?: string;
  /** KEY=VALUE tags for the instance and its volumes. */
  tag?: string[];
  staging?: string;
  roleName?: string;
  push?: boolean;
  waitIntervalMs: number;
  waitTimeoutMs: number;
  drill?: boolean;
  keep?: boolean;
  consoleTimeoutMs: number;
  s3Endpoint?: string;
  /** Stage messages (the CLI prints them on stderr). */
  log?: (line: string) => void;
}

export interface DrillOutcome {
  console: string;
  consoleBytes: number;
  booted: boolean;
  cleanedUp: boolean;
}

export interface RecoverFlowReport extends RecoverEc2Report {
  vm: string;
  snapshot: string;
  via: 'ebs' | 'import';
  pushed: EbsPushResult[];
  uploads: RestoreToS3Report[];
  imports: { importTaskId: string; snapshotId: string }[];
  drill?: DrillOutcome;
}

/** Newest first; the first snapshot whose every disk was pushed. */
async function newestPushed(repo: Repository, all: SnapshotRecord[]): Promise<SnapshotRecord | undefined> {
  for (const r of [...all].reverse()) {
    const maps = await Promise.all(r.disks.map((_, i) => getEbsMap(repo.store, r.vm, i, r.id)));
    if (maps.every(Boolean)) return r;
  }
  return undefined;
}

export async function recoverToEc2(repo: Repository, o: RecoverFlowOptions): Promise<RecoverFlowReport> {
  const { cleanupDrill, consoleOutput, importSnapshotFromS3, recoverEc2 } = await import('./ec2-recover.js');
  const { parseS3Url } = await import('./s3-image-upload.js');
  const log = o.log ?? (() => {});
  if (o.drill && (!o.instanceType || !o.subnet)) {
    throw new UserError('--drill needs --instance-type and --subnet (an isolated subnet: no route to the internet or production)');
  }
  const ec2 = await ec2Client(o);
  try {
    const catalog = new SnapshotCatalog(repo);
    const wait = { intervalMs: o.waitIntervalMs, timeoutMs: o.waitTimeoutMs };
    let record: SnapshotRecord;
    const disks: RecoverDisk[] = [];
    const pushed: EbsPushResult[] = [];
    const uploads: RestoreToS3Report[] = [];
    const imports: { importTaskId: string; snapshotId: string }[] = [];
    if (o.via === 'ebs') {
      if (o.ref) record = await catalog.resolve(o.ref, o.vm);
      else {
        const all = await catalog.list(o.vm);
        if (all.length === 0) throw new UserError(`no snapshot of vm ${JSON.stringify(o.vm)} in ${repo.location}`);
        const found = await newestPushed(repo, all);
        if (!found && !o.push) {
          throw new UserError(`no snapshot of ${o.vm} was pushed to EBS yet: run 'pilotlight ebs push latest --vm ${o.vm}', or pass --push, or --via import`);
        }
        record = found ?? all[all.length - 1]!;
      }
      for (let i = 0; i < record.disks.length; i++) {
        let m = await getEbsMap(repo.store, record.vm, i, record.id);
        if (!m && o.push) {
          log(`pushing ${record.vm} disk ${i} of ${record.id} to EBS...`);
          const [r] = await pushSnapshotToEbs(repo, record, o, [i]);
          pushed.push(r!);
          m = await getEbsMap(repo.store, record.vm, i, record.id);
        }
        if (!m) {
          throw new UserError(`snapshot ${record.id} disk ${i} was not pushed to EBS: run 'pilotlight ebs push ${record.id} --vm ${record.vm}' (or pass --push, or use --via import)`);
        }
        disks.push({ snapshotId: m.ebsSnapshotId, volumeSizeGiB: m.volumeSizeGiB });
      }
    } else {
      record = await catalog.resolve(o.ref ?? 'latest', o.vm);
      if (!o.staging) throw new UserError('--via import needs --staging s3://BUCKET/PREFIX for the raw images');
      const m = /^s3:\/\/([^/]+)\/?(.*)$/.exec(o.staging);
      if (!m) throw new UserError(`--staging ${JSON.stringify(o.staging)} is not s3://BUCKET/PREFIX`);
      const prefix = m[2]!.replace(/\/+$/, '');
      for (let i = 0; i < record.disks.length; i++) {
        const url = `s3://${m[1]}/${prefix ? prefix + '/' : ''}${record.vm.replace(/[^A-Za-z0-9._-]/g, '_')}/${record.id}/disk${i}.raw`;
        log(`uploading ${record.vm} disk ${i} to ${url}...`);
        uploads.push(await restoreSnapshotToS3(repo, record, i, url, { s3Endpoint: o.s3Endpoint }));
        const { bucket, key } = parseS3Url(url);
        log(`importing ${url} (ImportSnapshot)...`);
        const imp = await importSnapshotFromS3(ec2, { bucket, key, roleName: o.roleName, description: `pilotlight ${record.vm} ${record.id} disk ${i}`, ...wait });
        imports.push(imp);
        disks.push({ snapshotId: imp.snapshotId });
      }
    }
    const tags: Record<string, string> = { Name: `${record.vm} (pilotlight ${record.id})`, 'pilotlight:vm': record.vm, 'pilotlight:snapshot': record.id };
    for (const t of o.tag ?? []) {
      const eq = t.indexOf('=');
      if (eq <= 0) throw new UserError(`--tag ${JSON.stringify(t)} is not KEY=VALUE`);
      tags[t.slice(0, eq)] = t.slice(eq + 1);
    }
    const name = o.name ?? `pilotlight-${record.vm.replace(/[^A-Za-z0-9()[\]./\-'@_ ]/g, '_')}-${record.id}`.slice(0, 128);
    const report = await recoverEc2({
      ec2,
      disks,
      image: {
        name,
        description: `pilotlight recovery of ${record.vm} snapshot ${record.id}`,
        architecture: o.architecture ?? IMAGE_DEFAULTS.architecture,
        rootDeviceName: o.rootDevice ?? IMAGE_DEFAULTS.rootDeviceName,
        bootMode: o.bootMode,
        enaSupport: o.ena ?? true,
        sriovNetSupport: (o.sriov ?? true) ? 'simple' : null,
        volumeType: o.volumeType ?? IMAGE_DEFAULTS.volumeType,
      },
      launch: o.instanceType ? { instanceType: o.instanceType, subnetId: o.subnet, securityGroupIds: o.securityGroup, keyName: o.keyName, tags } : undefined,
      ...wait,
      onStage: (stage, d) => log(`${stage}: ${Object.values(d).join(' ')}`),
    });
    let drill: DrillOutcome | undefined;
    if (o.drill && report.instanceId) {
      log(`waiting for the console output of ${report.instanceId}...`);
      const text = await consoleOutput(ec2, report.instanceId, { intervalMs: wait.intervalMs, timeoutMs: o.consoleTimeoutMs });
      if (!o.keep) {
        await cleanupDrill(ec2, { instanceId: report.instanceId, imageId: report.imageId });
        log(`drill over: terminated ${report.instanceId}, deregistered ${report.imageId} (the EBS snapshots stay)`);
      }
      drill = { console: text, consoleBytes: Buffer.byteLength(text), booted: text.length > 0, cleanedUp: !o.keep };
    }
    return { vm: record.vm, snapshot: record.id, via: o.via, ...report, pushed, uploads, imports, ...(drill ? { drill } : {}) };
  } finally {
    ec2.destroy();
  }
}
