/**
 * Loads and checks a service configuration file. Every mistake is reported, each with
 * file, line, column and field (`jobs[0].every`), by mapping the schema's issue paths
 * to the ranges of the YAML nodes they name.
 */
import { promises as fsp } from 'node:fs';
import { Cron } from 'croner';
import { Document, LineCounter, Node, isMap, isPair, isScalar, isSeq, parseDocument } from 'yaml';
import { UserError } from '../repo/errors.js';
import { JobConfig, ServiceConfig, configSchema } from './config-schema.js';
import { parseDuration } from './duration.js';

export interface ConfigProblem {
  file: string;
  line: number;
  column: number;
  /** Dotted path of the field: `jobs[0].retention.keepLast`. */
  field: string;
  message: string;
}

export function formatProblem(p: ConfigProblem): string {
  return `${p.file}:${p.line}:${p.column}: ${p.field || '(top level)'}: ${p.message}`;
}

export class ConfigError extends UserError {
  constructor(readonly problems: ConfigProblem[]) {
    super(`${problems.length} problem(s) in the configuration:\n${problems.map(formatProblem).join('\n')}`);
  }
}

type PathSeg = string | number;

function fieldName(path: readonly PathSeg[]): string {
  let out = '';
  for (const seg of path) out += typeof seg === 'number' ? `[${seg}]` : out ? `.${seg}` : seg;
  return out;
}

/** The node a path names (the key node when `key`), else the deepest node on the way. */
function locate(doc: Document, path: readonly PathSeg[], key = false): Node | null {
  let node: unknown = doc.contents;
  let last: Node | null = (doc.contents as Node) ?? null;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg));
      if (!pair) return last;
      if (key && i === path.length - 1) return (pair.key as Node) ?? last;
      node = pair.value;
      last = (pair.value as Node) ?? (pair.key as Node) ?? last;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      if (!item) return last;
      node = item;
      last = item as Node;
    } else return last;
  }
  return last;
}

/** A checked configuration with derived values. */
export interface LoadedConfig {
  file: string;
  config: ServiceConfig;
}

export function intervalMs(job: JobConfig): number {
  if (job.every) {
    const d = parseDuration(job.every);
    if (d !== null) return d;
  }
  const c = new Cron((job.cron ?? job.every)!, { paused: true });
  const [a, b] = c.nextRuns(2);
  return a && b ? b.getTime() - a.getTime() : 3_600_000;
}

/** The RPO target of a job's VMs: `rpo`, else twice the interval. */
export function rpoTargetMs(job: JobConfig): number {
  return job.rpo ? parseDuration(job.rpo)! : 2 * intervalMs(job);
}

const SECRET_HEADER = /authorization|token|secret|key|password|cookie/i;

/* eslint-disable @typescript-eslint/no-explicit-any */
/**
 * Checks beyond the shape: schedules, references between sections, duplicate names,
 * inline secrets in headers. Tolerant of a config that failed the schema, so that
 * every mistake is reported in one pass.
 */
