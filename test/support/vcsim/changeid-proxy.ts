/**
 * TEST DOUBLE: a change-id proxy in front of vcsim.
 *
 * vcsim (govmomi's simulator) speaks the real vim25 SOAP protocol but has no Changed
 * Block Tracking: it never sets `changeId` on disk backings and does not implement
 * QueryChangedDiskAreas. This proxy fills that gap for pilotlight's tests, answering
 * from real disk files:
 *
 * - every SOAP call is forwarded to vcsim, except QueryChangedDiskAreas;
 * - the first time a snapshot's devices are read, it freezes a copy of each registered
 *   live disk file (the "snapshot" content), gives it a new change id
 *   (`<epoch>/<sequence>`), and writes `<changeId>` into that disk's backing;
 *   the frozen copy is placed where the fake VDDK library reads it:
 *   `<vddkRoot>/<snapshot moref>/<disk fileName, sanitised>`;
 * - QueryChangedDiskAreas(snapshot, deviceKey, startOffset, changeId) answers with the
 *   64 KiB blocks that differ between the frozen copy for `changeId` and the snapshot
 *   (or the non-zero blocks for "*"), covering at most `maxBytesPerCall` of the disk
 *   per answer, so a client must loop;
 * - `resetChangeTracking(fileName)` starts a new epoch (older change ids are refused
 *   with a FileFault, as after a CBT reset), `rejectChangeId(id)` refuses one id,
 *   `loseChanges(fileName)` leaves out a changed area (a CBT bug, for --verify-unchanged).
 *
 * It serves HTTPS on 127.0.0.1 with a throw-away self-signed certificate (made by the
 * vcsim launcher's -gen-cert mode), so the client's thumbprint check is exercised through it.
 */
import { execFileSync } from 'node:child_process';
import { X509Certificate, randomBytes } from 'node:crypto';
import { closeSync, copyFileSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeSync } from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { child, childText, parseXml, text } from '../../../src/source/vsphere/xml.js';

const BLOCK = 65536;

interface DiskHistory {
  live: string;
  epoch: string;
  seq: number;
  /** change id -> frozen file */
  frozen: Map<string, string>;
}

interface SnapshotDisk {
  fileName: string;
  changeId: string;
  frozen: string;
  capacity: number;
}

export interface ChangeIdProxyOptions {
  /** vcsim's SDK URL (https://127.0.0.1:PORT/sdk). */
  upstream: string;
  /** Where frozen snapshot disks go (the fake VDDK's FAKE_VDDK_ROOT). */
  vddkRoot: string;
  /** Bytes of disk covered by one QueryChangedDiskAreas answer (default 1 MiB). */
  maxBytesPerCall?: number;
}

export function sanitise(fileName: string): string {
  return fileName.replace(/[^A-Za-z0-9._-]/g, '_');
}

function newEpoch(): string {
  return [...randomBytes(16)].map((b) => b.toString(16).padStart(2, '0')).join(' ').replace(/^(.{23}) /, '$1-');
}

/** 64 KiB block indexes that differ between two files (a missing 'before' means zeros). */
function diffBlocks(before: string | undefined, after: string, capacity: number): Array<[number, number]> {
  const a = openSync(after, 'r');
  const b = before ? openSync(before, 'r') : undefined;
  const ba = Buffer.alloc(BLOCK);
  const bb = Buffer.alloc(BLOCK);
  const zero = Buffer.alloc(BLOCK);
  const out: Array<[number, number]> = [];
  try {
    for (let off = 0; off < capacity; off += BLOCK) {
      const n = Math.min(BLOCK, capacity - off);
      ba.fill(0);
      bb.fill(0);
      readSync(a, ba, 0, n, off);
      if (b !== undefined) readSync(b, bb, 0, n, off);
      const differs = b !== undefined ? !ba.equals(bb) : !ba.equals(zero);
      if (!differs) continue;
      const last = out[out.length - 1];
      if (last && last[0] + last[1] === off) last[1] += n;
      else out.push([off, n]);
    }
  } finally {
    closeSync(a);
    if (b !== undefined) closeSync(b);
  }
  return out;
}

export class ChangeIdProxy {
  readonly thumbprint: string;
  url = '';
  /** Every QueryChangedDiskAreas call: [snapshot, deviceKey, startOffset, changeId]. */
  readonly calls: Array<{ snapshot: string; deviceKey: number; startOffset: number; changeId: string }> = [];
  /** Every SOAP operation forwarded or answered, in order. */
  readonly operations: string[] = [];
  private readonly disks = new Map<string, DiskHistory>();
  private readonly snapshots = new Map<string, SnapshotDisk>(); // `${snapshot}:${key}`
  private readonly rejected = new Set<string>();
  private readonly losing = new Set<string>();
  private readonly server: https.Server;
  private readonly agent = new https.Agent({ rejectUnauthorized: false, keepAlive: false });
  private readonly upstream: URL;
  private readonly maxBytesPerCall: number;

