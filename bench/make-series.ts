/**
 * bench/make-series: builds a realistic series of VM disk images for the benchmarks.
 *
 *   node dist/bench/make-series.js [--size 4G] [--states 4] [--out bench/cache/series-4G] [--rebuild]
 *
 * - A Debian root file system is made once with debootstrap (minbase plus a kernel, systemd,
 *   openssh, rsyslog, cron: what a small server VM holds) from the apt mirror this machine is
 *   configured with, and cached in bench/cache/rootfs/.
 * - State 0 of VM `web1`: a sparse raw disk of --size bytes, `mkfs.ext4 -d` populated from that
 *   tree (no mount needed).
 * - Each later state is a sparse copy (`cp --sparse=always`) of the previous image, loop-mounted
 *   and changed the way a running server changes: packages installed and purged in a chroot,
 *   logs appended and rotated, a database file whose pages are rewritten in place, temporary
 *   files written then deleted, documentation deleted. Unchanged blocks stay where they were.
 * - VM `web2` is cloned from web1's state 0 (the template case) and then diverges.
 * - Between consecutive states of a VM, the changed extents at 64 KiB granularity are written
 *   as `offset length` lines (bytes), the format vSphere CBT (QueryChangedDiskAreas) gives.
 *   They are found by comparing the two images, so they list exactly the blocks whose content
 *   differs (real CBT may list more: blocks rewritten with the same bytes).
 *
 * The series is cached: a second run with the same size and state count reuses it unless
 * --rebuild is given. Needs root (debootstrap, mount -o loop, chroot).
 */
