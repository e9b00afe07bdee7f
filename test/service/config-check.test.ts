/** `pilotlight config check`: the example as written, and mistakes each named by file, line and field. */
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { run, scratch } from '../support/cli.js';

const EXAMPLE = `repositories:
  main:
    location: /srv/pilotlight/repo        # or s3://BUCKET/PREFIX
    passwordFile: /etc/pilotlight/repo.pass
sources:
  web01:
    file:
      images: [/var/lib/images/web01-disk0.img]
jobs:
  - name: web
    repository: main
    vms: [web01]
    every: 15m                            # also 30s, 2h, or cron: "*/15 * * * *"
    retention: { keepLast: 4, keepHourly: 24, keepDaily: 30 }
alerts:
  webhook: { url: "http://127.0.0.1:9000/hook" }
`;

// each mistake on its own line; the comment names the field the report must give
const BAD = `repositories:
  main:
    location: /srv/repo
    password: hunter2
  spare:
    passwordFile: /etc/spare.pass
sources:
  web01:
    file:
      images: [/img/web01.img]
      changedExtents: [/a.cl, /b.cl]
  db01:
    vsphere: { server: vc9, vm: db01 }
jobs:
  - name: web
    repository: mian
    vms: [web01, web02]
    evrey: 15m
    every: 15 minutes
    parallelism: four
    verifyUnchanged: 150
  - name: db
    repository: main
    vms: [db01]
    cron: "61 * * * *"
    retention: { keepLast: -1 }
alerts:
  webhook: { url: "not a url", headers: { Authorization: "Bearer abc" } }
`;

const EXPECTED: [number, string, RegExp][] = [
  [4, 'repositories.main.password', /by reference only/],
  [6, 'repositories.spare.location', /required/],
  [11, 'sources.web01.file.changedExtents', /1 image\(s\) but 2 change list/],
  [13, 'sources.db01.vsphere.server', /no vSphere server "vc9"/],
  [16, 'jobs[0].repository', /no repository "mian"/],
  [17, 'jobs[0].vms[1]', /no source "web02"/],
  [18, 'jobs[0].evrey', /unknown field/],
  [19, 'jobs[0].every', /duration/],
  [20, 'jobs[0].parallelism', /number/],
  [21, 'jobs[0].verifyUnchanged', /percent/],
  [25, 'jobs[1].cron', /cron expression/],
  [26, 'jobs[1].retention.keepLast', /.+/],
  [28, 'alerts.webhook.url', /.+/],
  [28, 'alerts.webhook.headers.Authorization', /by reference/],
];

describe('config check', () => {
  let s: Awaited<ReturnType<typeof scratch>>;
  before(async () => {
    s = await scratch('config');
  });
  after(() => s.cleanup());

  it("accepts the issue's example as written", async () => {
    const f = path.join(s.dir, 'example.yaml');
    await fsp.writeFile(f, EXAMPLE);
    const r = await run(['config', 'check', f], s.env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /ok: 1 repository\(ies\), 1 source\(s\), 1 job\(s\)/);
  });

  it('reports every mistake with file, line and field', async () => {
    const f = path.join(s.dir, 'bad.yaml');
    await fsp.writeFile(f, BAD);
    const r = await run(['config', 'check', f], s.env);
    assert.equal(r.code, 1);
    const lines = r.stderr.trim().split('\n');
    for (const [line, field, msg] of EXPECTED) {
      const hit = lines.find((l) => l.startsWith(`${f}:${line}:`) && l.includes(` ${field}: `));
      assert.ok(hit, `no report of ${field} at line ${line}:\n${r.stderr}`);
      assert.match(hit!, msg);
    }
    assert.equal(lines.length, EXPECTED.length, r.stderr);
    const j = await run(['--json', 'config', 'check', f], s.env);
    const doc = JSON.parse(j.stdout) as { ok: boolean; problems: { line: number; field: string }[] };
    assert.equal(doc.ok, false);
    assert.equal(doc.problems.length, EXPECTED.length);
  });

  it('a YAML syntax error is reported with its line', async () => {
    const f = path.join(s.dir, 'syntax.yaml');
    await fsp.writeFile(f, 'repositories:\n  main: { location: /x\njobs: []\n');
    const r = await run(['config', 'check', f], s.env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+: .*YAML`, 'm'));
  });

  it('run refuses a config with mistakes before doing anything', async () => {
    const f = path.join(s.dir, 'bad.yaml');
    const r = await run(['run', '--config', f, '--once'], s.env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /problem\(s\) in the configuration/);
    assert.match(r.stderr, /jobs\[0\]\.evrey: unknown field/);
  });
});