  private constructor(private readonly opts: ChangeIdProxyOptions, key: string, cert: string) {
    this.upstream = new URL(opts.upstream);
    this.maxBytesPerCall = opts.maxBytesPerCall ?? 1024 * 1024;
    this.thumbprint = new X509Certificate(cert).fingerprint;
    this.server = https.createServer({ key, cert }, (req, res) => {
      const parts: Buffer[] = [];
      req.on('data', (d: Buffer) => parts.push(d));
      req.on('end', () => {
        this.handle(req.method ?? 'GET', req.url ?? '/', req.headers, Buffer.concat(parts)).then(
          (r) => {
            res.writeHead(r.status, r.headers);
            res.end(r.body);
          },
          (err: Error) => {
            res.writeHead(502, { 'content-type': 'text/plain' });
            res.end(`change-id proxy (test double): ${err.stack}`);
          },
        );
      });
    });
  }

  /** `certMaker`: the vcsim launcher binary, whose -gen-cert mode writes a throw-away certificate. */
  static async start(opts: ChangeIdProxyOptions, workDir: string, certMaker: string): Promise<ChangeIdProxy> {
    mkdirSync(workDir, { recursive: true });
    execFileSync(certMaker, ['-gen-cert', workDir], { stdio: ['ignore', 'ignore', 'pipe'] });
    const p = new ChangeIdProxy(opts, readFileSync(path.join(workDir, 'key.pem'), 'utf8'), readFileSync(path.join(workDir, 'cert.pem'), 'utf8'));
    await new Promise<void>((resolve) => p.server.listen(0, '127.0.0.1', resolve));
    p.url = `https://127.0.0.1:${(p.server.address() as AddressInfo).port}/sdk`;
    return p;
  }

