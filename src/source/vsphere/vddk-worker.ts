/**
 * The VDDK worker: a child process that owns libvixDiskLib. The parent (vddk-client.ts)
 * starts it with LD_LIBRARY_PATH set to the VDDK lib64 directory (VDDK's own OpenSSL
 * and other libraries are found that way; setting it inside a running process does not
 * work) and talks to it over the Node IPC channel with the 'advanced' serialization,
 * so read data travels as binary.
 *
 * Requests: { id, op, ...args }; replies: { id, ok: true, result } or
 * { id, ok: false, error: { message, code?, vddkText? } }.
 * Reads run concurrently (VixDiskLib_ReadAsync); connect/open/close/disconnect are
 * serialised, as VDDK requires. A close waits for the handle's reads first.
 */
import { SECTOR_SIZE, VddkError, VddkLibrary, type ConnectParams } from './vddk-binding.js';

type Req = { id: number; op: string; [k: string]: unknown };

let lib: VddkLibrary | undefined;
const connections = new Map<number, unknown>();
const handles = new Map<number, { raw: unknown; inflight: number }>();
let nextId = 1;
let serial: Promise<unknown> = Promise.resolve();

function serialised<T>(fn: () => Promise<T> | T): Promise<T> {
  const run = serial.then(fn, fn);
  serial = run.catch(() => undefined);
  return run;
}

function need(): VddkLibrary {
  if (!lib) throw new Error('VDDK worker: init was not called');
  return lib;
}

function handle(id: unknown) {
  const h = handles.get(id as number);
  if (!h) throw new Error(`VDDK worker: unknown disk handle ${String(id)}`);
  return h;
}

async function read(h: { raw: unknown; inflight: number }, offset: bigint, length: number): Promise<Uint8Array> {
  const l = need();
  const sector = BigInt(SECTOR_SIZE);
  const first = offset / sector;
  const end = offset + BigInt(length);
  const last = (end + sector - 1n) / sector;
  h.inflight++;
  try {
    const buf = await l.readAsync(h.raw, first, last - first);
    const skip = Number(offset - first * sector);
    return new Uint8Array(buf.buffer, buf.byteOffset + skip, length);
  } finally {
    h.inflight--;
  }
}

async function dispatch(req: Req): Promise<unknown> {
  switch (req.op) {
    case 'init':
      return serialised(() => {
        lib = new VddkLibrary((req.library as string | undefined) ?? 'libvixDiskLib.so');
        lib.init((req.libDir as string | null) ?? null, (req.configFile as string | null) ?? null);
        return { pid: process.pid };
      });
    case 'prepareForAccess':
      return serialised(() => need().prepareForAccess(req.params as ConnectParams, req.identity as string));
    case 'endAccess':
      return serialised(() => need().endAccess(req.params as ConnectParams, req.identity as string));
    case 'connect':
      return serialised(() => {
        const c = need().connect(req.params as ConnectParams, req.snapshotRef as string, (req.transport as string | null) ?? null);
        const id = nextId++;
        connections.set(id, c);
        return id;
      });
    case 'disconnect':
      return serialised(() => {
        const c = connections.get(req.conn as number);
        if (c === undefined) throw new Error(`VDDK worker: unknown connection ${String(req.conn)}`);
        connections.delete(req.conn as number);
        need().disconnect(c);
      });
    case 'open':
      return serialised(() => {
        const c = connections.get(req.conn as number);
        if (c === undefined) throw new Error(`VDDK worker: unknown connection ${String(req.conn)}`);
        const raw = need().open(c, req.path as string);
        const id = nextId++;
        handles.set(id, { raw, inflight: 0 });
        try {
          const info = need().info(raw);
          return { handle: id, capacity: info.capacity.toString(), transport: need().transportMode(raw) };
        } catch (err) {
          handles.delete(id);
          need().close(raw);
          throw err;
        }
      });
    case 'close':
      return serialised(async () => {
        const h = handle(req.handle);
        // wait for the handle's reads; close it even if waiting failed
        const waited = await need().wait(h.raw).then(() => undefined, (e: Error) => e);
        handles.delete(req.handle as number);
        need().close(h.raw);
        if (waited) throw waited;
      });
    case 'read':
      return read(handle(req.handle), BigInt(req.offset as string), req.length as number);
    case 'allocated': {
      const h = handle(req.handle);
      return need()
        .queryAllocatedBlocks(h.raw, BigInt(req.startSector as string), BigInt(req.numSectors as string), BigInt((req.chunk as string) ?? '128'))
        .map((b) => [b.offset.toString(), b.length.toString()]);
    }
    case 'exit':
      return serialised(async () => {
        const l = need();
        for (const [id, h] of handles) {
          await l.wait(h.raw).catch(() => undefined);
          try { l.close(h.raw); } catch { /* reported by the log */ }
          handles.delete(id);
        }
        for (const [id, c] of connections) {
          try { l.disconnect(c); } catch { /* idem */ }
          connections.delete(id);
        }
        l.exit();
        lib = undefined;
      });
    default:
      throw new Error(`VDDK worker: unknown operation ${req.op}`);
  }
}

function reply(msg: unknown): void {
  if (process.send) process.send(msg);
}

process.on('message', (req: Req) => {
  dispatch(req).then(
    (result) => {
      reply({ id: req.id, ok: true, result });
      if (req.op === 'exit') process.disconnect?.();
    },
    (err: unknown) => {
      const e = err as Error;
      reply({
        id: req.id,
        ok: false,
        error: {
          message: e?.message ?? String(err),
          code: e instanceof VddkError ? e.code.toString() : undefined,
          vddkText: e instanceof VddkError ? e.vddkText : undefined,
          operation: e instanceof VddkError ? e.operation : undefined,
        },
      });
    },
  );
});

// Ctrl-C in a terminal reaches the whole process group: the parent decides when VDDK is
// shut down (close handles, disconnect, exit), so the worker ignores it.
process.on('SIGINT', () => undefined);
process.on('SIGTERM', () => undefined);

process.on('disconnect', () => {
  // The parent went away: release what VDDK holds, then leave.
  if (lib) {
    dispatch({ id: 0, op: 'exit' }).finally(() => process.exit(0));
  } else {
    process.exit(0);
  }
});
