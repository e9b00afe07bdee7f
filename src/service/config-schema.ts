/**
 * The service configuration (docs/SERVICE.md), as a zod schema. Secrets appear only by
 * reference: `{ env: NAME }`, `{ file: PATH }` or `{ command: "..." }`, or the
 * `passwordFile: PATH` shorthand; an inline string where a secret goes is an error.
 */
import { Cron } from 'croner';
import { z } from 'zod';
import { parseDuration } from './duration.js';
import { KEEP_WITHIN_RE } from './retention-step.js';

const name = z.string().min(1, 'must not be empty');

export const secretRef = z.union(
  [
    z.strictObject({ env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name') }),
    z.strictObject({ file: z.string().min(1) }),
    z.strictObject({ command: z.string().min(1) }),
  ],
  { error: 'a secret is given by reference only: { env: NAME }, { file: PATH } or { command: "..." }, never inline' },
);
export type SecretRef = z.infer<typeof secretRef>;

const duration = z.string().refine((s) => parseDuration(s) !== null, { error: 'must be a duration such as 30s, 15m, 2h or 1d' });

function validCron(s: string): boolean {
  try {
    new Cron(s, { paused: true });
    return true;
  } catch {
    return false;
  }
}

const cronExpr = z.string().refine(validCron, { error: 'must be a cron expression with five (or six, with seconds) fields, e.g. "*/15 * * * *"' },
);

const repository = z
  .strictObject({
    /** A directory, file://PATH or s3://BUCKET/PREFIX. */
    location: z.string().min(1),
    passwordFile: z.string().min(1).optional(),
    password: secretRef.optional(),
    s3Endpoint: z.string().url().optional(),
    storageClass: z.string().optional(),
    cacheDir: z.string().optional(),
    /** S3: directory of the spool files of data packs (default $PILOTLIGHT_SPOOL_DIR, else the temporary directory). */
    spoolDir: z.string().min(1).optional(),
  })
  .refine((r) => !(r.password && r.passwordFile), { error: 'give passwordFile or password, not both', path: ['password'] });

const vsphereServer = z.strictObject({
  server: z.string().min(1),
  username: z.string().min(1),
  password: secretRef.optional(),
  passwordFile: z.string().min(1).optional(),
  thumbprint: z.string().regex(/^([0-9A-Fa-f]{2}:){19}[0-9A-Fa-f]{2}$/, 'must be a SHA-1 thumbprint AA:BB:...(20 bytes)').optional(),
  insecure: z.boolean().optional(),
  vddkLibdir: z.string().min(1),
  transport: z.string().optional(),
});

const fileSource = z.strictObject({
  file: z.strictObject({
    images: z.array(z.string().min(1)).min(1, 'needs at least one image or block device'),
    /** One change-list file per image ("offset length" lines); missing or empty file = read what is allocated. */
    changedExtents: z.array(z.string().min(1)).optional(),
  }),
});

const vsphereSource = z.strictObject({
  vsphere: z
    .strictObject({
      server: name,
      vm: z.string().min(1).optional(),
      moref: z.string().regex(/^vm-\d+$/, 'must be a managed object id such as vm-42').optional(),
      tag: z.string().min(1).optional(),
      folder: z.string().min(1).optional(),
      quiesce: z.boolean().optional(),
    })
    .refine((v) => [v.vm, v.moref, v.tag, v.folder].filter(Boolean).length === 1, { error: 'name the VMs with exactly one of vm, moref, tag or folder' }),
});

const source = z.union([fileSource, vsphereSource], { error: 'a source is either { file: { images: [...] } } or { vsphere: { server, vm | moref | tag | folder } }' });

const retention = z.strictObject({
  keepLast: z.number().int().nonnegative().optional(),
  keepHourly: z.number().int().nonnegative().optional(),
  keepDaily: z.number().int().nonnegative().optional(),
  keepWeekly: z.number().int().nonnegative().optional(),
  keepMonthly: z.number().int().nonnegative().optional(),
  keepYearly: z.number().int().nonnegative().optional(),
  /** The forget syntax: 2d, 12h, 30min, 1y6m (m = months here, as in restic). */
  keepWithin: z
    .string()
    .refine((t) => KEEP_WITHIN_RE.test(t.trim()) && /\d/.test(t), { error: 'must be a duration like 2d, 12h, 30min, 1y6m (m = months, min = minutes)' })
    .optional(),
  /** IANA zone the periods are counted in (default the local zone). */
  tz: z.string().optional(),
});

const ebsShadow = z.union([
  z.boolean(),
  z.strictObject({
    region: z.string().optional(),
    encrypted: z.boolean().optional(),
    kmsKeyArn: z.string().optional(),
    rate: z.number().int().positive().optional(),
  }),
]);

const job = z
  .strictObject({
    name,
    repository: name,
    vms: z.array(name).min(1, 'needs at least one VM (a key of sources)'),
    every: z
      .string()
      .refine((s) => parseDuration(s) !== null || (/\s/.test(s.trim()) && validCron(s)), { error: 'must be a duration (30s, 15m, 2h) or a cron expression ("*/15 * * * *")' })
      .optional(),
    cron: cronExpr.optional(),
    /** Oldest acceptable age of the newest snapshot; default twice the interval. */
    rpo: duration.optional(),
    retention: retention.optional(),
    ebsShadow: ebsShadow.optional(),
    verifyUnchanged: z.number().min(0, 'is a percent between 0 and 100').max(100, 'is a percent between 0 and 100').optional(),
    /** Backups of this job running at once (default 2). */
    parallelism: z.number().int().min(1).max(64).optional(),
    retries: z.strictObject({ attempts: z.number().int().min(1).max(20).optional(), delay: duration.optional(), maxDelay: duration.optional() }).optional(),
    /** Read the sources at most this fast (MiB/s), to spare production storage. */
    readLimitMiBps: z.number().positive().optional(),
    /** A backup running longer than this is aborted (default: 4x the interval, at least 10 min). */
    timeout: duration.optional(),
  });

const headerValue = z.union([z.string(), secretRef]);

export const configSchema = z.strictObject({
  repositories: z.record(name, repository).refine((r) => Object.keys(r).length > 0, { error: 'needs at least one repository' }),
  vsphere: z.record(name, vsphereServer).optional(),
  sources: z.record(name, source),
  jobs: z.array(job).min(1, 'needs at least one job'),
  alerts: z
    .strictObject({
      webhook: z
        .strictObject({
          url: z.string().url(),
          headers: z.record(z.string(), headerValue).optional(),
          /** Attempts per alert (default 5). */
          attempts: z.number().int().min(1).max(20).optional(),
        })
        .optional(),
    })
    .optional(),
  service: z
    .strictObject({
      /** Backups running at once over all jobs (default 4). */
      parallelism: z.number().int().min(1).max(256).optional(),
      metricsListen: z.string().regex(/^[^:]+:\d+$|^\[[^\]]+\]:\d+$/, 'must be HOST:PORT').optional(),
      /** How long SIGTERM waits for aborted backups to wind down (default 30s). */
      shutdownGrace: duration.optional(),
      /** How often the service re-reads the newest snapshot of each VM for the RPO metric (default 30s). */
      statusInterval: duration.optional(),
    })
    .optional(),
});

export type ServiceConfig = z.infer<typeof configSchema>;
export type JobConfig = ServiceConfig['jobs'][number];
export type SourceConfig = ServiceConfig['sources'][string];
export type RepositoryConfig = ServiceConfig['repositories'][string];