function crossCheck(raw: any): { path: PathSeg[]; message: string; key?: boolean }[] {
  const out: { path: PathSeg[]; message: string; key?: boolean }[] = [];
  const obj = (v: unknown): Record<string, any> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, any>) : {});
  const repositories = obj(raw?.repositories);
  const sources = obj(raw?.sources);
  const vsphere = obj(raw?.vsphere);
  const jobs: any[] = Array.isArray(raw?.jobs) ? raw.jobs : [];
  const repos = Object.keys(repositories);
  const names = new Set<string>();
  const seen = new Map<string, string>();
  jobs.forEach((j, i) => {
    if (!j || typeof j !== 'object') return;
    if (j.every === undefined && j.cron === undefined) out.push({ path: ['jobs', i], message: 'needs a schedule: every: 15m (or 30s, 2h) or cron: "*/15 * * * *"' });
    if (j.every !== undefined && j.cron !== undefined) out.push({ path: ['jobs', i, 'cron'], message: 'give every or cron, not both', key: true });
    if (typeof j.name === 'string') {
      if (names.has(j.name)) out.push({ path: ['jobs', i, 'name'], message: `job name ${JSON.stringify(j.name)} is used twice` });
      names.add(j.name);
    }
    if (typeof j.repository === 'string' && !repositories[j.repository]) {
      out.push({ path: ['jobs', i, 'repository'], message: `no repository ${JSON.stringify(j.repository)} (repositories: ${repos.join(', ') || 'none'})` });
    }
    (Array.isArray(j.vms) ? j.vms : []).forEach((vm: unknown, k: number) => {
      if (typeof vm !== 'string') return;
      if (!sources[vm]) out.push({ path: ['jobs', i, 'vms', k], message: `no source ${JSON.stringify(vm)} (sources: ${Object.keys(sources).join(', ') || 'none'})` });
      const key = `${j.repository}\u0000${vm}`;
      const other = seen.get(key);
      if (other !== undefined) out.push({ path: ['jobs', i, 'vms', k], message: `VM ${vm} is already protected into repository ${j.repository} by job ${other}` });
      else seen.set(key, String(j.name));
    });
  });
  for (const [name, s] of Object.entries(sources)) {
    const v = obj(s).vsphere;
    const f = obj(obj(s).file);
    if (v && typeof v.server === 'string' && !vsphere[v.server]) {
      out.push({ path: ['sources', name, 'vsphere', 'server'], message: `no vSphere server ${JSON.stringify(v.server)} under vsphere:` });
    }
    if (Array.isArray(f.changedExtents) && Array.isArray(f.images) && f.changedExtents.length !== f.images.length) {
      out.push({ path: ['sources', name, 'file', 'changedExtents'], message: `${f.images.length} image(s) but ${f.changedExtents.length} change list(s): give one per image` });
    }
  }
  for (const [h, v] of Object.entries(obj(obj(obj(raw?.alerts).webhook).headers))) {
    if (typeof v === 'string' && SECRET_HEADER.test(h)) {
      out.push({ path: ['alerts', 'webhook', 'headers', h], message: `header ${h} carries a secret: give it by reference ({ env: NAME }, { file: PATH } or { command: "..." }), never inline` });
    }
  }
  return out;
}

function hasPath(root: unknown, path: readonly PathSeg[]): boolean {
  let v: any = root;
  for (const seg of path) {
    if (v === null || typeof v !== 'object' || !(seg in v)) return false;
    v = v[seg];
  }
  return true;
}
/* eslint-enable @typescript-eslint/no-explicit-any */

/** Parses and checks configuration text: the config, or every problem found. */
export function checkConfigText(text: string, file: string): { config?: ServiceConfig; problems: ConfigProblem[] } {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number | undefined) => lc.linePos(offset ?? 0);
  const problems: ConfigProblem[] = [];
  for (const e of doc.errors) {
    const pos = at(e.pos?.[0]);
    problems.push({ file, line: pos.line, column: pos.col, field: '', message: `YAML: ${e.message.split('\n')[0]}` });
  }
  if (problems.length) return { problems };
  const problem = (path: PathSeg[], message: string, key = false) => {
    const node = locate(doc, path, key);
    const pos = at(node?.range?.[0]);
    problems.push({ file, line: pos.line, column: pos.col, field: fieldName(path), message });
  };
  const raw: unknown = doc.toJS() ?? {};
  const parsed = configSchema.safeParse(raw);
  for (const p of crossCheck(raw)) problem(p.path, p.message, p.key);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const path = issue.path.filter((p): p is PathSeg => typeof p === 'string' || typeof p === 'number');
      if (issue.code === 'unrecognized_keys') {
        for (const k of issue.keys) problem([...path, k], `unknown field ${JSON.stringify(k)}`, true);
      } else if (issue.code === 'invalid_type' && !hasPath(raw, path)) {
        problem(path, `is required (${issue.message.replace(/^Invalid input: /, '')})`);
      } else problem(path, issue.message.replace(/^Invalid input: /, ''));
    }
    return { problems: sortProblems(problems) };
  }
  return problems.length ? { problems: sortProblems(problems) } : { config: parsed.data, problems };
}

function sortProblems(p: ConfigProblem[]): ConfigProblem[] {
  return p.sort((a, b) => a.line - b.line || a.column - b.column);
}

export async function loadConfig(file: string): Promise<LoadedConfig> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new UserError(`cannot read the configuration ${file}: ${(err as Error).message}`);
  }
  const r = checkConfigText(text, file);
  if (!r.config) throw new ConfigError(r.problems);
  return { file, config: r.config };
}
