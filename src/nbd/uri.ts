/**
 * NBD URIs (https://github.com/NetworkBlockDevice/nbd/blob/master/doc/uri.md), the
 * two forms pilotlight takes: `nbd+unix:///EXPORT?socket=PATH` and
 * `nbd://HOST[:PORT]/EXPORT` (port 10809 by default). TLS forms (nbds://) are refused.
 */
import { UserError } from '../repo/errors.js';

export type NbdTarget =
  | { kind: 'unix'; socket: string; exportName: string; uri: string }
  | { kind: 'tcp'; host: string; port: number; exportName: string; uri: string };

export const NBD_DEFAULT_PORT = 10809;

export function parseNbdUri(uri: string): NbdTarget {
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw new UserError(`${JSON.stringify(uri)} is not an NBD URI: give nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT`);
  }
  const exportName = decodeURIComponent(u.pathname.replace(/^\//, ''));
  if (u.protocol === 'nbd+unix:') {
    const socket = u.searchParams.get('socket');
    if (!socket) throw new UserError(`${uri}: an nbd+unix URI needs ?socket=PATH (the server's unix socket)`);
    if (u.host) throw new UserError(`${uri}: an nbd+unix URI has no host: write nbd+unix:///EXPORT?socket=PATH (three slashes)`);
    return { kind: 'unix', socket, exportName, uri };
  }
  if (u.protocol === 'nbd:') {
    if (!u.hostname) throw new UserError(`${uri}: no host; write nbd://HOST:PORT/EXPORT`);
    const port = u.port ? Number(u.port) : NBD_DEFAULT_PORT;
    const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
    return { kind: 'tcp', host, port, exportName, uri };
  }
  if (u.protocol === 'nbds:' || u.protocol === 'nbds+unix:') {
    throw new UserError(`${uri}: NBD over TLS is not supported; use nbd+unix:// on the host, or nbd:// over a trusted network`);
  }
  throw new UserError(`${uri}: unknown scheme ${u.protocol}; give nbd+unix:///EXPORT?socket=PATH or nbd://HOST:PORT/EXPORT`);
}

/** `socket /run/x.sock` or `host:port`, for messages. */
export function describeTarget(t: NbdTarget): string {
  return t.kind === 'unix' ? `unix socket ${t.socket}` : `${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`;
}