  stop(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** Tells the proxy which local file holds the live content of a vcsim disk. */
  setDiskFile(fileName: string, localFile: string): void {
    this.disks.set(fileName, { live: localFile, epoch: newEpoch(), seq: 0, frozen: new Map() });
  }

  /** Simulates a CBT reset: every earlier change id of this disk is refused. */
  resetChangeTracking(fileName: string): void {
    const d = this.disks.get(fileName);
    if (!d) throw new Error(`unknown disk ${fileName}`);
    d.epoch = newEpoch();
    d.seq = 0;
    d.frozen.clear();
  }

  rejectChangeId(changeId: string): void {
    this.rejected.add(changeId);
  }

  /** Simulates a CBT bug: answers for this disk since a change id leave out the first changed area. */
  loseChanges(fileName: string): void {
    this.losing.add(fileName);
  }

  private async handle(method: string, url: string, headers: Record<string, unknown>, body: Buffer) {
    const xml = body.toString('utf8');
    const op = xml ? /<(?:[\w-]+:)?Body[^>]*>\s*<(?:[\w-]+:)?([\w]+)/.exec(xml)?.[1] ?? '' : '';
    if (op) this.operations.push(op);
    if (op === 'QueryChangedDiskAreas') return this.queryChangedDiskAreas(xml);
    const r = await this.forward(method, url, headers, body);
    if (op === 'RetrievePropertiesEx' && r.status === 200) {
      const text = r.body.toString('utf8');
      const snap = /<obj type="VirtualMachineSnapshot">(snapshot-\d+)<\/obj>/.exec(text)?.[1];
      if (snap && /VirtualDisk/.test(text)) {
        const rewritten = this.addChangeIds(snap, text);
        r.body = Buffer.from(rewritten);
        r.headers['content-length'] = String(r.body.length);
      }
    }
    return r;
  }

  private forward(method: string, url: string, headers: Record<string, unknown>, body: Buffer) {
    const h: Record<string, string> = {};
    for (const k of ['content-type', 'soapaction', 'cookie', 'user-agent']) if (headers[k]) h[k] = String(headers[k]);
    h['content-length'] = String(body.length);
    return new Promise<{ status: number; headers: Record<string, string | string[]>; body: Buffer }>((resolve, reject) => {
      const req = https.request(
        { host: this.upstream.hostname, port: this.upstream.port, path: url, method, headers: h, agent: this.agent },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (d: Buffer) => parts.push(d));
          res.on('end', () => {
            const out: Record<string, string | string[]> = {};
            for (const [k, v] of Object.entries(res.headers)) if (v !== undefined && k !== 'connection' && k !== 'transfer-encoding') out[k] = v;
            resolve({ status: res.statusCode ?? 502, headers: out, body: Buffer.concat(parts) });
          });
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  /** Writes <changeId> into each registered VirtualDisk backing of a snapshot's devices. */
  private addChangeIds(snapshot: string, xml: string): string {
    return xml.replace(/<(VirtualDevice|device)\b([^>]*type="VirtualDisk"[^>]*)>([\s\S]*?)<\/\1>/g, (all, tag: string, attrs: string, inner: string) => {
      const key = /<key>(-?\d+)<\/key>/.exec(inner)?.[1];
      const fileName = /<backing\b[^>]*>[\s\S]*?<fileName>([^<]*)<\/fileName>/.exec(inner)?.[1]?.replace(/&amp;/g, '&');
      const cap = /<capacityInBytes>(\d+)<\/capacityInBytes>/.exec(inner)?.[1] ?? String(Number(/<capacityInKB>(\d+)<\/capacityInKB>/.exec(inner)?.[1] ?? '0') * 1024);
      if (!key || !fileName) return all;
      const history = this.disks.get(fileName);
      if (!history) return all;
      const id = `${snapshot}:${key}`;
      let sd = this.snapshots.get(id);
      if (!sd) {
        history.seq++;
        const changeId = `${history.epoch}/${history.seq}`;
        const dir = path.join(this.opts.vddkRoot, snapshot);
        mkdirSync(dir, { recursive: true });
        const frozen = path.join(dir, sanitise(fileName));
        copyFileSync(history.live, frozen);
        const capacity = Number(cap);
        if (statSync(frozen).size !== capacity) {
          throw new Error(`live disk file ${history.live} is ${statSync(frozen).size} bytes but vcsim says ${capacity}`);
        }
        // Keep a private copy for later diffs: the snapshot directory may be removed.
        const keep = path.join(this.opts.vddkRoot, 'cbt-history', `${sanitise(history.epoch)}-${history.seq}-${sanitise(fileName)}`);
        mkdirSync(path.dirname(keep), { recursive: true });
        copyFileSync(history.live, keep);
        history.frozen.set(changeId, keep);
        sd = { fileName, changeId, frozen, capacity };
        this.snapshots.set(id, sd);
      }
      const withId = inner.replace(/<\/backing>/, `<changeId>${sd.changeId}</changeId></backing>`);
      return `<${tag}${attrs}>${withId}</${tag}>`;
    });
  }

  private fault(type: string, message: string, detail = '') {
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>' +
      '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
      `<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>${message}</faultstring>` +
      `<detail><${type}Fault xmlns="urn:vim25" xsi:type="${type}">${detail}</${type}Fault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`;
    return { status: 500, headers: { 'content-type': 'text/xml; charset=utf-8' } as Record<string, string>, body: Buffer.from(body) };
  }

  private queryChangedDiskAreas(xml: string) {
    const env = parseXml(xml);
    const req = child(child(env, 'Body'), 'QueryChangedDiskAreas');
    const snapshot = text(child(req, 'snapshot')) ?? '';
    const deviceKey = Number(childText(req, 'deviceKey'));
    const startOffset = Number(childText(req, 'startOffset'));
    const changeId = childText(req, 'changeId') ?? '';
    this.calls.push({ snapshot, deviceKey, startOffset, changeId });
    const sd = this.snapshots.get(`${snapshot}:${deviceKey}`);
    if (!sd) return this.fault('InvalidArgument', 'A specified parameter was not correct: deviceKey', '<invalidProperty>deviceKey</invalidProperty>');
    const history = this.disks.get(sd.fileName)!;
    let before: string | undefined;
    if (changeId !== '*') {
      before = history.frozen.get(changeId);
      if (!before || this.rejected.has(changeId)) {
        return this.fault(
          'FileFault',
          `Error caused by file ${sd.fileName.replace(/\.vmdk$/, '-ctk.vmdk')}: change id ${changeId} is not valid for this disk (change tracking was reset)`,
          `<file>${sd.fileName}</file>`,
        );
      }
    }
    if (startOffset < 0 || startOffset >= sd.capacity || startOffset % 512) {
      return this.fault('InvalidArgument', 'A specified parameter was not correct: startOffset', '<invalidProperty>startOffset</invalidProperty>');
    }
    const length = Math.min(this.maxBytesPerCall, sd.capacity - startOffset);
    const end = startOffset + length;
    let changed = diffBlocks(before, sd.frozen, sd.capacity);
    if (before && this.losing.has(sd.fileName)) changed = changed.slice(1);
    const areas = changed
      .map(([o, l]) => [Math.max(o, startOffset), Math.min(o + l, end)] as const)
      .filter(([s, e]) => e > s);
    const body =
      '<?xml version="1.0" encoding="UTF-8"?>' +
      '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">' +
      '<soapenv:Body><QueryChangedDiskAreasResponse xmlns="urn:vim25"><returnval>' +
      `<startOffset>${startOffset}</startOffset><length>${length}</length>` +
      areas.map(([s, e]) => `<changedArea><start>${s}</start><length>${e - s}</length></changedArea>`).join('') +
      '</returnval></QueryChangedDiskAreasResponse></soapenv:Body></soapenv:Envelope>';
    return { status: 200, headers: { 'content-type': 'text/xml; charset=utf-8' } as Record<string, string>, body: Buffer.from(body) };
  }
}

/** Writes `data` at `offset` of a file (the test's "guest writes"). */
export function scribble(file: string, offset: number, data: Buffer): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, data, 0, data.length, offset);
  } finally {
    closeSync(fd);
  }
}
