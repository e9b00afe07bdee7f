/**
 * A minimal vim25 (vSphere Web Services API) client.
 *
 * Requests are built by the `soap` package from the project's own WSDL (wsdl/vim25.wsdl,
 * the ~12 operations used). Responses and faults are decoded by xml.ts, which resolves
 * xsi:type by namespace and keeps numbers as exact strings/BigInts.
 *
 * TLS: the server certificate is checked against the SHA-1 thumbprint the user gives
 * (`--thumbprint AA:BB:...`) before any request is sent on the connection, so a password
 * never goes to a server with another certificate. `insecure` skips the check (and says so).
 */
import { existsSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import soap from 'soap';
import { child, childText, children, int64, parseXml, text, type XNode } from './xml.js';

export interface MoRef {
  type: string;
  value: string;
}

export const moref = (type: string, value: string): MoRef => ({ type, value });

/** A vSphere fault (SOAP fault or failed task), with a message a user can act on. */
export class VimFault extends Error {
  constructor(
    readonly operation: string,
    readonly faultType: string,
    readonly faultString: string,
    hint?: string,
  ) {
    super(`vSphere ${operation} failed: ${faultType}: ${faultString}${hint ? `. ${hint}` : ''}`);
    this.name = 'VimFault';
  }
}

export class ThumbprintMismatchError extends Error {
  constructor(
    readonly server: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(
      `the TLS certificate of ${server} has SHA-1 thumbprint ${actual}, not ${expected} as given with --thumbprint: ` +
        'refusing to connect (this can be a man-in-the-middle, or the certificate was renewed). ' +
        'Check the thumbprint in the vCenter UI or with `openssl s_client -connect HOST:443 | openssl x509 -noout -fingerprint -sha1`; ' +
        'use --insecure only on a trusted network.',
    );
    this.name = 'ThumbprintMismatchError';
  }
}

export class VimConnectionError extends Error {
  constructor(message: string, readonly code?: string) {
    super(message);
    this.name = 'VimConnectionError';
  }
}

const HINTS: Record<string, string> = {
  InvalidLogin: 'Check --username and the password (--password-file or VSPHERE_PASSWORD)',
  NotAuthenticated: 'The session is not logged in or has expired',
  NoPermission:
    'The user lacks a privilege; a backup user needs VirtualMachine.State.CreateSnapshot/RemoveSnapshot, ' +
    'VirtualMachine.Provisioning.DiskRandomRead/GetVmFiles, VirtualMachine.Config.ChangeTracking and Global.DisableMethods/EnableMethods',
  ManagedObjectNotFound: 'The object no longer exists (was the VM or snapshot removed?)',
  InvalidState: 'The VM is in a state that does not allow this operation',
  TaskInProgress: 'Another task is running on this VM; try again when it ends',
};

function normaliseThumbprint(t: string): string {
  const hex = t.replace(/[^0-9a-fA-F]/g, '').toUpperCase();
  return hex.match(/.{2}/g)?.join(':') ?? '';
}

export function thumbprintOf(cert: { fingerprint?: string }): string {
  return normaliseThumbprint(cert.fingerprint ?? '');
}

export interface ConnectOptions {
  /** `vcenter.example.com`, `host:port`, or a full `https://host/sdk` URL. */
  server: string;
  /** SHA-1 certificate thumbprint, `AA:BB:...` (any case, with or without colons). */
  thumbprint?: string;
  /** Skip the thumbprint check. */
  insecure?: boolean;
  /** Per-request timeout in ms (default 120 s). */
  timeoutMs?: number;
}

export function serverUrl(server: string): URL {
  const u = new URL(server.includes('://') ? server : `https://${server}`);
  if (u.pathname === '/' || u.pathname === '') u.pathname = '/sdk';
  return u;
}

/** Opens a TLS connection only to read the server certificate's SHA-1 thumbprint. */
export function fetchThumbprint(url: URL, timeoutMs = 15000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || 443),
      servername: /^[\d.]+$|:/.test(url.hostname) ? undefined : url.hostname,
      rejectUnauthorized: false,
    });
    s.setTimeout(timeoutMs, () => s.destroy(new VimConnectionError(`timed out connecting to ${url.host}`, 'ETIMEDOUT')));
    s.once('secureConnect', () => {
      const fp = thumbprintOf(s.getPeerCertificate());
      s.end();
      resolve(fp);
    });
    s.once('error', (e: NodeJS.ErrnoException) => reject(new VimConnectionError(`cannot reach ${url.host}: ${e.message}`, e.code)));
  });
}

