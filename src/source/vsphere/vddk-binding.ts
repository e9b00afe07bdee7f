/**
 * koffi binding of VMware's Virtual Disk Development Kit (libvixDiskLib.so, VDDK 7/8).
 *
 * Load it only in the VDDK worker process (vddk-worker.ts): VDDK must be found through
 * LD_LIBRARY_PATH set before the process starts, and it ships its own OpenSSL, which
 * must not share a process with Node's more than necessary.
 *
 * Struct layouts are those of VDDK 7/8 on x86_64 (VixDiskLibConnectParams 128 bytes,
 * VixDiskLibInfo 64 bytes) and are checked when the binding loads.
 */
import koffi from 'koffi';

export const VIX_OK = 0n;
export const VIX_ASYNC = 25000n;
export const VIXDISKLIB_FLAG_OPEN_READ_ONLY = 4;
export const VIXDISKLIB_CRED_UID = 1;
export const VIXDISKLIB_SPEC_VMX = 0;
export const SECTOR_SIZE = 512;

export class VddkError extends Error {
  constructor(
    readonly operation: string,
    readonly code: bigint,
    readonly vddkText: string,
  ) {
    super(`VDDK ${operation} failed: ${vddkText} (VixError ${code})`);
    this.name = 'VddkError';
  }
}

export interface ConnectParams {
  /** `moref=vm-42` */
  vmxSpec: string;
  serverName: string;
  /** SHA-1 fingerprint of the server certificate, `AA:BB:...` */
  thumbprint: string;
  userName: string;
  password: string;
  port?: number;
  nfcHostPort?: number;
}

export interface DiskInfo {
  /** Capacity in bytes (sectors * 512), exact. */
  capacity: bigint;
  adapterType: number;
  numLinks: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
}

export interface Block {
  /** In sectors. */
  offset: bigint;
  length: bigint;
}

type Handle = unknown;
type Connection = unknown;

/* eslint-disable @typescript-eslint/no-explicit-any */
type Fn = ((...args: any[]) => any) & { async: (...args: any[]) => void };

const Geometry = koffi.struct('VixDiskLibGeometry', { cylinders: 'uint32_t', heads: 'uint32_t', sectors: 'uint32_t' });
const Uid = koffi.struct('VixDiskLibUidCreds', { userName: 'char *', password: 'char *' });
const SessionId = koffi.struct('VixDiskLibSessionIdCreds', { cookie: 'char *', userName: 'char *', key: 'char *' });
const Creds = koffi.union('VixDiskLibCreds', { uid: Uid, sessionId: SessionId, reserved2: 'void *' });
const VStorageObjectSpec = koffi.struct('VixDiskLibVStorageObjectSpec', { id: 'char *', datastoreMoRef: 'char *', ssId: 'char *' });
const Spec = koffi.union('VixDiskLibSpec', { vStorageObjSpec: VStorageObjectSpec });
export const ConnectParamsType = koffi.struct('VixDiskLibConnectParams', {
  vmxSpec: 'char *',
  serverName: 'char *',
  thumbPrint: 'char *',
  reserved1: 'long',
  credType: 'int',
  creds: Creds,
  port: 'uint32_t',
  nfcHostPort: 'uint32_t',
  reserved3: 'char *',
  reserved4: koffi.array('char', 8),
  reserved5: 'void *',
  spec: Spec,
  specType: 'int',
});
export const InfoType = koffi.struct('VixDiskLibInfo', {
  biosGeo: Geometry,
  physGeo: Geometry,
  capacity: 'uint64_t',
  adapterType: 'int',
  numLinks: 'int',
  parentFileNameHint: 'char *',
  uuid: 'char *',
  logicalSectorSize: 'uint32_t',
  physicalSectorSize: 'uint32_t',
});
const BlockType = koffi.struct('VixDiskLibBlock', { offset: 'uint64_t', length: 'uint64_t' });
const CompletionCB = koffi.proto('void VixDiskLibCompletionCB(void *data, uint64_t result)');

if (koffi.sizeof(ConnectParamsType) !== 128 || koffi.sizeof(InfoType) !== 64) {
  throw new Error(
    `VDDK struct layout mismatch: VixDiskLibConnectParams is ${koffi.sizeof(ConnectParamsType)} bytes (want 128), ` +
      `VixDiskLibInfo is ${koffi.sizeof(InfoType)} bytes (want 64); this platform is not supported`,
  );
}

function big(v: unknown): bigint {
  return typeof v === 'bigint' ? v : BigInt(v as number);
}

/** The library, loaded by name (`libvixDiskLib.so`) or from a path. */
export class VddkLibrary {
  private readonly fn: Record<string, Fn> = {};
  private readonly pending = new Map<bigint, (err: bigint) => void>();
  private readonly completion: unknown;

