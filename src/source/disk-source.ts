/**
 * DiskSource: where the bytes of a VM's disks come from, for one backup run.
 *
 * A source is opened on a consistent point in time (a vSphere snapshot, an image
 * file that is not being written) and closed when the run ends, success or not.
 * Offsets and lengths are byte counts; they stay exact up to 2^53 (8 PiB), which the
 * sources check instead of rounding.
 */
export interface DiskSource {
  /** What is being backed up: a VM name, or the image files' names. */
  readonly vm: string;
  /**
   * The consistency point: when the content being read was frozen (the vSphere snapshot
   * was taken, a file backup started reading, the image's own snapshot time). The
   * snapshot record's `time`; the engine uses the backup's start when a source has none.
   */
  readonly consistencyTime?: Date;
  /** The disks, in the order the snapshot records them (index 0 is the boot disk). */
  disks(): Promise<SourceDisk[]>;
  /** Releases the source (removes the vSphere snapshot, closes files). Idempotent. */
  close(): Promise<void>;
}

export interface SourceDisk {
  /** Stable name of the disk within the VM: `scsi0:0`, `disk-2000`, the file name. */
  readonly name: string;
  /** Size in bytes. */
  readonly capacity: number;
  /**
   * The change-tracking token of this point in time (a vSphere changeId), kept in the
   * snapshot record so the next run can ask for what changed since; undefined when the
   * source has none.
   */
  readonly changeToken?: string;

  /**
   * Which byte ranges to read. `since` is the token the parent snapshot recorded for
   * this disk (undefined on a first backup, or when the parent has none); `hasParent`
   * says whether a parent disk of the same capacity exists at all (a file source
   * with a change list needs it: its change lists carry no token).
   * - kind 'changed': only these ranges may differ from the parent; everything else is
   *   the parent's content.
   * - kind 'allocated': the disk's content is these ranges; everything else reads as
   *   zeros. Used when there is no parent, no token, or the token was refused.
   * Ranges are sorted, non-overlapping, and inside [0, capacity).
   */
  extents(since: string | undefined, hasParent?: boolean): Promise<ExtentPlan>;

  /**
   * Reads exactly `length` bytes at `offset` into `buf` (from its start). Several reads
   * may be in flight at once. Throws on a short read or an I/O error.
   */
  read(buf: Uint8Array, offset: number, length: number): Promise<void>;
}

export interface Extent {
  offset: number;
  length: number;
}

export interface ExtentPlan {
  kind: 'changed' | 'allocated';
  extents: Extent[];
  /** Why this plan was chosen, for the report: 'change list', 'SEEK_DATA', 'full read', 'change id refused: ...'. */
  reason: string;
}
