/**
 * EC2 recovery: RegisterImage from EBS snapshots (boot disk first, data disks as further
 * block device mappings), optionally RunInstances, and wait until the instance runs.
 * The slow route (`--via import`) turns S3 objects into EBS snapshots with
 * ImportSnapshot first.
 */
import {
  DeregisterImageCommand,
  GetConsoleOutputCommand,
  TerminateInstancesCommand,
  DescribeImagesCommand,
  DescribeImportSnapshotTasksCommand,
  DescribeInstancesCommand,
  EC2Client,
  ImportSnapshotCommand,
  RegisterImageCommand,
  RunInstancesCommand,
  _InstanceType,
} from '@aws-sdk/client-ec2';
import { CloudError, explainAwsError } from './errors.js';

export interface RecoverDisk {
  snapshotId: string;
  /** GiB; default the snapshot's size. */
  volumeSizeGiB?: number;
  /** Default: the root device name for disk 0, then /dev/sdf, /dev/sdg, ... */
  deviceName?: string;
}

export interface ImageOptions {
  name: string;
  description?: string;
  /** x86_64 (default), arm64, i386. */
  architecture?: string;
  /** Default /dev/sda1 (what EC2 uses for imported Windows and most Linux AMIs). */
  rootDeviceName?: string;
  /** legacy-bios (default: most VMware VMs boot with BIOS; uefi for arm64), uefi, uefi-preferred. */
  bootMode?: string;
  /** ENA networking (default true; the instance's OS needs the ENA driver on Nitro types). */
  enaSupport?: boolean;
  /** Intel 82599 VF networking: 'simple' (default) or undefined to leave it off. */
  sriovNetSupport?: string | null;
  /** gp3 (default), gp2, io2, ... */
  volumeType?: string;
  deleteOnTermination?: boolean;
}

export { IMAGE_DEFAULTS } from './defaults.js';
import { IMAGE_DEFAULTS } from './defaults.js';

export interface LaunchOptions {
  instanceType: string;
  subnetId?: string;
  securityGroupIds?: string[];
  keyName?: string;
  tags?: Record<string, string>;
}

export interface WaitOptions {
  intervalMs?: number;
  timeoutMs?: number;
  signal?: AbortSignal;
}

const DATA_DEVICES = 'fghijklmnop'.split('').map((c) => `/dev/sd${c}`);

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(t);
      reject(signal.reason);
    }, { once: true });
  });
}

async function poll<T>(what: string, w: WaitOptions, step: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + (w.timeoutMs ?? 30 * 60_000);
  for (;;) {
    const v = await step();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new CloudError('failed', `gave up waiting for ${what} after ${Math.round((w.timeoutMs ?? 30 * 60_000) / 1000)} s`);
    await sleep(w.intervalMs ?? 5000, w.signal);
  }
}

export async function registerImage(ec2: EC2Client, disks: RecoverDisk[], o: ImageOptions): Promise<string> {
  if (disks.length === 0) throw new Error('no disks to register');
  if (disks.length > DATA_DEVICES.length + 1) throw new Error(`at most ${DATA_DEVICES.length + 1} disks can be mapped`);
  const root = o.rootDeviceName ?? IMAGE_DEFAULTS.rootDeviceName;
  const sriov = o.sriovNetSupport === undefined ? IMAGE_DEFAULTS.sriovNetSupport : o.sriovNetSupport ?? undefined;
  try {
    const out = await ec2.send(
      new RegisterImageCommand({
        Name: o.name,
        Description: o.description,
        Architecture: (o.architecture ?? IMAGE_DEFAULTS.architecture) as never,
        RootDeviceName: root,
        VirtualizationType: 'hvm',
        // arm64 instances only boot UEFI.
        BootMode: (o.bootMode ?? ((o.architecture ?? IMAGE_DEFAULTS.architecture) === 'arm64' ? 'uefi' : IMAGE_DEFAULTS.bootMode)) as never,
        EnaSupport: o.enaSupport ?? IMAGE_DEFAULTS.enaSupport,
        SriovNetSupport: sriov,
        BlockDeviceMappings: disks.map((d, i) => ({
          DeviceName: d.deviceName ?? (i === 0 ? root : DATA_DEVICES[i - 1]),
          Ebs: {
            SnapshotId: d.snapshotId,
            VolumeSize: d.volumeSizeGiB,
            VolumeType: (o.volumeType ?? IMAGE_DEFAULTS.volumeType) as never,
            DeleteOnTermination: o.deleteOnTermination ?? IMAGE_DEFAULTS.deleteOnTermination,
          },
        })),
      }),
    );
    return out.ImageId!;
  } catch (err) {
    if ((err as { name?: string }).name === 'InvalidAMIName.Duplicate') {
      // A re-run (or a retry whose first answer was lost): reuse the AMI when it was made
      // from the same snapshots, in the same order.
      const same = await findImageByName(ec2, o.name);
      const want = disks.map((d) => d.snapshotId);
      const have = same?.BlockDeviceMappings?.map((m) => m.Ebs?.SnapshotId).filter(Boolean) ?? [];
      if (same?.ImageId && have.length === want.length && have.every((id, i) => id === want[i])) return same.ImageId;
      throw new CloudError(
        'invalid',
        `an AMI named ${JSON.stringify(o.name)} already exists${same?.ImageId ? ` (${same.ImageId})` : ''} and was made from other snapshots; pass another --name or deregister it`,
        { action: 'ec2:RegisterImage', awsCode: 'InvalidAMIName.Duplicate' },
        { cause: err },
      );
    }
    throw explainAwsError(err, 'ec2:RegisterImage', disks.map((d) => d.snapshotId).join(', '));
  }
}