  constructor(libraryPath = 'libvixDiskLib.so') {
    let lib: ReturnType<typeof koffi.load>;
    try {
      lib = koffi.load(libraryPath);
    } catch (err) {
      throw new Error(
        `cannot load VDDK (${libraryPath}): ${(err as Error).message}. ` +
          'Point --vddk-libdir at the lib64 directory of an extracted VDDK 7 or 8 ' +
          '(the worker process is started with LD_LIBRARY_PATH set to it).',
      );
    }
    const decl: Record<string, string> = {
      InitEx:
        'uint64_t VixDiskLib_InitEx(uint32_t major, uint32_t minor, void *log, void *warn, void *panic, const char *libDir, const char *configFile)',
      Exit: 'void VixDiskLib_Exit()',
      GetErrorText: 'void *VixDiskLib_GetErrorText(uint64_t err, const char *locale)',
      FreeErrorText: 'void VixDiskLib_FreeErrorText(void *text)',
      PrepareForAccess: 'uint64_t VixDiskLib_PrepareForAccess(const VixDiskLibConnectParams *params, const char *identity)',
      EndAccess: 'uint64_t VixDiskLib_EndAccess(const VixDiskLibConnectParams *params, const char *identity)',
      ConnectEx:
        'uint64_t VixDiskLib_ConnectEx(const VixDiskLibConnectParams *params, char readOnly, const char *snapshotRef, const char *transportModes, _Out_ void **connection)',
      Disconnect: 'uint64_t VixDiskLib_Disconnect(void *connection)',
      Open: 'uint64_t VixDiskLib_Open(void *connection, const char *path, uint32_t flags, _Out_ void **handle)',
      Close: 'uint64_t VixDiskLib_Close(void *handle)',
      GetInfo: 'uint64_t VixDiskLib_GetInfo(void *handle, _Out_ void **info)',
      FreeInfo: 'void VixDiskLib_FreeInfo(void *info)',
      GetTransportMode: 'const char *VixDiskLib_GetTransportMode(void *handle)',
      Read: 'uint64_t VixDiskLib_Read(void *handle, uint64_t startSector, uint64_t numSectors, void *buf)',
      ReadAsync:
        'uint64_t VixDiskLib_ReadAsync(void *handle, uint64_t startSector, uint64_t numSectors, void *buf, VixDiskLibCompletionCB *cb, void *data)',
      Wait: 'uint64_t VixDiskLib_Wait(void *handle)',
      QueryAllocatedBlocks:
        'uint64_t VixDiskLib_QueryAllocatedBlocks(void *handle, uint64_t startSector, uint64_t numSectors, uint64_t chunkSize, _Out_ void **blockList)',
      FreeBlockList: 'uint64_t VixDiskLib_FreeBlockList(void *blockList)',
    };
    for (const [name, sig] of Object.entries(decl)) {
      this.fn[name] = lib.func(sig) as Fn;
    }
    this.completion = koffi.register(
      (data: unknown, result: unknown) => {
        const key = koffi.address(data);
        const done = this.pending.get(key);
        if (done) {
          this.pending.delete(key);
          done(big(result));
        }
      },
      koffi.pointer(CompletionCB),
    );
  }

  /** VDDK's own text for an error code. */
  errorText(code: bigint): string {
    const p = this.fn.GetErrorText(code, null);
    if (!p) return `VixError ${code}`;
    try {
      return koffi.decode(p, 'char', -1) as string;
    } finally {
      this.fn.FreeErrorText(p);
    }
  }

  private check(op: string, code: unknown): void {
    const c = big(code);
    if (c !== VIX_OK) throw new VddkError(op, c, this.errorText(c));
  }

  private params(p: ConnectParams): Record<string, unknown> {
    return {
      vmxSpec: p.vmxSpec,
      serverName: p.serverName,
      thumbPrint: p.thumbprint,
      reserved1: 0,
      credType: VIXDISKLIB_CRED_UID,
      creds: { uid: { userName: p.userName, password: p.password } },
      port: p.port ?? 0,
      nfcHostPort: p.nfcHostPort ?? 0,
      reserved3: null,
      reserved4: [0, 0, 0, 0, 0, 0, 0, 0],
      reserved5: null,
      spec: { vStorageObjSpec: { id: null, datastoreMoRef: null, ssId: null } },
      specType: VIXDISKLIB_SPEC_VMX,
    };
  }

  init(libDir: string | null, configFile: string | null = null, major = 8, minor = 0): void {
    this.check('InitEx', this.fn.InitEx(major, minor, null, null, null, libDir, configFile));
  }

  exit(): void {
    this.fn.Exit();
    koffi.unregister(this.completion as never);
  }

  prepareForAccess(p: ConnectParams, identity: string): void {
    this.check('PrepareForAccess', this.fn.PrepareForAccess(this.params(p), identity));
  }

