/**
 * Structured logs (pino): one JSON object per line on stderr, or, when stderr is a
 * terminal (or format 'pretty'), one readable line: `21:04:05 INFO  web01 backup done snapshot=...`.
 * No secret reaches a log line: secrets are only held by reference in the config, the
 * resolved values are never passed to the logger, and fields named like secrets are
 * redacted anyway (`password`, `secret`, `token`, `authorization`, `headers`, ...).
 */
import { Writable } from 'node:stream';
import { pino, Logger } from 'pino';

export type { Logger } from 'pino';

export const REDACT_PATHS = [
  'password',
  '*.password',
  'secret',
  '*.secret',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers',
  '*.headers',
  '*.*.headers',
  'passwordValue',
  '*.passwordValue',
];

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };

/** JSON line -> `HH:MM:SS LEVEL msg key=value ...` for a terminal. */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { time, level, levelName: _l, msg, pid: _pid, hostname: _h, vm, ...rest } = o;
  const t = new Date(Number(time)).toISOString().slice(11, 19);
  const kv = Object.entries(rest)
    .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
    .join(' ');
  return `${t} ${LEVELS[Number(level)] ?? level} ${vm ? `${String(vm)} ` : ''}${String(msg ?? '')}${kv ? ` ${kv}` : ''}\n`;
}

export interface LoggerOptions {
  format?: 'json' | 'pretty' | 'auto';
  level?: string;
  /** Where lines go (default stderr). */
  destination?: NodeJS.WritableStream;
}

export function createLogger(o: LoggerOptions = {}): Logger {
  const dest = o.destination ?? process.stderr;
  const pretty = o.format === 'pretty' || ((o.format ?? 'auto') === 'auto' && (dest as { isTTY?: boolean }).isTTY === true);
  const stream = pretty
    ? new Writable({
        write(chunk, _enc, cb) {
          for (const line of String(chunk).split('\n')) if (line) dest.write(prettyLine(line));
          cb();
        },
      })
    : dest;
  return pino(
    {
      level: o.level ?? process.env.PILOTLIGHT_LOG_LEVEL ?? 'info',
      base: { pid: process.pid },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label, number) => ({ level: number, levelName: label }) },
    },
    stream as never,
  );
}

/** An error as log fields: message and, for unexpected errors, the stack. */
export function errorFields(err: unknown): Record<string, unknown> {
  const e = err as Error & { code?: unknown };
  return { error: e?.message ?? String(err), ...(e?.name && e.name !== 'Error' && e.name !== 'UserError' ? { errorName: e.name } : {}), ...(e?.code ? { code: e.code } : {}) };
}
