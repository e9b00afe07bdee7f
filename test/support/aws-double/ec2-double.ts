/**
 * TEST DOUBLE of the EC2 Query API operations pilotlight uses (API version 2016-11-15),
 * for tests only; it is not AWS. Requests are form-encoded POSTs with an Action;
 * responses are XML in the EC2 namespace; errors are <Response><Errors><Error>.
 * Also GetConsoleOutput (a fixed text once running) and DeregisterImage.
 * Images, instances and import tasks move pending -> available/running/completed
 * after `pollsToReady` Describe calls.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { EBS_BLOCK_SIZE } from './ebs-double.js';
import type { AwsDoubleState, DoubleImage, DoubleImportTask, DoubleInstance, DoubleSnapshot } from './state.js';

const NS = 'http://ec2.amazonaws.com/doc/2016-11-15/';
const GIB = 1024 * 1024 * 1024;

export class Ec2Error extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Arrays become <name><item>..</item></name>; objects nest; undefined is left out. */
function xml(name: string, value: unknown): string {
  if (value === undefined || value === null) return '';
  if (Array.isArray(value)) return `<${name}>${value.map((v) => xml('item', v)).join('')}</${name}>`;
  if (value instanceof Date) return `<${name}>${value.toISOString()}</${name}>`;
  if (typeof value === 'object') {
    return `<${name}>${Object.entries(value as Record<string, unknown>).map(([k, v]) => xml(k, v)).join('')}</${name}>`;
  }
  return `<${name}>${esc(String(value))}</${name}>`;
}

