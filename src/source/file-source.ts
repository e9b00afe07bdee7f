import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { UserError } from '../repo/errors.js';
import { DiskSource, Extent, ExtentPlan, SourceDisk } from './disk-source.js';
import { readChangeList } from './extents.js';
import { allocatedExtents, seekEnd } from './seek-data.js';

export interface FileSourceOptions {
  /** Change list per disk (same order as the images); undefined entries mean none. */
  changedExtents?: (string | undefined)[];
  /** Read every byte, ignoring holes and change lists. */
  full?: boolean;
  /**
   * When the images' content was frozen (an LVM/ZFS/array snapshot taken earlier).
   * Default: when the source is opened, just before reading starts.
   */
  takenAt?: Date;
}

/**
 * Raw disk images or block devices, one per disk, in order. Disks are named
 * `disk0`, `disk1`, ... by position, so a series of exported images with changing
 * file names still pairs each disk with its parent.
 */
export class FileSource implements DiskSource {
  private constructor(
    readonly vm: string,
    private readonly list: FileDisk[],
    readonly consistencyTime: Date,
  ) {}

  static async open(vm: string, images: string[], options: FileSourceOptions = {}): Promise<FileSource> {
    if (images.length === 0) throw new UserError('no image given');
    const consistencyTime = options.takenAt ?? new Date();
    if (!Number.isFinite(consistencyTime.getTime())) throw new UserError('the time the images were taken at is not a valid date');
    const disks: FileDisk[] = [];
    try {
      for (let i = 0; i < images.length; i++) {
        disks.push(await FileDisk.open(`disk${i}`, images[i]!, options.changedExtents?.[i], options.full ?? false));
      }
    } catch (err) {
      await Promise.all(disks.map((d) => d.close()));
      throw err;
    }
    return new FileSource(vm, disks, consistencyTime);
  }

  async disks(): Promise<SourceDisk[]> {
    return this.list;
  }

  async close(): Promise<void> {
    await Promise.all(this.list.map((d) => d.close()));
  }
}

class FileDisk implements SourceDisk {
  private closed = false;

  private constructor(
    readonly name: string,
    readonly file: string,
    private readonly fh: fsp.FileHandle,
    readonly capacity: number,
    private readonly changeList: string | undefined,
    private readonly full: boolean,
  ) {}

  static async open(name: string, file: string, changeList: string | undefined, full: boolean): Promise<FileDisk> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(file, 'r');
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      const why = e.code === 'ENOENT' ? 'no such file' : e.code === 'EACCES' ? 'permission denied' : e.message;
      throw new UserError(`cannot open image ${file}: ${why}`);
    }
    try {
      const st = await fh.stat();
      let capacity: number;
      if (st.isFile()) capacity = st.size;
      else if (st.isBlockDevice()) {
        const end = seekEnd(fh.fd);
        if (end === null) throw new UserError(`cannot find the size of block device ${file}`);
        capacity = end;
      } else throw new UserError(`${file} is neither a regular file nor a block device`);
      if (capacity === 0) throw new UserError(`image ${file} is empty`);
      return new FileDisk(name, path.resolve(file), fh, capacity, changeList, full);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  async extents(_since: string | undefined, hasParent = false): Promise<ExtentPlan> {
    const whole: Extent[] = [{ offset: 0, length: this.capacity }];
    if (this.full) return { kind: 'allocated', extents: whole, reason: 'full read (--full)' };
    if (this.changeList && hasParent) {
      return { kind: 'changed', extents: await readChangeList(this.changeList, this.capacity), reason: `change list ${this.changeList}` };
    }
    if (this.changeList) await readChangeList(this.changeList, this.capacity); // still reject a bad list
    const alloc = allocatedExtents(this.fh.fd, this.capacity);
    const first = this.changeList ? 'first backup of this disk, change list not applicable; ' : '';
    if (alloc) return { kind: 'allocated', extents: alloc, reason: `${first}allocated extents (SEEK_DATA)` };
    return { kind: 'allocated', extents: whole, reason: `${first}full read (SEEK_DATA not supported)` };
  }

  async read(buf: Uint8Array, offset: number, length: number): Promise<void> {
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw new Error(`short read from ${this.file} at ${offset + done}: the image shrank during the backup`);
      done += bytesRead;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}