import { promises as fsp, openSync, readSync, closeSync, readFileSync, readdirSync, existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { randomBytes } from 'node:crypto';
import { sh, shLoud, parseSize, sizeLabel, fmtSize, isMain, parseArgs, repoRoot, allocatedBytes, GiB, MiB, KiB } from './lib/util.js';

export const BLOCK = 64 * KiB;

export interface SeriesState {
  /** web1-0, web1-1, ... */
  name: string;
  vm: string;
  index: number;
  /** Image file name, relative to the series folder. */
  image: string;
  capacity: number;
  /** st_blocks * 512 of the sparse image. */
  allocatedBytes: number;
  /** Bytes in 64 KiB blocks holding at least one non-zero byte. */
  nonZeroBytes: number;
  /** The state this one was made from (previous state of the VM, or web1-0 for the clone). */
  parent?: string;
  /** Change list (offset length lines) relative to parent, relative to the series folder. */
  changes?: string;
  changedBytes?: number;
  changedExtents?: number;
  /** What was done to make this state. */
  steps: string[];
}

export interface Series {
  version: 1;
  dir: string;
  size: number;
  createdAt: string;
  buildSeconds: number;
  rootfs: { suite: string; variant: string; include: string[]; treeBytes: number };
  states: SeriesState[];
}

const ROOTFS_INCLUDE = [
  'systemd-sysv', 'udev', 'openssh-server', 'ifupdown', 'iproute2', 'less', 'vim-tiny',
  'ca-certificates', 'cron', 'rsyslog', 'logrotate', 'linux-image-amd64', 'initramfs-tools',
];
const VARIANT = 'minbase';

/** The main-archive mirror and suite from this machine's apt configuration. */
export function aptMirror(): { uri: string; suite: string } {
  const cands: { uri: string; suite: string }[] = [];
  const files: string[] = [];
  if (existsSync('/etc/apt/sources.list')) files.push('/etc/apt/sources.list');
  if (existsSync('/etc/apt/sources.list.d')) {
    for (const f of readdirSync('/etc/apt/sources.list.d').sort()) files.push(path.join('/etc/apt/sources.list.d', f));
  }
  for (const f of files) {
    const text = readFileSync(f, 'utf8');
    if (f.endsWith('.sources')) {
      for (const para of text.split(/\n\s*\n/)) {
        const field = (k: string) => new RegExp(`^${k}:\\s*(.+)$`, 'mi').exec(para)?.[1].trim();
        if (!/\bdeb\b/.test(field('Types') ?? '')) continue;
        const uris = (field('URIs') ?? '').split(/\s+/).filter(Boolean);
        const suites = (field('Suites') ?? '').split(/\s+/).filter(Boolean);
        for (const u of uris) for (const s of suites) cands.push({ uri: u, suite: s });
      }
    } else if (f.endsWith('.list')) {
      for (const line of text.split('\n')) {
        const m = /^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
        if (m) cands.push({ uri: m[1], suite: m[2] });
      }
    }
  }
  const main = cands.find((c) => /debian\/?$/.test(c.uri) && !c.suite.includes('-') && !c.suite.includes('/'));
  if (!main) throw new Error('no Debian main archive found in /etc/apt/sources.list*; debootstrap needs a mirror');
  return main;
}

/** Makes (or reuses) the debootstrap tree; returns its path. */
export function ensureRootfs(cacheDir: string, rebuild: boolean): { dir: string; suite: string } {
  const { uri, suite } = aptMirror();
  const dir = path.join(cacheDir, 'rootfs', `${suite}-${VARIANT}`);
  const marker = path.join(dir, '.pilotlight-rootfs.json');
  const want = JSON.stringify({ suite, variant: VARIANT, include: ROOTFS_INCLUDE });
  if (!rebuild && existsSync(marker) && readFileSync(marker, 'utf8').trim() === want) return { dir, suite };
  if (!existsSync('/usr/sbin/debootstrap')) {
    log('installing debootstrap');
    shLoud('apt-get', ['install', '-y', '-q', 'debootstrap'], { env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  }
  const tmp = `${dir}.tmp`;
  sh('rm', ['-rf', tmp, dir]);
  sh('mkdir', ['-p', path.dirname(dir)]);
  log(`debootstrap --variant=${VARIANT} ${suite} (this takes a few minutes)`);
  shLoud('debootstrap', [`--variant=${VARIANT}`, `--include=${ROOTFS_INCLUDE.join(',')}`, suite, tmp, uri]);
  // Like `apt-get clean`: the downloaded packages leave the tree and seed the chroot's download cache.
  const aptCache = path.join(cacheDir, 'apt-archives');
  sh('mkdir', ['-p', aptCache]);
  sh('sh', ['-c', `mv ${tmp}/var/cache/apt/archives/*.deb ${aptCache}/ 2>/dev/null || true`]);
  writeFileSync(path.join(tmp, '.pilotlight-rootfs.json'), want + '\n');
  sh('mv', [tmp, dir]);
  return { dir, suite };
}

function log(msg: string): void {
  process.stderr.write(`[make-series ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

// ---------------------------------------------------------------- deterministic content

/** mulberry32: small seeded PRNG so the generated data is the same on every build. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS = ('order customer invoice shipped pending paid refund item quantity price total address city ' +
  'street country email phone status created updated session token user admin product category warehouse ' +
  'delivery express standard tracking note gift discount coupon tax currency EUR USD GBP').split(' ');
const CITIES = ['Lyon', 'Berlin', 'Austin', 'Osaka', 'Porto', 'Leeds', 'Turin', 'Gdansk', 'Quebec', 'Perth'];

/** One 8 KiB database page of text records: compressible about 3x, like real row data. */
function dbPage(rnd: () => number, pageNo: number, lsn: number): Buffer {
  const page = Buffer.alloc(8192);
  page.write(`PG${String(pageNo).padStart(10, '0')}L${String(lsn).padStart(12, '0')}\n`, 0, 'latin1');
  let off = 26;
  for (;;) {
    const id = Math.floor(rnd() * 1e9);
    const n = 2 + Math.floor(rnd() * 5);
    let words = '';
    for (let i = 0; i < n; i++) words += WORDS[Math.floor(rnd() * WORDS.length)] + ' ';
    const rec = `{"id":${id},"ts":${1700000000 + Math.floor(rnd() * 5e7)},"city":"${CITIES[Math.floor(rnd() * CITIES.length)]}",` +
      `"amount":${(rnd() * 1000).toFixed(2)},"note":"${words.trim()}","h":"${Math.floor(rnd() * 0xffffffff).toString(16)}"}\n`;
    if (off + rec.length > page.length) break;
    off += page.write(rec, off, 'latin1');
  }
  return page;
}

function logLines(rnd: () => number, bytes: number, t0: number): string {
  const parts: string[] = [];
  let n = 0;
  let t = t0;
  const paths = ['/', '/api/orders', '/api/cart', '/static/app.js', '/static/site.css', '/login', '/api/items/', '/health'];
  const agents = ['Mozilla/5.0 (X11; Linux x86_64)', 'curl/7.88.1', 'Mozilla/5.0 (Windows NT 10.0; Win64; x64)', 'kube-probe/1.27'];
  while (n < bytes) {
    t += Math.floor(rnd() * 3);
    const d = new Date(t * 1000).toISOString();
    const ip = `10.${Math.floor(rnd() * 255)}.${Math.floor(rnd() * 255)}.${Math.floor(rnd() * 255)}`;
    let p = paths[Math.floor(rnd() * paths.length)];
    if (p.endsWith('/') && p.length > 1) p += Math.floor(rnd() * 100000);
    const status = rnd() < 0.93 ? 200 : rnd() < 0.5 ? 404 : 500;
    const line = `${ip} - - [${d}] "GET ${p} HTTP/1.1" ${status} ${Math.floor(rnd() * 50000)} "-" "${agents[Math.floor(rnd() * agents.length)]}" rt=${(rnd() * 0.3).toFixed(3)}\n`;
    parts.push(line);
    n += line.length;
  }
  return parts.join('');
}

// ---------------------------------------------------------------- mounted-image changes

interface Ctx {
  mnt: string;
  aptCache: string;
  scale: number; // disk size / 4 GiB
  rnd: () => number;
  steps: string[];
  dbSize: number;
}

function mountImage(img: string, mnt: string, chroot: boolean, aptCache: string): void {
  sh('mkdir', ['-p', mnt]);
  sh('mount', ['-o', 'loop', img, mnt]);
  if (!chroot) return;
  sh('mount', ['-t', 'proc', 'proc', path.join(mnt, 'proc')]);
  sh('mount', ['-t', 'sysfs', 'sysfs', path.join(mnt, 'sys')]);
  sh('mount', ['--bind', '/dev', path.join(mnt, 'dev')]);
  sh('mount', ['--bind', '/dev/pts', path.join(mnt, 'dev/pts')]);
  // Downloaded .deb files stay outside the image (as after `apt-get clean`) and are reused by rebuilds.
  sh('mkdir', ['-p', path.join(aptCache, 'partial')]);
  sh('mount', ['--bind', aptCache, path.join(mnt, 'var/cache/apt/archives')]);
  // No daemons may start inside the chroot.
  writeFileSync(path.join(mnt, 'usr/sbin/policy-rc.d'), '#!/bin/sh\nexit 101\n', { mode: 0o755 });
}

function unmountImage(mnt: string): void {
  const pol = path.join(mnt, 'usr/sbin/policy-rc.d');
  try { if (existsSync(pol)) sh('rm', ['-f', pol]); } catch { /* not mounted */ }
  sh('sync', []);
  sh('umount', ['-R', mnt], { allowFail: true });
  sh('umount', ['-R', mnt], { allowFail: true });
}

function chroot(c: Ctx, cmd: string): void {
  shLoud('chroot', [c.mnt, '/bin/sh', '-c', cmd], {
    env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', DEBIAN_FRONTEND: 'noninteractive', LANG: 'C.UTF-8', HOME: '/root' },
  });
}

function aptInstall(c: Ctx, pkgs: string[]): void {
  c.steps.push(`apt-get install ${pkgs.join(' ')}`);
  chroot(c, `apt-get -y -q -o Dpkg::Use-Pty=0 install --no-install-recommends ${pkgs.join(' ')} >/dev/null`);
}

function aptPurge(c: Ctx, pkgs: string[]): void {
  c.steps.push(`apt-get purge --autoremove ${pkgs.join(' ')}`);
  chroot(c, `apt-get -y -q -o Dpkg::Use-Pty=0 purge --autoremove ${pkgs.join(' ')} >/dev/null`);
}

async function writeLogs(c: Ctx, bytes: number, t0: number): Promise<void> {
  const dir = path.join(c.mnt, 'var/log/nginx-app');
  await fsp.mkdir(dir, { recursive: true });
  const access = logLines(c.rnd, bytes, t0);
  await fsp.appendFile(path.join(dir, 'access.log'), access);
  const sys = access.split('\n').filter((_, i) => i % 20 === 0)
    .map((l) => `${l.slice(0, 40)} web1 app[${Math.floor(c.rnd() * 30000)}]: request done ${l.slice(40, 90)}`).join('\n') + '\n';
  await fsp.appendFile(path.join(c.mnt, 'var/log/syslog'), sys);
  c.steps.push(`append ${fmtSize(bytes + sys.length)} of logs`);
}

async function rotateLogs(c: Ctx): Promise<void> {
  const dir = path.join(c.mnt, 'var/log/nginx-app');
  const cur = path.join(dir, 'access.log');
  if (!existsSync(cur)) return;
  for (let i = 4; i >= 1; i--) {
    const from = path.join(dir, `access.log.${i}.gz`);
    if (!existsSync(from)) continue;
    if (i === 4) await fsp.rm(from);
    else await fsp.rename(from, path.join(dir, `access.log.${i + 1}.gz`));
  }
  await fsp.writeFile(path.join(dir, 'access.log.1.gz'), zlib.gzipSync(await fsp.readFile(cur), { level: 6 }));
  await fsp.truncate(cur, 0);
  c.steps.push('rotate logs (gzip access.log, drop the oldest)');
}

const DB = 'var/lib/appdb/orders.db';

async function createDb(c: Ctx, seed: number): Promise<void> {
  const file = path.join(c.mnt, DB);
  await fsp.mkdir(path.dirname(file), { recursive: true });
  const fh = await fsp.open(file, 'w');
  const rnd = prng(seed);
  const pages = c.dbSize / 8192;
  const batch: Buffer[] = [];
  for (let p = 0; p < pages; p++) {
    batch.push(dbPage(rnd, p, 1));
    if (batch.length === 512) { await fh.write(Buffer.concat(batch)); batch.length = 0; }
  }
  if (batch.length) await fh.write(Buffer.concat(batch));
  await fh.sync();
  await fh.close();
  c.steps.push(`create database file /${DB} (${fmtSize(c.dbSize)})`);
}

/** Rewrites a fraction of the database pages in place (same file blocks), some in runs as a B-tree split would. */
async function churnDb(c: Ctx, fraction: number, lsn: number): Promise<void> {
  const file = path.join(c.mnt, DB);
  if (!existsSync(file)) return;
  const size = (await fsp.stat(file)).size;
  const pages = Math.floor(size / 8192);
  const fh = await fsp.open(file, 'r+');
  let todo = Math.floor(pages * fraction);
  while (todo > 0) {
    const start = Math.floor(c.rnd() * pages);
    const run = Math.min(todo, c.rnd() < 0.7 ? 1 : 1 + Math.floor(c.rnd() * 64));
    for (let p = start; p < Math.min(pages, start + run); p++) await fh.write(dbPage(c.rnd, p, lsn), 0, 8192, p * 8192);
    todo -= run;
  }
  await fh.sync();
  await fh.close();
  c.steps.push(`rewrite ${(fraction * 100).toFixed(0)}% of the database pages in place`);
}

async function growDb(c: Ctx, bytes: number, lsn: number): Promise<void> {
  const file = path.join(c.mnt, DB);
  if (!existsSync(file)) return;
  const size = (await fsp.stat(file)).size;
  const first = Math.floor(size / 8192);
  const bufs: Buffer[] = [];
  for (let p = 0; p < bytes / 8192; p++) bufs.push(dbPage(c.rnd, first + p, lsn));
  await fsp.appendFile(file, Buffer.concat(bufs));
  c.steps.push(`append ${fmtSize(bytes)} to the database`);
}

/** A temporary file written and deleted: its blocks change on disk, though no file remains. */
async function tmpChurn(c: Ctx, bytes: number): Promise<void> {
  const file = path.join(c.mnt, 'var/tmp/build-cache.bin');
  const parts: Buffer[] = [];
  for (let n = 0; n < bytes; n += MiB) {
    // Half random (already compressed data), half text.
    parts.push(n % (2 * MiB) === 0 ? randomBytes(MiB) : Buffer.from(logLines(c.rnd, MiB, 1.7e9).slice(0, MiB), 'latin1'));
  }
  await fsp.writeFile(file, Buffer.concat(parts));
  sh('sync', []);
  await fsp.rm(file);
  c.steps.push(`write then delete a ${fmtSize(bytes)} temporary file`);
}

async function deleteDocs(c: Ctx): Promise<void> {
  for (const d of ['usr/share/doc', 'usr/share/man', 'usr/share/info']) {
    const full = path.join(c.mnt, d);
    if (!existsSync(full)) continue;
    for (const e of await fsp.readdir(full)) await fsp.rm(path.join(full, e), { recursive: true, force: true });
  }
  c.steps.push('delete /usr/share/{doc,man,info}');
}

async function userFiles(c: Ctx, seed: number): Promise<void> {
  // A user copies some existing files around: duplicate content inside the same disk.
  const home = path.join(c.mnt, 'home/deploy/releases', `r${seed}`);
  await fsp.mkdir(home, { recursive: true });
  sh('cp', ['-a', path.join(c.mnt, 'usr/lib/python3.11/email'), home], { allowFail: true });
  sh('cp', ['-a', path.join(c.mnt, 'usr/bin'), path.join(home, 'bin')]);
  c.steps.push(`copy /usr/bin into /home/deploy/releases/r${seed} (duplicate data)`);
}

const MB16 = 16 * MiB;

/** What happens to web1 between state i-1 and state i (1-based). */
async function evolveWeb1(c: Ctx, i: number): Promise<void> {
  const s = (b: number) => Math.max(MiB, Math.round((b * c.scale) / MiB) * MiB);
  const t0 = 1.7e9 + i * 7 * 86400;
  switch (i) {
    case 1:
      c.steps.push('apt-get update');
      chroot(c, 'apt-get -q update >/dev/null');
      aptInstall(c, ['nginx', 'python3', 'curl']);
      await createDb(c, 1);
      await writeLogs(c, s(24 * MiB), t0);
      break;
    case 2:
      aptPurge(c, ['curl']);
      aptInstall(c, ['git']);
      await churnDb(c, 0.08, i);
      await growDb(c, s(8 * MiB), i);
      await rotateLogs(c);
      await writeLogs(c, s(MB16), t0);
      await userFiles(c, i);
      break;
    case 3:
      aptInstall(c, ['sqlite3', 'rsync']);
      await deleteDocs(c);
      await churnDb(c, 0.05, i);
      await writeLogs(c, s(MB16), t0);
      await tmpChurn(c, s(64 * MiB));
      break;
    default: {
      const cycle = ['jq', 'tree', 'strace', 'htop', 'lsof', 'tcpdump'];
      aptInstall(c, [cycle[i % cycle.length]]);
      if (i > 4) aptPurge(c, [cycle[(i - 1) % cycle.length]]);
      await churnDb(c, 0.05, i);
      await growDb(c, s(4 * MiB), i);
      if (i % 2 === 0) await rotateLogs(c);
      await writeLogs(c, s(MB16), t0);
      await tmpChurn(c, s(32 * MiB));
    }
  }
}

/** web2: cloned from web1's first state, then made into a different server. */
async function evolveWeb2(c: Ctx, i: number): Promise<void> {
  const s = (b: number) => Math.max(MiB, Math.round((b * c.scale) / MiB) * MiB);
  if (i === 0) {
    writeFileSync(path.join(c.mnt, 'etc/hostname'), 'web2\n');
    writeFileSync(path.join(c.mnt, 'etc/machine-id'), randomBytes(16).toString('hex') + '\n');
    chroot(c, 'rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null');
    c.steps.push('new hostname, machine-id and SSH host keys');
    aptInstall(c, ['redis-server', 'python3']);
    await createDb(c, 2);
    await writeLogs(c, s(24 * MiB), 1.71e9);
  } else {
    await churnDb(c, 0.05, i);
    await writeLogs(c, s(MB16), 1.71e9 + i * 86400);
    await tmpChurn(c, s(32 * MiB));
  }
}

// ---------------------------------------------------------------- change lists

/**
 * Compares two images of the same size in 64 KiB blocks; writes the differing blocks as merged
 * `offset length` extents and returns counts, plus the non-zero bytes of the newer image.
 */
export function diffImages(a: string | undefined, b: string, out: string | undefined): { changedBytes: number; extents: number; nonZeroBytes: number } {
  const BUF = 8 * MiB;
  const fb = openSync(b, 'r');
  const fa = a ? openSync(a, 'r') : undefined;
  const ba = Buffer.alloc(BUF);
  const bb = Buffer.alloc(BUF);
  const zero = Buffer.alloc(BLOCK);
  const lines: string[] = [];
  let runStart = -1;
  let runEnd = -1;
  let changed = 0;
  let nonZero = 0;
  let pos = 0;
  for (;;) {
    const nb = readSync(fb, bb, 0, BUF, pos);
    if (nb === 0) break;
    const na = fa !== undefined ? readSync(fa, ba, 0, BUF, pos) : 0;
    if (fa !== undefined && na !== nb) throw new Error(`${a} and ${b} differ in size`);
    for (let o = 0; o < nb; o += BLOCK) {
      const end = Math.min(nb, o + BLOCK);
      const blk = bb.subarray(o, end);
      if (!blk.equals(zero.subarray(0, end - o))) nonZero += end - o;
      if (fa === undefined) continue;
      if (!blk.equals(ba.subarray(o, end))) {
        const off = pos + o;
        if (off === runEnd) runEnd = pos + end;
        else {
          if (runStart >= 0) lines.push(`${runStart} ${runEnd - runStart}`);
          runStart = off;
          runEnd = pos + end;
        }
        changed += end - o;
      }
    }
    pos += nb;
  }
  if (runStart >= 0) lines.push(`${runStart} ${runEnd - runStart}`);
  closeSync(fb);
  if (fa !== undefined) closeSync(fa);
  if (out) writeFileSync(out, lines.join('\n') + (lines.length ? '\n' : ''));
  return { changedBytes: changed, extents: lines.length, nonZeroBytes: nonZero };
}

// ---------------------------------------------------------------- series

export interface MakeSeriesOptions {
  size: number;
  states: number;
  cloneStates: number;
  out: string;
  cacheDir: string;
  rebuild: boolean;
}

export function defaultSeriesDir(cacheDir: string, size: number): string {
  return path.join(cacheDir, `series-${sizeLabel(size)}`);
}

export function loadSeries(dir: string): Series | undefined {
  const f = path.join(dir, 'series.json');
  if (!existsSync(f)) return undefined;
  const s = JSON.parse(readFileSync(f, 'utf8')) as Series;
  s.dir = dir;
  return s;
}

export async function makeSeries(o: MakeSeriesOptions): Promise<Series> {
  const have = loadSeries(o.out);
  if (!o.rebuild && have && have.size === o.size &&
      have.states.filter((s) => s.vm === 'web1').length >= o.states &&
      have.states.filter((s) => s.vm === 'web2').length >= o.cloneStates) {
    log(`reusing ${o.out} (built ${have.createdAt}; --rebuild to make it again)`);
    return have;
  }
  if (process.getuid && process.getuid() !== 0) throw new Error('make-series needs root (debootstrap, mount -o loop, chroot)');
  const started = Date.now();
  const rootfs = ensureRootfs(o.cacheDir, false);
  const treeBytes = Number(sh('du', ['-sb', rootfs.dir]).split(/\s/)[0]);
  // The tree, ext4 metadata (~5%), the packages the later states install (~250 MB) and the database must fit.
  const need = treeBytes * 1.1 + o.size * 0.05 + 300 * MiB + Math.max(16 * MiB, o.size / 16) * 1.2;
  if (need > o.size) {
    throw new Error(`a ${fmtSize(o.size)} disk is too small for the ${fmtSize(treeBytes)} Debian tree and the later states ` +
      `(about ${fmtSize(need)} needed): use --size ${Math.ceil(need / GiB)}G or more`);
  }
  const tmp = `${o.out}.tmp`;
  const mnt = path.join(tmp, 'mnt');
  unmountImage(mnt);
  sh('rm', ['-rf', tmp]);
  sh('mkdir', ['-p', tmp]);
  const aptCache = path.join(o.cacheDir, 'apt-archives');
  const scale = o.size / (4 * GiB);
  const states: SeriesState[] = [];

  const finish = async (st: Omit<SeriesState, 'allocatedBytes' | 'nonZeroBytes' | 'changedBytes' | 'changedExtents'>): Promise<void> => {
    const img = path.join(tmp, st.image);
    const parentImg = st.parent ? path.join(tmp, `${st.parent}.img`) : undefined;
    const d = diffImages(parentImg, img, st.changes ? path.join(tmp, st.changes) : undefined);
    const full: SeriesState = {
      ...st,
      allocatedBytes: await allocatedBytes(img),
      nonZeroBytes: d.nonZeroBytes,
      ...(st.parent ? { changedBytes: d.changedBytes, changedExtents: d.extents } : {}),
    };
    states.push(full);
    log(`${st.name}: ${fmtSize(full.allocatedBytes)} allocated, ${fmtSize(full.nonZeroBytes)} non-zero` +
      (st.parent ? `, ${fmtSize(d.changedBytes)} changed since ${st.parent} in ${d.extents} extents` : ''));
  };

  // State 0: mkfs.ext4 -d from the debootstrap tree.
  const img0 = path.join(tmp, 'web1-0.img');
  sh('truncate', ['-s', String(o.size), img0]);
  log(`mkfs.ext4 -d ${path.basename(rootfs.dir)} -> web1-0.img (${fmtSize(o.size)})`);
  sh('mkfs.ext4', ['-q', '-F', '-L', 'rootfs', '-U', '7a1c2b40-5e1d-4c3a-9f55-00000000beef',
    '-E', 'lazy_itable_init=0,lazy_journal_init=0', '-d', rootfs.dir, img0]);
  await finish({ name: 'web1-0', vm: 'web1', index: 0, image: 'web1-0.img', capacity: o.size,
    steps: [`debootstrap --variant=${VARIANT} ${rootfs.suite} (+${ROOTFS_INCLUDE.length} packages)`, 'mkfs.ext4 -d'] });

  const evolve = async (vm: string, index: number, parent: string, fn: (c: Ctx) => Promise<void>) => {
    const name = `${vm}-${index}`;
    const img = path.join(tmp, `${name}.img`);
    sh('cp', ['--sparse=always', path.join(tmp, `${parent}.img`), img]);
    const c: Ctx = { mnt, aptCache, scale, rnd: prng(1000 * index + vm.length), steps: [], dbSize: Math.max(16 * MiB, o.size / 16) };
    log(`${name}: loop-mounting a copy of ${parent} and changing it`);
    mountImage(img, mnt, true, aptCache);
    try {
      await fn(c);
    } finally {
      unmountImage(mnt);
    }
    await finish({ name, vm, index, image: `${name}.img`, capacity: o.size, parent, changes: `${name}.changes`, steps: c.steps });
  };

  for (let i = 1; i < o.states; i++) await evolve('web1', i, `web1-${i - 1}`, (c) => evolveWeb1(c, i));
  for (let i = 0; i < o.cloneStates; i++) await evolve('web2', i, i === 0 ? 'web1-0' : `web2-${i - 1}`, (c) => evolveWeb2(c, i));

  await fsp.rmdir(mnt).catch(() => undefined);
  const series: Series = {
    version: 1,
    dir: o.out,
    size: o.size,
    createdAt: new Date().toISOString(),
    buildSeconds: Math.round((Date.now() - started) / 1000),
    rootfs: { suite: rootfs.suite, variant: VARIANT, include: ROOTFS_INCLUDE, treeBytes },
    states,
  };
  writeFileSync(path.join(tmp, 'series.json'), JSON.stringify({ ...series, dir: undefined }, null, 2) + '\n');
  sh('rm', ['-rf', o.out]);
  sh('mv', [tmp, o.out]);
  log(`series ready in ${o.out} (${series.buildSeconds} s)`);
  return series;
}

async function main(): Promise<void> {
  const { flags, on } = parseArgs(process.argv.slice(2), ['rebuild', 'rebuild-rootfs', 'help']);
  if (on.has('help')) {
    process.stdout.write('usage: node dist/bench/make-series.js [--size 4G] [--states 4] [--clone-states 1] [--out DIR] [--rebuild] [--rebuild-rootfs]\n');
    return;
  }
  const root = repoRoot(import.meta.url);
  const cacheDir = path.join(root, 'bench', 'cache');
  const size = parseSize(flags.size ?? '4G');
  if (on.has('rebuild-rootfs')) ensureRootfs(cacheDir, true);
  const s = await makeSeries({
    size,
    states: Number(flags.states ?? 4),
    cloneStates: Number(flags['clone-states'] ?? 1),
    out: path.resolve(flags.out ?? defaultSeriesDir(cacheDir, size)),
    cacheDir,
    rebuild: on.has('rebuild') || on.has('rebuild-rootfs'),
  });
  for (const st of s.states) {
    process.stdout.write(`${st.name.padEnd(8)} ${fmtSize(st.allocatedBytes).padStart(10)} allocated ${fmtSize(st.nonZeroBytes).padStart(10)} non-zero` +
      (st.parent ? `  ${fmtSize(st.changedBytes ?? 0).padStart(10)} changed since ${st.parent}` : '') + `\n`);
  }
}

if (isMain(import.meta.url)) {
  main().catch((e) => { process.stderr.write(`make-series: ${e instanceof Error ? e.message : e}\n`); process.exit(1); });
}