/** An https.Agent that hands a socket to a request only after the certificate thumbprint matched. */
function pinnedAgent(server: string, expected: string | undefined): https.Agent {
  const agent = new https.Agent({ keepAlive: true, maxSockets: 8, rejectUnauthorized: false });
  const want = expected ? normaliseThumbprint(expected) : undefined;
  (agent as unknown as { createConnection: unknown }).createConnection = (
    options: tls.ConnectionOptions,
    cb: (err: Error | null, s?: tls.TLSSocket) => void,
  ) => {
    const s = tls.connect({ ...options, rejectUnauthorized: false });
    s.once('secureConnect', () => {
      const got = thumbprintOf(s.getPeerCertificate());
      if (want && got !== want) {
        s.destroy();
        cb(new ThumbprintMismatchError(server, want, got));
      } else {
        cb(null, s);
      }
    });
    s.once('error', (e) => cb(e));
    return undefined;
  };
  return agent;
}

/** The WSDL sits next to this module in src/; tsc does not copy it, so a build under dist-something looks in src. */
function wsdlPath(): string {
  const here = fileURLToPath(new URL('./wsdl/vim25.wsdl', import.meta.url));
  if (existsSync(here)) return here;
  const inSrc = here.replace(/([/\\])dist[^/\\]*[/\\]src[/\\]/, '$1src$1');
  if (existsSync(inSrc)) return inSrc;
  throw new Error(`pilotlight's vim25 WSDL is missing (looked at ${here} and ${inSrc})`);
}

type SoapClient = Record<string, (args: unknown, options?: unknown, headers?: unknown) => Promise<[unknown, string, unknown, string]>> & {
  addHttpHeader(name: string, value: string): void;
  lastResponseHeaders?: Record<string, unknown>;
};

function ref(m: MoRef) {
  return { attributes: { type: m.type }, $value: m.value };
}

export function parseMoRef(n: XNode | undefined): MoRef | undefined {
  if (!n) return undefined;
  return { type: n.attrs.type ?? n.xsiType ?? '', value: text(n) ?? '' };
}

export interface ServiceContent {
  rootFolder: MoRef;
  propertyCollector: MoRef;
  viewManager: MoRef;
  sessionManager: MoRef;
  apiType: string;
  apiVersion: string;
  fullName: string;
  instanceUuid: string;
}

export interface ObjectContent {
  obj: MoRef;
  props: Map<string, XNode>;
  missing: Array<{ path: string; fault: string }>;
}

export interface TaskResult {
  state: string;
  result?: XNode;
}

export interface DiskChangeInfo {
  startOffset: bigint;
  length: bigint;
  changedArea: Array<{ start: bigint; length: bigint }>;
}

export class VimClient {
  private loggedIn = false;
  private credentials?: { userName: string; password: string };
  private relogin?: Promise<void>;
  /** How many times an expired session was renewed. */
  reloginCount = 0;
  private constructor(
    readonly url: URL,
    private readonly soap: SoapClient,
    private readonly requestOptions: Record<string, unknown>,
    readonly serviceContent: ServiceContent,
    /** The thumbprint of the server's certificate (checked, or observed with --insecure). */
    readonly thumbprint: string,
  ) {}