async function findImageByName(ec2: EC2Client, name: string) {
  try {
    const out = await ec2.send(new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: 'name', Values: [name] }] }));
    return out.Images?.[0];
  } catch (err) {
    throw explainAwsError(err, 'ec2:DescribeImages', name);
  }
}

export async function waitImageAvailable(ec2: EC2Client, imageId: string, w: WaitOptions = {}): Promise<void> {
  await poll(`image ${imageId} to become available`, w, async () => {
    let state: string | undefined;
    let reason: string | undefined;
    try {
      const out = await ec2.send(new DescribeImagesCommand({ ImageIds: [imageId] }));
      state = out.Images?.[0]?.State;
      reason = out.Images?.[0]?.StateReason?.Message;
    } catch (err) {
      throw explainAwsError(err, 'ec2:DescribeImages', imageId);
    }
    if (state === 'available') return true;
    if (state === 'failed' || state === 'invalid' || state === 'error') throw new CloudError('failed', `image ${imageId} is ${state}${reason ? `: ${reason}` : ''}`);
    return undefined;
  });
}

export async function runInstance(ec2: EC2Client, imageId: string, o: LaunchOptions): Promise<string> {
  const tags = Object.entries(o.tags ?? {}).map(([Key, Value]) => ({ Key, Value }));
  try {
    const out = await ec2.send(
      new RunInstancesCommand({
        ImageId: imageId,
        InstanceType: o.instanceType as _InstanceType,
        MinCount: 1,
        MaxCount: 1,
        SubnetId: o.subnetId,
        SecurityGroupIds: o.securityGroupIds?.length ? o.securityGroupIds : undefined,
        KeyName: o.keyName,
        TagSpecifications: tags.length
          ? [
              { ResourceType: 'instance', Tags: tags },
              { ResourceType: 'volume', Tags: tags },
            ]
          : undefined,
      }),
    );
    return out.Instances![0].InstanceId!;
  } catch (err) {
    throw explainAwsError(err, 'ec2:RunInstances', imageId);
  }
}

export async function waitInstanceRunning(ec2: EC2Client, instanceId: string, w: WaitOptions = {}): Promise<{ privateIp?: string; publicIp?: string }> {
  return poll(`instance ${instanceId} to run`, w, async () => {
    let inst;
    try {
      const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] }));
      inst = out.Reservations?.[0]?.Instances?.[0];
    } catch (err) {
      // Eventual consistency: a new instance may not be visible yet.
      if ((err as { name?: string }).name === 'InvalidInstanceID.NotFound') return undefined;
      throw explainAwsError(err, 'ec2:DescribeInstances', instanceId);
    }
    const state = inst?.State?.Name;
    if (state === 'running') return { privateIp: inst?.PrivateIpAddress, publicIp: inst?.PublicIpAddress };
    if (state === 'terminated' || state === 'shutting-down' || state === 'stopped') {
      throw new CloudError('failed', `instance ${instanceId} is ${state}${inst?.StateReason?.Message ? `: ${inst.StateReason.Message}` : ''}`);
    }
    return undefined;
  });
}

