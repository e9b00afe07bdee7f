/** Helpers for tests of `pilotlight run`: a running service process, its metrics, a webhook receiver. */
import { ChildProcess } from 'node:child_process';
import { createServer, IncomingHttpHeaders, Server } from 'node:http';
import parsePrometheusTextFormat, { PromFamily } from 'parse-prometheus-text-format';
import { start } from './cli.js';

export interface ServiceProcess {
  child: ChildProcess;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export function startService(args: string[], env: Record<string, string>): ServiceProcess {
  const child = start(['run', ...args], env);
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  child.stdout!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('close', (code, signal) => resolve({ code, signal })));
  return { child, stderr: () => err, exited };
}

export async function scrape(port: number): Promise<PromFamily[]> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (!res.ok) throw new Error(`/metrics answered ${res.status}`);
  return parsePrometheusTextFormat(await res.text());
}

/** The value of one sample (labels must match exactly the given ones, others ignored). */
export function sample(families: PromFamily[], name: string, labels: Record<string, string>): number | undefined {
  const f = families.find((x) => x.name === name);
  const m = f?.metrics.find((s) => Object.entries(labels).every(([k, v]) => s.labels?.[k] === v));
  return m?.value === undefined ? undefined : Number(m.value);
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000, everyMs = 250): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface Hook {
  server: Server;
  port: number;
  received: { body: Record<string, unknown>; headers: IncomingHttpHeaders }[];
  close: () => Promise<void>;
}

/** A local HTTP receiver for webhook alerts. */
export async function webhookReceiver(): Promise<Hook> {
  const received: Hook['received'] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      try {
        received.push({ body: JSON.parse(body) as Record<string, unknown>, headers: req.headers });
      } catch {
        received.push({ body: { unparsable: body }, headers: req.headers });
      }
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  return { server, port, received, close: () => new Promise((r) => server.close(() => r())) };
}