function send(res: ServerResponse, action: string, body: Record<string, unknown>): void {
  const inner = Object.entries({ requestId: randomBytes(8).toString('hex'), ...body })
    .map(([k, v]) => xml(k, v))
    .join('');
  const text = `<?xml version="1.0" encoding="UTF-8"?>\n<${action}Response xmlns="${NS}">${inner}</${action}Response>`;
  res.writeHead(200, { 'content-type': 'text/xml;charset=UTF-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export function sendEc2Error(res: ServerResponse, err: Ec2Error): void {
  const text =
    `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${esc(err.code)}</Code>` +
    `<Message>${esc(err.message)}</Message></Error></Errors><RequestID>${randomBytes(8).toString('hex')}</RequestID></Response>`;
  res.writeHead(err.status, { 'content-type': 'text/xml;charset=UTF-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

type Params = Map<string, string>;

/** Values of Prefix.1, Prefix.2, ... in order. */
function list(p: Params, prefix: string): string[] {
  const out: string[] = [];
  for (let i = 1; p.has(`${prefix}.${i}`); i++) out.push(p.get(`${prefix}.${i}`)!);
  return out;
}

/** Members of Prefix.N.* as objects keyed by the rest of the name, in N order. */
function structs(p: Params, prefix: string): Record<string, string>[] {
  const by = new Map<number, Record<string, string>>();
  for (const [k, v] of p) {
    if (!k.startsWith(prefix + '.')) continue;
    const rest = k.slice(prefix.length + 1);
    const dot = rest.indexOf('.');
    const n = Number(dot < 0 ? rest : rest.slice(0, dot));
    if (!Number.isInteger(n)) continue;
    const o = by.get(n) ?? {};
    o[dot < 0 ? '' : rest.slice(dot + 1)] = v;
    by.set(n, o);
  }
  return [...by.entries()].sort((a, b) => a[0] - b[0]).map((e) => e[1]);
}

function id(prefix: string): string {
  return `${prefix}-${randomBytes(9).toString('hex').slice(0, 17)}`;
}

function bool(v: string | undefined): boolean | undefined {
  return v === undefined ? undefined : v === 'true';
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const p of req) parts.push(p as Buffer);
  return Buffer.concat(parts).toString();
}

function snapshotXml(s: DoubleSnapshot) {
  return {
    snapshotId: s.id,
    volumeId: 'vol-ffffffff',
    status: s.status,
    startTime: s.startTime,
    progress: s.status === 'completed' ? '100%' : '0%',
    ownerId: '123456789012',
    volumeSize: s.volumeSize,
    description: s.description,
    encrypted: s.encrypted,
    kmsKeyId: s.kmsKeyArn,
  };
}

function imageXml(i: DoubleImage) {
  return {
    imageId: i.id,
    imageLocation: `123456789012/${i.name}`,
    imageState: i.state,
    imageOwnerId: '123456789012',
    isPublic: false,
    architecture: i.architecture,
    imageType: 'machine',
    name: i.name,
    rootDeviceType: 'ebs',
    rootDeviceName: i.rootDeviceName,
    blockDeviceMapping: i.mappings.map((m) => ({
      deviceName: m.deviceName,
      ebs: { snapshotId: m.snapshotId, volumeSize: m.volumeSize, deleteOnTermination: m.deleteOnTermination, volumeType: m.volumeType },
    })),
    virtualizationType: i.virtualizationType,
    hypervisor: 'xen',
    enaSupport: i.enaSupport,
    sriovNetSupport: i.sriovNetSupport,
    bootMode: i.bootMode,
  };
}

function instanceXml(i: DoubleInstance) {
  const code = { pending: 0, running: 16, terminated: 48 }[i.state];
  return {
    instanceId: i.id,
    imageId: i.imageId,
    instanceState: { code, name: i.state },
    privateDnsName: '',
    keyName: i.keyName,
    amiLaunchIndex: 0,
    instanceType: i.instanceType,
    launchTime: i.launchTime,
    subnetId: i.subnetId,
    groupSet: i.securityGroupIds.map((g) => ({ groupId: g, groupName: g })),
    tagSet: i.tags,
  };
}

function importXml(t: DoubleImportTask) {
  return {
    importTaskId: t.id,
    description: t.description,
    snapshotTaskDetail: {
      diskImageSize: t.diskImageSize,
      format: t.format,
      progress: t.status === 'active' ? String(t.progress) : undefined,
      snapshotId: t.snapshotId,
      status: t.status,
      statusMessage: t.statusMessage,
      userBucket: { s3Bucket: t.bucket, s3Key: t.key },
    },
  };
}

/** Reads the RAW image from S3 into a completed snapshot, as EC2 VM Import would. */
async function runImport(state: AwsDoubleState, t: DoubleImportTask): Promise<void> {
  const s3cfg = state.options.s3;
  try {
    if (!s3cfg) throw new Error('ClientError: the test double was started without an S3 endpoint');
    if (t.format.toUpperCase() !== 'RAW') throw new Error(`ClientError: the test double only imports RAW images, not ${t.format}`);
    const s3 = new S3Client({
      endpoint: s3cfg.endpoint,
      region: s3cfg.region ?? 'us-east-1',
      forcePathStyle: s3cfg.forcePathStyle ?? true,
      credentials: { accessKeyId: s3cfg.accessKeyId, secretAccessKey: s3cfg.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    try {
      const out = await s3.send(new GetObjectCommand({ Bucket: t.bucket, Key: t.key }));
      const size = Number(out.ContentLength);
      t.diskImageSize = size;
      const snap: DoubleSnapshot = {
        id: id('snap'),
        volumeSize: Math.max(1, Math.ceil(size / GIB)),
        status: 'pending',
        startTime: new Date(),
        description: `Created by AWS-VMImport service for ${t.id}`,
        tags: [],
        blocks: new Map(),
        writes: new Set(),
        source: 'import',
        encrypted: false,
      };
      let buf = Buffer.alloc(EBS_BLOCK_SIZE);
      let fill = 0;
      let index = 0;
      const flush = () => {
        if (buf.some((b) => b !== 0)) {
          snap.blocks.set(index, { data: buf, checksum: createHash('sha256').update(buf).digest('base64'), version: ++state.blockVersion });
          snap.writes.add(index);
        }
        index++;
        buf = Buffer.alloc(EBS_BLOCK_SIZE);
        fill = 0;
      };
      for await (const piece of out.Body as AsyncIterable<Uint8Array>) {
        let off = 0;
        while (off < piece.length) {
          const n = Math.min(piece.length - off, EBS_BLOCK_SIZE - fill);
          buf.set(piece.subarray(off, off + n), fill);
          fill += n;
          off += n;
          if (fill === EBS_BLOCK_SIZE) flush();
        }
        t.progress = Math.min(99, Math.floor(((index * EBS_BLOCK_SIZE + fill) / Math.max(1, size)) * 100));
      }
      if (fill > 0) flush();
      snap.status = 'completed';
      snap.completedAt = new Date();
      state.snapshots.set(snap.id, snap);
      t.snapshotId = snap.id;
    } finally {
      s3.destroy();
    }
  } catch (err) {
    t.error = `ClientError: cannot read s3://${t.bucket}/${t.key}: ${(err as Error).message}`;
  }
}

function requireSnapshot(state: AwsDoubleState, sid: string): DoubleSnapshot {
  const s = state.snapshots.get(sid);
  if (!s) throw new Ec2Error(400, 'InvalidSnapshot.NotFound', `The snapshot '${sid}' does not exist.`);
  return s;
}

export async function handleEc2(state: AwsDoubleState, req: IncomingMessage, res: ServerResponse): Promise<void> {
  try {
    const p: Params = new Map(new URLSearchParams(await readBody(req)));
    const action = p.get('Action') ?? '';
    if (!req.headers.authorization) throw new Ec2Error(401, 'AuthFailure', 'AWS was not able to validate the provided access credentials');
    if (p.get('Version') !== '2016-11-15') throw new Ec2Error(400, 'InvalidParameterValue', `Unsupported Version ${p.get('Version')}`);
    state.counters.ec2[action] = (state.counters.ec2[action] ?? 0) + 1;
    if (state.options.deny?.includes(`ec2:${action}`)) {
      throw new Ec2Error(403, 'UnauthorizedOperation', 'You are not authorized to perform this operation.');
    }
    if (p.get('DryRun') === 'true') throw new Ec2Error(412, 'DryRunOperation', 'Request would have succeeded, but DryRun flag is set.');
    const ready = state.options.pollsToReady ?? 1;

    switch (action) {
      case 'DescribeSnapshots': {
        const ids = list(p, 'SnapshotId');
        const snaps = ids.length ? ids.map((i) => requireSnapshot(state, i)) : [...state.snapshots.values()];
        return send(res, action, { snapshotSet: snaps.map(snapshotXml) });
      }
      case 'RegisterImage': {
        const name = p.get('Name');
        if (!name) throw new Ec2Error(400, 'MissingParameter', 'The request must contain the parameter Name');
        if ([...state.images.values()].some((i) => i.name === name)) {
          throw new Ec2Error(400, 'InvalidAMIName.Duplicate', `AMI name ${name} is already in use by another AMI`);
        }
        const arch = p.get('Architecture') ?? 'i386';
        if (!['i386', 'x86_64', 'arm64', 'x86_64_mac', 'arm64_mac'].includes(arch)) {
          throw new Ec2Error(400, 'InvalidParameterValue', `Invalid value '${arch}' for architecture`);
        }
        const bootMode = p.get('BootMode');
        if (bootMode && !['legacy-bios', 'uefi', 'uefi-preferred'].includes(bootMode)) {
          throw new Ec2Error(400, 'InvalidParameterValue', `Invalid value '${bootMode}' for bootMode`);
        }
        const root = p.get('RootDeviceName');
        if (!root) throw new Ec2Error(400, 'InvalidParameterValue', 'RootDeviceName is required when registering an EBS-backed AMI from snapshots');
        const maps = structs(p, 'BlockDeviceMapping').map((m) => {
          const snap = requireSnapshot(state, m['Ebs.SnapshotId']);
          if (snap.status !== 'completed') throw new Ec2Error(400, 'IncorrectState', `Snapshot '${snap.id}' is not completed`);
          const size = m['Ebs.VolumeSize'] ? Number(m['Ebs.VolumeSize']) : snap.volumeSize;
          if (size < snap.volumeSize) {
            throw new Ec2Error(400, 'InvalidBlockDeviceMapping', `Volume of ${size} GiB is smaller than snapshot ${snap.id} (${snap.volumeSize} GiB)`);
          }
          return {
            deviceName: m.DeviceName,
            snapshotId: snap.id,
            volumeSize: size,
            volumeType: m['Ebs.VolumeType'] ?? 'gp2',
            deleteOnTermination: m['Ebs.DeleteOnTermination'] !== 'false',
          };
        });
        if (!maps.some((m) => m.deviceName === root)) {
          throw new Ec2Error(400, 'InvalidBlockDeviceMapping', `No block device mapping for the root device ${root}`);
        }
        if (new Set(maps.map((m) => m.deviceName)).size !== maps.length) {
          throw new Ec2Error(400, 'InvalidBlockDeviceMapping', 'Duplicate device names in the block device mappings');
        }
        const img: DoubleImage = {
          id: id('ami'),
          name,
          state: 'pending',
          architecture: arch,
          rootDeviceName: root,
          bootMode,
          enaSupport: bool(p.get('EnaSupport')),
          sriovNetSupport: p.get('SriovNetSupport'),
          virtualizationType: p.get('VirtualizationType') ?? 'paravirtual',
          mappings: maps,
          polls: 0,
        };
        state.images.set(img.id, img);
        return send(res, action, { imageId: img.id });
      }
      case 'DescribeImages': {
        const ids = list(p, 'ImageId');
        const filters = structs(p, 'Filter');
        if (!ids.length) {
          // Owner self (every image of the double is) and `name` filters only.
          const names = filters.filter((f) => f.Name === 'name').flatMap((f) => Object.entries(f).filter(([k]) => k.startsWith('Value.')).map(([, v]) => v));
          const hits = [...state.images.values()].filter((i) => !names.length || names.includes(i.name));
          return send(res, action, { imagesSet: hits.map(imageXml) });
        }
        const imgs = ids.map((i) => {
          const img = state.images.get(i);
          if (!img) throw new Ec2Error(400, 'InvalidAMIID.NotFound', `The image id '[${i}]' does not exist`);
          if (img.state === 'pending' && ++img.polls >= ready) img.state = 'available';
          return img;
        });
        return send(res, action, { imagesSet: imgs.map(imageXml) });
      }
      case 'RunInstances': {
        const imageId = p.get('ImageId') ?? '';
        const img = state.images.get(imageId);
        if (!img) throw new Ec2Error(400, 'InvalidAMIID.NotFound', `The image id '[${imageId}]' does not exist`);
        if (img.state !== 'available') throw new Ec2Error(400, 'InvalidAMIID.Unavailable', `The image '${imageId}' is not available`);
        const type = p.get('InstanceType') ?? 'm1.small';
        if (!/^[a-z][a-z0-9-]*\.[a-z0-9]+$/.test(type)) throw new Ec2Error(400, 'InvalidParameterValue', `Invalid value '${type}' for InstanceType.`);
        const subnet = p.get('SubnetId');
        if (subnet && !/^subnet-[0-9a-f]+$/.test(subnet)) throw new Ec2Error(400, 'InvalidSubnetID.NotFound', `The subnet ID '${subnet}' does not exist`);
        const groups = list(p, 'SecurityGroupId');
        for (const g of groups) if (!/^sg-[0-9a-f]+$/.test(g)) throw new Ec2Error(400, 'InvalidGroup.NotFound', `The security group '${g}' does not exist`);
        const min = Number(p.get('MinCount'));
        const max = Number(p.get('MaxCount'));
        if (!(min >= 1 && max >= min)) throw new Ec2Error(400, 'InvalidParameterValue', 'MinCount and MaxCount must be >= 1');
        const running = [...state.instances.values()].filter((i) => i.state !== 'terminated').length;
        if (state.options.maxInstances !== undefined && running + min > state.options.maxInstances) {
          throw new Ec2Error(400, 'VcpuLimitExceeded', 'You have requested more vCPU capacity than your current vCPU limit allows.');
        }
        const tags: { key: string; value: string }[] = [];
        for (const spec of structs(p, 'TagSpecification')) {
          if (spec.ResourceType !== 'instance') continue;
          for (let i = 1; spec[`Tag.${i}.Key`] !== undefined; i++) tags.push({ key: spec[`Tag.${i}.Key`], value: spec[`Tag.${i}.Value`] ?? '' });
        }
        const inst: DoubleInstance = {
          id: id('i'),
          imageId,
          instanceType: type,
          subnetId: subnet,
          securityGroupIds: groups,
          keyName: p.get('KeyName'),
          tags,
          state: 'pending',
          polls: 0,
          launchTime: new Date(),
        };
        state.instances.set(inst.id, inst);
        return send(res, action, {
          reservationId: id('r'),
          ownerId: '123456789012',
          groupSet: [],
          instancesSet: [instanceXml(inst)],
        });
      }
      case 'DescribeInstances': {
        const ids = list(p, 'InstanceId');
        const insts = ids.map((i) => {
          const inst = state.instances.get(i);
          if (!inst) throw new Ec2Error(400, 'InvalidInstanceID.NotFound', `The instance ID '${i}' does not exist`);
          if (inst.state === 'pending' && ++inst.polls >= ready) inst.state = 'running';
          return inst;
        });
        return send(res, action, {
          reservationSet: insts.map((i) => ({ reservationId: 'r-0', ownerId: '123456789012', groupSet: [], instancesSet: [instanceXml(i)] })),
        });
      }
      case 'TerminateInstances': {
        const ids = list(p, 'InstanceId');
        const out = ids.map((i) => {
          const inst = state.instances.get(i);
          if (!inst) throw new Ec2Error(400, 'InvalidInstanceID.NotFound', `The instance ID '${i}' does not exist`);
          const prev = inst.state;
          inst.state = 'terminated';
          return { instanceId: i, previousState: { name: prev }, currentState: { code: 48, name: 'terminated' } };
        });
        return send(res, action, { instancesSet: out });
      }
      case 'GetConsoleOutput': {
        const iid = p.get('InstanceId') ?? '';
        const inst = state.instances.get(iid);
        if (!inst) throw new Ec2Error(400, 'InvalidInstanceID.NotFound', `The instance ID '${iid}' does not exist`);
        // Nothing boots here: once the instance runs the double answers a fixed, labelled text.
        const img = state.images.get(inst.imageId);
        const text =
          inst.state === 'running'
            ? `[aws test double] console of ${inst.id}: not a real boot.\nimage ${inst.imageId} root ${img?.mappings[0]?.snapshotId ?? '?'} boot mode ${img?.bootMode ?? '?'}\nlogin: \n`
            : '';
        return send(res, action, { instanceId: iid, timestamp: new Date(), output: text ? Buffer.from(text).toString('base64') : undefined });
      }
      case 'DeregisterImage': {
        const iid = p.get('ImageId') ?? '';
        if (!state.images.delete(iid)) throw new Ec2Error(400, 'InvalidAMIID.NotFound', `The image id '[${iid}]' does not exist`);
        return send(res, action, { return: true });
      }
      case 'ImportSnapshot': {
        const format = p.get('DiskContainer.Format') ?? '';
        const bucket = p.get('DiskContainer.UserBucket.S3Bucket');
        const key = p.get('DiskContainer.UserBucket.S3Key');
        if (!bucket || !key) throw new Ec2Error(400, 'InvalidParameter', 'DiskContainer.UserBucket.S3Bucket and S3Key are required');
        const t: DoubleImportTask = {
          id: id('import-snap'),
          description: p.get('Description'),
          bucket,
          key,
          format,
          status: 'active',
          statusMessage: 'pending',
          progress: 0,
          polls: 0,
          done: Promise.resolve(),
        };
        t.done = runImport(state, t);
        state.importTasks.set(t.id, t);
        return send(res, action, importXml(t));
      }
      case 'DescribeImportSnapshotTasks': {
        const ids = list(p, 'ImportTaskId');
        const tasks = await Promise.all(
          (ids.length ? ids : [...state.importTasks.keys()]).map(async (i) => {
            const t = state.importTasks.get(i);
            if (!t) throw new Ec2Error(400, 'InvalidConversionTaskId.Malformed', `The import task '${i}' does not exist`);
            if (t.status === 'active' && ++t.polls >= ready) {
              await t.done;
              if (t.error) {
                t.status = 'deleted';
                t.statusMessage = t.error;
              } else {
                t.status = 'completed';
                t.statusMessage = undefined;
              }
            } else if (t.status === 'active') {
              t.statusMessage = 'converting';
            }
            return t;
          }),
        );
        return send(res, action, { importSnapshotTaskSet: tasks.map(importXml) });
      }
      default:
        throw new Ec2Error(400, 'InvalidAction', `The action ${action} is not valid for this web service (test double).`);
    }
  } catch (err) {
    if (err instanceof Ec2Error) return sendEc2Error(res, err);
    throw err;
  }
}