/** ImportSnapshot of a RAW image in S3, waiting for the task; returns the EBS snapshot id. */
export async function importSnapshotFromS3(
  ec2: EC2Client,
  o: { bucket: string; key: string; description?: string; roleName?: string } & WaitOptions,
): Promise<{ importTaskId: string; snapshotId: string }> {
  let importTaskId: string;
  try {
    const out = await ec2.send(
      new ImportSnapshotCommand({
        Description: o.description,
        RoleName: o.roleName,
        DiskContainer: { Format: 'RAW', UserBucket: { S3Bucket: o.bucket, S3Key: o.key }, Description: o.description },
      }),
    );
    importTaskId = out.ImportTaskId!;
  } catch (err) {
    throw explainAwsError(err, 'ec2:ImportSnapshot', `s3://${o.bucket}/${o.key}`);
  }
  const snapshotId = await poll(`import task ${importTaskId}`, o, async () => {
    let detail;
    try {
      const out = await ec2.send(new DescribeImportSnapshotTasksCommand({ ImportTaskIds: [importTaskId] }));
      detail = out.ImportSnapshotTasks?.[0]?.SnapshotTaskDetail;
    } catch (err) {
      throw explainAwsError(err, 'ec2:DescribeImportSnapshotTasks', importTaskId);
    }
    if (detail?.Status === 'completed') return detail.SnapshotId!;
    if (detail?.Status === 'deleted' || detail?.Status === 'deleting') {
      throw new CloudError(
        'failed',
        `import task ${importTaskId} failed: ${detail.StatusMessage ?? detail.Status}. Check that the vmimport service role can read s3://${o.bucket}/${o.key} (docs/AWS.md).`,
      );
    }
    return undefined;
  });
  return { importTaskId, snapshotId };
}

export interface RecoverEc2Options extends WaitOptions {
  ec2: EC2Client;
  disks: RecoverDisk[];
  image: ImageOptions;
  /** When given, RunInstances and wait for running. */
  launch?: LaunchOptions;
  onStage?: (stage: string, detail: Record<string, unknown>) => void;
}

export interface RecoverEc2Report {
  imageId: string;
  snapshots: string[];
  instanceId?: string;
  state?: string;
  privateIp?: string;
  publicIp?: string;
  timings: { registerMs: number; imageAvailableMs: number; launchMs?: number; runningMs?: number; totalMs: number };
}

export async function recoverEc2(o: RecoverEc2Options): Promise<RecoverEc2Report> {
  const t0 = performance.now();
  const ms = () => Math.round(performance.now() - t0);
  const imageId = await registerImage(o.ec2, o.disks, o.image);
  const registerMs = ms();
  o.onStage?.('registered', { imageId });
  await waitImageAvailable(o.ec2, imageId, o);
  const imageAvailableMs = ms();
  o.onStage?.('image-available', { imageId });
  const report: RecoverEc2Report = { imageId, snapshots: o.disks.map((d) => d.snapshotId), timings: { registerMs, imageAvailableMs, totalMs: 0 } };
  if (o.launch) {
    const instanceId = await runInstance(o.ec2, imageId, o.launch);
    report.instanceId = instanceId;
    report.timings.launchMs = ms();
    o.onStage?.('launched', { instanceId });
    const ips = await waitInstanceRunning(o.ec2, instanceId, o);
    report.state = 'running';
    report.privateIp = ips.privateIp;
    report.publicIp = ips.publicIp;
    report.timings.runningMs = ms();
    o.onStage?.('running', { instanceId });
  }
  report.timings.totalMs = ms();
  return report;
}

/**
 * The instance's serial console output (GetConsoleOutput, Latest), polled until it is
 * not empty or the wait times out ('' then). For a recovery drill: proof the OS booted.
 */
export async function consoleOutput(ec2: EC2Client, instanceId: string, w: WaitOptions = {}): Promise<string> {
  try {
    return await poll(`console output of ${instanceId}`, w, async () => {
      let out;
      try {
        out = await ec2.send(new GetConsoleOutputCommand({ InstanceId: instanceId, Latest: true }));
      } catch (err) {
        throw explainAwsError(err, 'ec2:GetConsoleOutput', instanceId);
      }
      const text = out.Output ? Buffer.from(out.Output, 'base64').toString('utf8') : '';
      return text.length ? text : undefined;
    });
  } catch (err) {
    if (err instanceof CloudError && err.kind === 'failed' && /gave up waiting/.test(err.message)) return '';
    throw err;
  }
}

/** Ends a drill: terminates the instance and deregisters the AMI (the EBS snapshots stay). */
export async function cleanupDrill(ec2: EC2Client, ids: { instanceId?: string; imageId?: string }): Promise<void> {
  if (ids.instanceId) {
    try {
      await ec2.send(new TerminateInstancesCommand({ InstanceIds: [ids.instanceId] }));
    } catch (err) {
      throw explainAwsError(err, 'ec2:TerminateInstances', ids.instanceId);
    }
  }
  if (ids.imageId) {
    try {
      await ec2.send(new DeregisterImageCommand({ ImageId: ids.imageId }));
    } catch (err) {
      throw explainAwsError(err, 'ec2:DeregisterImage', ids.imageId);
    }
  }
}