  static async connect(opts: ConnectOptions): Promise<VimClient> {
    const url = serverUrl(opts.server);
    let thumbprint = '';
    const requestOptions: Record<string, unknown> = { timeout: opts.timeoutMs ?? 120000 };
    if (url.protocol === 'https:') {
      if (!opts.thumbprint && !opts.insecure) {
        const seen = await fetchThumbprint(url);
        throw new VimConnectionError(
          `no --thumbprint given for ${url.host}; its certificate's SHA-1 thumbprint is ${seen}. ` +
            'Verify it (vCenter UI, or openssl) and pass it with --thumbprint, or use --insecure on a trusted network.',
        );
      }
      thumbprint = await fetchThumbprint(url);
      if (opts.thumbprint && !opts.insecure && normaliseThumbprint(opts.thumbprint) !== thumbprint) {
        throw new ThumbprintMismatchError(url.host, normaliseThumbprint(opts.thumbprint), thumbprint);
      }
      requestOptions.httpsAgent = pinnedAgent(url.host, opts.insecure ? undefined : opts.thumbprint);
    }
    const client = (await soap.createClientAsync(wsdlPath(), { endpoint: url.href, disableCache: true })) as unknown as SoapClient;
    const probe = new VimClient(url, client, requestOptions, undefined as unknown as ServiceContent, thumbprint);
    const rv = await probe.invoke('RetrieveServiceContent', { _this: ref(moref('ServiceInstance', 'ServiceInstance')) });
    const about = child(rv, 'about');
    const sc: ServiceContent = {
      rootFolder: parseMoRef(child(rv, 'rootFolder'))!,
      propertyCollector: parseMoRef(child(rv, 'propertyCollector'))!,
      viewManager: parseMoRef(child(rv, 'viewManager'))!,
      sessionManager: parseMoRef(child(rv, 'sessionManager'))!,
      apiType: childText(about, 'apiType') ?? '',
      apiVersion: childText(about, 'apiVersion') ?? '',
      fullName: childText(about, 'fullName') ?? '',
      instanceUuid: childText(about, 'instanceUuid') ?? '',
    };
    return new VimClient(url, client, requestOptions, sc, thumbprint);
  }

  /** Calls an operation; returns the <returnval> element (or the response element when none). */
  async invoke(op: string, args: Record<string, unknown>): Promise<XNode | undefined> {
    try {
      return await this.invokeOnce(op, args);
    } catch (err) {
      // A long backup leaves the SOAP session idle while VDDK reads; vCenter may expire
      // it (NotAuthenticated). Log in again once and retry, so the snapshot still gets removed.
      if (err instanceof VimFault && err.faultType === 'NotAuthenticated' && this.credentials && op !== 'Login' && op !== 'Logout') {
        this.relogin ??= this.login(this.credentials.userName, this.credentials.password).finally(() => (this.relogin = undefined));
        await this.relogin;
        this.reloginCount++;
        return this.invokeOnce(op, args);
      }
      throw err;
    }
  }

  private async invokeOnce(op: string, args: Record<string, unknown>): Promise<XNode | undefined> {
    const fn = this.soap[`${op}Async`];
    if (!fn) throw new Error(`operation ${op} is not in pilotlight's vim25 WSDL`);
    let raw: string;
    try {
      const r = await fn.call(this.soap, args, this.requestOptions);
      raw = r[1];
    } catch (err) {
      throw this.translate(op, err);
    }
    const env = parseXml(raw);
    const body = child(env, 'Body');
    const resp = body?.children[0];
    if (resp?.name === 'Fault') throw faultFrom(op, resp);
    return child(resp, 'returnval');
  }