  endAccess(p: ConnectParams, identity: string): void {
    this.check('EndAccess', this.fn.EndAccess(this.params(p), identity));
  }

  connect(p: ConnectParams, snapshotRef: string, transportModes: string | null, readOnly = true): Connection {
    const out: unknown[] = [null];
    this.check('ConnectEx', this.fn.ConnectEx(this.params(p), readOnly ? 1 : 0, snapshotRef, transportModes, out));
    return out[0];
  }

  disconnect(conn: Connection): void {
    this.check('Disconnect', this.fn.Disconnect(conn));
  }

  open(conn: Connection, path: string, flags = VIXDISKLIB_FLAG_OPEN_READ_ONLY): Handle {
    const out: unknown[] = [null];
    this.check(`Open(${path})`, this.fn.Open(conn, path, flags, out));
    return out[0];
  }

  close(handle: Handle): void {
    this.check('Close', this.fn.Close(handle));
  }

  transportMode(handle: Handle): string {
    return (this.fn.GetTransportMode(handle) as string | null) ?? '';
  }

  info(handle: Handle): DiskInfo {
    const out: unknown[] = [null];
    this.check('GetInfo', this.fn.GetInfo(handle, out));
    try {
      const i = koffi.decode(out[0], InfoType) as Record<string, unknown>;
      return {
        capacity: big(i.capacity) * BigInt(SECTOR_SIZE),
        adapterType: i.adapterType as number,
        numLinks: i.numLinks as number,
        logicalSectorSize: i.logicalSectorSize as number,
        physicalSectorSize: i.physicalSectorSize as number,
      };
    } finally {
      this.fn.FreeInfo(out[0]);
    }
  }

  /** Synchronous read, on a koffi worker thread so the event loop keeps running. */
  read(handle: Handle, startSector: bigint, numSectors: bigint): Promise<Buffer> {
    const len = Number(numSectors) * SECTOR_SIZE;
    const buf = Buffer.alloc(len);
    return new Promise((resolve, reject) => {
      this.fn.Read.async(handle, startSector, numSectors, buf, (err: unknown, code: unknown) => {
        if (err) return reject(err as Error);
        const c = big(code);
        if (c !== VIX_OK) return reject(new VddkError('Read', c, this.errorText(c)));
        resolve(buf);
      });
    });
  }

  /** VixDiskLib_ReadAsync: returns when the completion callback has run. */
  readAsync(handle: Handle, startSector: bigint, numSectors: bigint): Promise<Buffer> {
    const len = Number(numSectors) * SECTOR_SIZE;
    const mem = koffi.alloc('uint8_t', Math.max(len, 1));
    const key = koffi.address(mem);
    return new Promise<Buffer>((resolve, reject) => {
      this.pending.set(key, (code) => {
        try {
          if (code !== VIX_OK) {
            reject(new VddkError('ReadAsync', code, this.errorText(code)));
          } else {
            const out = Buffer.alloc(len);
            out.set(new Uint8Array(koffi.view(mem, len)));
            resolve(out);
          }
        } finally {
          koffi.free(mem);
        }
      });
      const rc = big(this.fn.ReadAsync(handle, startSector, numSectors, mem, this.completion, mem));
      if (rc !== VIX_ASYNC && rc !== VIX_OK) {
        this.pending.delete(key);
        koffi.free(mem);
        reject(new VddkError('ReadAsync', rc, this.errorText(rc)));
      }
    });
  }

  /** Waits for every asynchronous read on the handle (on a worker thread: callbacks need the event loop). */
  wait(handle: Handle): Promise<void> {
    return new Promise((resolve, reject) => {
      this.fn.Wait.async(handle, (err: unknown, code: unknown) => {
        if (err) return reject(err as Error);
        const c = big(code);
        if (c !== VIX_OK) return reject(new VddkError('Wait', c, this.errorText(c)));
        resolve();
      });
    });
  }

  /** Allocated ranges in sectors; chunkSize in sectors (VDDK's minimum is 128). */
  queryAllocatedBlocks(handle: Handle, startSector: bigint, numSectors: bigint, chunkSize = 128n): Block[] {
    const out: unknown[] = [null];
    this.check('QueryAllocatedBlocks', this.fn.QueryAllocatedBlocks(handle, startSector, numSectors, chunkSize, out));
    try {
      const n = koffi.decode(out[0], 'uint32_t') as number;
      if (n === 0) return [];
      const blocks = koffi.decode(out[0], 8, koffi.array(BlockType, n)) as Array<Record<string, unknown>>;
      return blocks.map((b) => ({ offset: big(b.offset), length: big(b.length) }));
    } finally {
      this.fn.FreeBlockList(out[0]);
    }
  }
}
