/** In-memory state of the AWS TEST DOUBLE (tests only; not AWS). */

export interface DoubleBlock {
  data: Buffer;
  checksum: string;
  /** Unique per write; two lineages show the same block when the versions are equal. */
  version: number;
}

export interface DoubleSnapshot {
  id: string;
  parentId?: string;
  /** GiB. */
  volumeSize: number;
  status: 'pending' | 'completed' | 'error';
  startTime: Date;
  completedAt?: Date;
  description?: string;
  tags: { Key?: string; Value?: string }[];
  clientToken?: string;
  /** Blocks written to this snapshot itself (the parent's are found through parentId). */
  blocks: Map<number, DoubleBlock>;
  /** Distinct block indexes written (ChangedBlocksCount must equal its size). */
  writes: Set<number>;
  source: 'ebs-direct' | 'import';
  encrypted: boolean;
  kmsKeyArn?: string;
  rateWindow?: { sec: number; count: number };
}

export interface DoubleImage {
  id: string;
  name: string;
  state: 'pending' | 'available' | 'failed';
  architecture: string;
  rootDeviceName: string;
  bootMode?: string;
  enaSupport?: boolean;
  sriovNetSupport?: string;
  virtualizationType: string;
  mappings: { deviceName: string; snapshotId: string; volumeSize: number; volumeType: string; deleteOnTermination: boolean }[];
  polls: number;
}

export interface DoubleInstance {
  id: string;
  imageId: string;
  instanceType: string;
  subnetId?: string;
  securityGroupIds: string[];
  keyName?: string;
  tags: { key: string; value: string }[];
  state: 'pending' | 'running' | 'terminated';
  polls: number;
  launchTime: Date;
}

export interface DoubleImportTask {
  id: string;
  description?: string;
  bucket: string;
  key: string;
  format: string;
  status: 'active' | 'completed' | 'deleted';
  statusMessage?: string;
  progress: number;
  snapshotId?: string;
  diskImageSize?: number;
  polls: number;
  error?: string;
  done: Promise<void>;
}

export interface AwsDoubleOptions {
  /** IAM actions to refuse, e.g. 'ebs:PutSnapshotBlock', 'ec2:RunInstances'. */
  deny?: string[];
  /** PutSnapshotBlock requests allowed per snapshot per second (AWS default 1,000); unset = unlimited. */
  putRatePerSnapshot?: number;
  /** Milliseconds each PutSnapshotBlock waits before answering (network latency). */
  putLatencyMs?: number;
  /** At most this many pending EBS direct snapshots (ServiceQuotaExceededException above). */
  maxPendingSnapshots?: number;
  /** At most this many instances (InstanceLimitExceeded above). */
  maxInstances?: number;
  /** DescribeImages / DescribeInstances / DescribeImportSnapshotTasks polls before a state change. */
  pollsToReady?: number;
  /** S3 endpoint that ImportSnapshot reads the disk image from. */
  s3?: { endpoint: string; region?: string; accessKeyId: string; secretAccessKey: string; forcePathStyle?: boolean };
  faults?: {
    /** Every Nth PutSnapshotBlock answers RequestThrottledException. */
    throttleEvery?: number;
    /** Every Nth PutSnapshotBlock answers 500 InternalServerException. */
    serverErrorEvery?: number;
    /** The next StartSnapshot creates the snapshot but answers 500 (a lost response). */
    loseNextStartResponse?: boolean;
    /** After this many accepted blocks, every PutSnapshotBlock answers 500 (an outage). */
    failPutsAfter?: number;
  };
}

export interface AwsDoubleState {
  options: AwsDoubleOptions;
  snapshots: Map<string, DoubleSnapshot>;
  images: Map<string, DoubleImage>;
  instances: Map<string, DoubleInstance>;
  importTasks: Map<string, DoubleImportTask>;
  blockVersion: number;
  bytesReceived: number;
  inFlightPuts: number;
  counters: {
    StartSnapshot: number;
    PutSnapshotBlock: number;
    PutSnapshotBlockOk: number;
    /** Most PutSnapshotBlock requests seen at once. */
    maxInFlightPuts: number;
    CompleteSnapshot: number;
    GetSnapshotBlock: number;
    throttled: number;
    checksumRejected: number;
    /** PutSnapshotBlock requests that sent x-amz-content-sha256: UNSIGNED-PAYLOAD. */
    unsignedPayload: number;
    ec2: Record<string, number>;
  };
}

export function newState(options: AwsDoubleOptions): AwsDoubleState {
  return {
    options,
    snapshots: new Map(),
    images: new Map(),
    instances: new Map(),
    importTasks: new Map(),
    blockVersion: 0,
    bytesReceived: 0,
    inFlightPuts: 0,
    counters: {
      StartSnapshot: 0,
      PutSnapshotBlock: 0,
      PutSnapshotBlockOk: 0,
      maxInFlightPuts: 0,
      CompleteSnapshot: 0,
      GetSnapshotBlock: 0,
      throttled: 0,
      checksumRejected: 0,
      unsignedPayload: 0,
      ec2: {},
    },
  };
}
