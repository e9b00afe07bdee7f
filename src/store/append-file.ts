import { promises as fsp } from 'node:fs';

/**
 * A new file written by appending pieces at its end (one pwritev per call), for puts in
 * pieces: FsStore's temp beside the object, S3Store's spool before the PUT. Created
 * with O_EXCL and mode 0600.
 */
export class AppendFile {
  size = 0;
  private closed = false;

  private constructor(
    readonly path: string,
    private readonly fh: fsp.FileHandle,
  ) {}

  static async create(path: string): Promise<AppendFile> {
    return new AppendFile(path, await fsp.open(path, 'wx+', 0o600)); // read too: S3Store sends multipart parts from it
  }

  async append(parts: readonly Uint8Array[]): Promise<void> {
    let left = parts.filter((p) => p.byteLength > 0);
    while (left.length > 0) {
      const { bytesWritten } = await this.fh.writev(left, this.size);
      this.size += bytesWritten;
      left = skipBytes(left, bytesWritten);
    }
  }

  /** `length` bytes from `offset` (within what was appended). */
  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.allocUnsafe(length);
    for (let done = 0; done < length; ) {
      const { bytesRead } = await this.fh.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw new Error(`${this.path}: short read at ${offset + done}`);
      done += bytesRead;
    }
    return buf;
  }

  sync(): Promise<void> {
    return this.fh.sync();
  }

  /** The handle, for a sync hook that wants it (FsStore's syncFile). */
  get handle(): fsp.FileHandle {
    return this.fh;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }

  /** Closes (whatever that says) and deletes the file. */
  async remove(): Promise<void> {
    await this.close().catch(() => {});
    await fsp.rm(this.path, { force: true });
  }
}

/** The parts after their first `n` bytes. */
function skipBytes(parts: Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  while (i < parts.length && n >= parts[i]!.byteLength) n -= parts[i++]!.byteLength;
  const rest = parts.slice(i);
  if (n > 0 && rest.length > 0) rest[0] = rest[0]!.subarray(n);
  return rest;
}