  private translate(op: string, err: unknown): Error {
    const e = err as {
      message?: string;
      code?: string;
      body?: unknown;
      response?: { status?: number; data?: unknown };
      cause?: unknown;
    };
    if (e instanceof ThumbprintMismatchError) return e;
    if (e.cause instanceof ThumbprintMismatchError) return e.cause;
    const body = typeof e.body === 'string' ? e.body : typeof e.response?.data === 'string' ? e.response.data : undefined;
    if (body && body.includes('Fault')) {
      try {
        const env = parseXml(body);
        const f = child(child(env, 'Body'), 'Fault');
        if (f) return faultFrom(op, f);
      } catch {
        /* fall through */
      }
    }
    if (e.response?.status) {
      return new VimConnectionError(`vSphere ${op}: HTTP ${e.response.status} from ${this.url.host}${body ? `: ${body.slice(0, 300)}` : ''}`);
    }
    return new VimConnectionError(`cannot reach ${this.url.host} (${op}): ${e.message ?? String(err)}`, e.code);
  }

  async login(userName: string, password: string): Promise<void> {
    await this.invoke('Login', { _this: ref(this.serviceContent.sessionManager), userName, password });
    const setCookie = this.soap.lastResponseHeaders?.['set-cookie'];
    const cookies = (Array.isArray(setCookie) ? setCookie : setCookie ? [String(setCookie)] : []).map((c: string) => c.split(';')[0]);
    if (!cookies.length) throw new VimConnectionError(`vSphere Login to ${this.url.host} returned no session cookie`);
    this.soap.addHttpHeader('Cookie', cookies.join('; '));
    this.loggedIn = true;
    this.credentials = { userName, password };
  }

  async logout(): Promise<void> {
    try {
      if (!this.loggedIn) return;
      this.loggedIn = false;
      this.credentials = undefined;
      await this.invoke('Logout', { _this: ref(this.serviceContent.sessionManager) });
    } finally {
      (this.requestOptions.httpsAgent as https.Agent | undefined)?.destroy();
    }
  }

  /** RetrievePropertiesEx (+ ContinueRetrievePropertiesEx until no token is left). */
  async retrieve(specSet: unknown[]): Promise<ObjectContent[]> {
    const out: ObjectContent[] = [];
    let rv = await this.invoke('RetrievePropertiesEx', {
      _this: ref(this.serviceContent.propertyCollector),
      specSet,
      options: {},
    });
    for (;;) {
      for (const o of children(rv, 'objects')) {
        const props = new Map<string, XNode>();
        for (const p of children(o, 'propSet')) props.set(childText(p, 'name') ?? '', child(p, 'val')!);
        const missing = children(o, 'missingSet').map((m) => ({
          path: childText(m, 'path') ?? '',
          fault: child(child(m, 'fault'), 'fault')?.xsiType ?? 'unknown fault',
        }));
        out.push({ obj: parseMoRef(child(o, 'obj'))!, props, missing });
      }
      const token = childText(rv, 'token');
      if (!token) return out;
      rv = await this.invoke('ContinueRetrievePropertiesEx', { _this: ref(this.serviceContent.propertyCollector), token });
    }
  }

  /** The given properties of one object. */
  async properties(obj: MoRef, paths: string[]): Promise<Map<string, XNode>> {
    const r = await this.retrieve([{ propSet: [{ type: obj.type, pathSet: paths }], objectSet: [{ obj: ref(obj), skip: false }] }]);
    if (!r.length) throw new VimFault('RetrievePropertiesEx', 'ManagedObjectNotFound', `${obj.type} ${obj.value} not found`, HINTS.ManagedObjectNotFound);
    const denied = r[0].missing.find((m) => m.fault === 'NoPermission' || m.fault === 'NotAuthenticated');
    if (denied) throw new VimFault('RetrievePropertiesEx', denied.fault, `cannot read ${denied.path} of ${obj.type} ${obj.value}`, HINTS[denied.fault]);
    return r[0].props;
  }

  /** All objects of a type under the root folder, with the given properties. */
  async list(type: string, paths: string[]): Promise<ObjectContent[]> {
    const view = parseMoRef(
      await this.invoke('CreateContainerView', {
        _this: ref(this.serviceContent.viewManager),
        container: ref(this.serviceContent.rootFolder),
        type: [type],
        recursive: true,
      }),
    )!;
    try {
      return await this.retrieve([
        {
          propSet: [{ type, pathSet: paths }],
          objectSet: [
            {
              obj: ref(view),
              skip: true,
              selectSet: [
                { attributes: { xsi_type: { type: 'TraversalSpec', xmlns: 'urn:vim25' } }, name: 'view', type: 'ContainerView', path: 'view', skip: false },
              ],
            },
          ],
        },
      ]);
    } finally {
      await this.invoke('DestroyView', { _this: ref(view) }).catch(() => undefined);
    }
  }

  async reconfigChangeTracking(vm: MoRef, enabled: boolean): Promise<MoRef> {
    return parseMoRef(await this.invoke('ReconfigVM_Task', { _this: ref(vm), spec: { changeTrackingEnabled: enabled } }))!;
  }

  async createSnapshot(vm: MoRef, name: string, description: string, quiesce: boolean): Promise<MoRef> {
    return parseMoRef(
      await this.invoke('CreateSnapshot_Task', { _this: ref(vm), name, description, memory: false, quiesce }),
    )!;
  }

  async removeSnapshot(snapshot: MoRef, consolidate = true): Promise<MoRef> {
    return parseMoRef(await this.invoke('RemoveSnapshot_Task', { _this: ref(snapshot), removeChildren: false, consolidate }))!;
  }

  /** Polls a task until it ends; throws its fault as a VimFault. */
  async waitForTask(task: MoRef, operation: string, timeoutMs = 30 * 60 * 1000): Promise<TaskResult> {
    const start = Date.now();
    let delay = 100;
    for (;;) {
      const info = (await this.properties(task, ['info'])).get('info');
      if (!info) throw new VimFault(operation, 'NoTaskInfo', `vSphere returned no info for task ${task.value} (session expired, or no permission to read it)`);
      const state = childText(info, 'state') ?? '';
      if (state === 'success') return { state, result: child(info, 'result') };
      if (state === 'error') {
        const err = child(info, 'error');
        const fault = child(err, 'fault');
        const type = fault?.xsiType ?? 'TaskError';
        const msg = childText(err, 'localizedMessage') || childText(fault, 'faultMessage') || type;
        throw new VimFault(operation, type, msg, HINTS[type]);
      }
      if (Date.now() - start > timeoutMs) throw new VimFault(operation, 'Timeout', `task ${task.value} still ${state} after ${timeoutMs / 1000} s`);
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 2000);
    }
  }

  /** One QueryChangedDiskAreas call: the answer may cover only part of the disk. */
  async queryChangedDiskAreas(vm: MoRef, snapshot: MoRef, deviceKey: number, startOffset: bigint, changeId: string): Promise<DiskChangeInfo> {
    const rv = await this.invoke('QueryChangedDiskAreas', {
      _this: ref(vm),
      snapshot: ref(snapshot),
      deviceKey,
      startOffset: startOffset.toString(),
      changeId,
    });
    return {
      startOffset: int64(childText(rv, 'startOffset'), 'DiskChangeInfo.startOffset'),
      length: int64(childText(rv, 'length'), 'DiskChangeInfo.length'),
      changedArea: children(rv, 'changedArea').map((a) => ({
        start: int64(childText(a, 'start'), 'DiskChangeExtent.start'),
        length: int64(childText(a, 'length'), 'DiskChangeExtent.length'),
      })),
    };
  }
}

function faultFrom(op: string, fault: XNode): VimFault {
  const faultString = childText(fault, 'faultstring') ?? 'unknown fault';
  const detail = child(fault, 'detail')?.children[0];
  const type = detail?.xsiType ?? (detail ? detail.name.replace(/Fault$/, '') : 'SOAPFault');
  let extra = '';
  if (type === 'InvalidArgument') {
    const p = childText(detail, 'invalidProperty');
    if (p) extra = ` (invalid property: ${p})`;
  }
  return new VimFault(op, type, faultString + extra, HINTS[type]);
}
