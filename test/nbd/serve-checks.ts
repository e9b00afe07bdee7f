/**
 * The checks of `serve nbd` against the real Debian NBD clients, run on a local
 * repository (serve-local.test.ts) and on Ceph RGW (serve-s3.test.ts): nbdcopy
 * equal to `restore` byte for byte, `qemu-img compare`, `nbdinfo --map` holes exactly
 * where the manifest has zero chunks, qemu-io random reads, four parallel
 * connections (seen in the server's own metrics).
 */
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ok } from '../support/cli.js';
import { Rng, makeImage, sameBytes } from '../support/images.js';
import { Serving, nbdMap, nbdUri, parseQemuIoDump, startServe, toolOk } from '../support/nbd.js';

const parsePrometheus = createRequire(import.meta.url)('parse-prometheus-text-format') as (
  text: string,
) => { name: string; metrics: { value?: string; labels?: Record<string, string>; count?: string }[] }[];

const MiB = 1 << 20;
const CHUNK = 65536;
/** Not a whole number of chunks: the last chunk is short. */
export const SIZE = 24 * MiB + 7 * 4096;

export interface RepoSetup {
  /** --repo value and environment for the CLI. */
  repoArgs: string[];
  env: Record<string, string>;
  dir: string;
  cleanup: () => Promise<void>;
}

/** Runs of zero / data chunks of an image, as an oracle for the map (all-zero chunks are holes in a manifest). */
export async function zeroRuns(file: string): Promise<{ offset: number; length: number; zero: boolean }[]> {
  const bytes = await fsp.readFile(file);
  const runs: { offset: number; length: number; zero: boolean }[] = [];
  for (let o = 0; o < bytes.length; o += CHUNK) {
    const len = Math.min(CHUNK, bytes.length - o);
    const zero = bytes.subarray(o, o + len).every((b) => b === 0);
    const prev = runs[runs.length - 1];
    if (prev && prev.zero === zero) prev.length += len;
    else runs.push({ offset: o, length: len, zero });
  }
  return runs;
}

async function scrape(url: string): Promise<Map<string, number>> {
  const res = await fetch(url);
  assert.equal(res.status, 200);
  const out = new Map<string, number>();
  for (const fam of parsePrometheus(await res.text())) {
    for (const m of fam.metrics) {
      const v = Number(m.value ?? m.count ?? NaN);
      out.set(fam.name, (out.get(fam.name) ?? 0) + (Number.isNaN(v) ? 0 : v));
    }
  }
  return out;
}

export function serveChecks(label: string, setup: () => Promise<RepoSetup>): void {
  describe(`serve nbd (${label}) with the Debian clients`, () => {
    let s: RepoSetup;
    let image: string;
    let restored: string;
    let serving: Serving;
    let socket: string;
    let uri: string;

    before(async () => {
      s = await setup();
      image = path.join(s.dir, 'disk.img');
      restored = path.join(s.dir, 'restored.img');
      await makeImage(
        image,
        SIZE,
        [
          { offset: 0, length: 3 * MiB, kind: 'random' },
          { offset: 3 * MiB, length: MiB, kind: 'zero' }, // written zeros: zero chunks in the manifest
          { offset: 6 * MiB + 1000, length: 2 * MiB, kind: 'text' },
          { offset: 12 * MiB, length: 2 * MiB, kind: 'repeat' },
          { offset: SIZE - 5000, length: 5000, kind: 'random' },
        ],
        11,
      );
      await ok(['init', ...s.repoArgs], s.env);
      await ok(['backup', 'file', image, '--vm', 'web', ...s.repoArgs], s.env);
      await ok(['restore', 'latest', '--vm', 'web', '--to', restored, ...s.repoArgs], s.env);
      socket = path.join(s.dir, 'nbd.sock');
      serving = await startServe(['latest', '--vm', 'web', '--listen', `unix:${socket}`, '--metrics-listen', '127.0.0.1:0', ...s.repoArgs], s.env);
      uri = nbdUri(socket, '0');
    });

    after(async () => {
      if (serving) assert.equal(await serving.stop(), 0, serving.stderr());
      await s?.cleanup();
    });

    it('names every disk as an export by index and by name', () => {
      assert.equal(serving.ready.exports.length, 1);
      const e = serving.ready.exports[0]!;
      assert.deepEqual(e.names[0], '0');
      assert.ok(e.names.length === 2, JSON.stringify(e));
      assert.equal(e.size, SIZE);
      assert.equal(e.writable, false);
    });

    it('nbdcopy from the export equals restore byte for byte', async () => {
      const out = path.join(s.dir, 'nbdcopy.img');
      await toolOk('nbdcopy', [uri, out]);
      assert.ok(await sameBytes(out, restored), 'nbdcopy output differs from restore');
      assert.ok(await sameBytes(restored, image), 'restore differs from the source image');
      await fsp.rm(out);
    });

    it('qemu-img compare: the export (by index and by disk name) is identical to the restored image', async () => {
      const r = await toolOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', restored, uri]);
      assert.match(r.stdout, /Images are identical/);
      const byName = nbdUri(socket, serving.ready.exports[0]!.names[1]!);
      assert.match((await toolOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', restored, byName])).stdout, /identical/);
    });

    it('nbdinfo --map shows holes exactly where the manifest has zero chunks', async () => {
      const map = await nbdMap(uri);
      const merged: { offset: number; length: number; zero: boolean }[] = [];
      for (const m of map) {
        assert.ok(m.type === 0 || m.type === 3, `extent type ${m.type}: holes must be hole+zero, data 0`);
        const zero = m.type === 3;
        const prev = merged[merged.length - 1];
        if (prev && prev.zero === zero) prev.length += m.length;
        else merged.push({ offset: m.offset, length: m.length, zero });
      }
      const expected = await zeroRuns(image);
      assert.ok(expected.some((r) => r.zero && r.offset === 3 * MiB), 'the written-zero MiB is a zero run');
      assert.deepEqual(merged, expected);
    });

    it('qemu-io random reads return the snapshot bytes', async () => {
      const rng = new Rng(5);
      const reads: [number, number][] = [
        [CHUNK - 100, 300], // across a chunk boundary
        [SIZE - 777, 777], // the last bytes of the short last chunk
        [3 * MiB - 10, 20], // data into zeros
      ];
      while (reads.length < 40) reads.push([rng.int(SIZE - 4096), 1 + rng.int(4096)]);
      const args = ['-r', '-f', 'raw'];
      for (const [o, l] of reads) args.push('-c', `read -v ${o} ${l}`);
      const r = await toolOk('qemu-io', [...args, uri]);
      const dump = parseQemuIoDump(r.stdout);
      const bytes = await fsp.readFile(image);
      let checked = 0;
      for (const [o, l] of reads) {
        for (let i = o; i < o + l; i++) {
          assert.equal(dump.get(i), bytes[i], `byte ${i}`);
          checked++;
        }
      }
      assert.ok(checked > 40 * 100, `${checked} bytes checked`);
      assert.doesNotMatch(r.stdout + r.stderr, /failed/);
    });

    it('four parallel connections (nbdcopy --connections=4 --threads=4) read the same disk, and the metrics see them', async () => {
      const url = serving.ready.metrics!;
      const before = await scrape(url);
      const out = path.join(s.dir, 'four.img');
      await toolOk('nbdcopy', ['--connections=4', '--threads=4', '--requests=16', uri, out]);
      assert.ok(await sameBytes(out, image));
      await fsp.rm(out);
      const m = await scrape(url);
      assert.ok(m.get('pilotlight_nbd_connections_total')! - (before.get('pilotlight_nbd_connections_total') ?? 0) >= 4, 'four connections');
      // nbdcopy asks for block status and skips the holes: it reads (at least) the data runs
      const dataBytes = (await zeroRuns(image)).filter((r) => !r.zero).reduce((n, r) => n + r.length, 0);
      assert.ok(m.get('pilotlight_nbd_bytes_served_total')! - (before.get('pilotlight_nbd_bytes_served_total') ?? 0) >= dataBytes);
      assert.ok(m.get('pilotlight_nbd_cache_hits_total')! > 0, 'warm reads hit the cache');
      assert.ok(m.get('pilotlight_nbd_cache_misses_total')! > 0);
      assert.ok(m.get('pilotlight_nbd_chunk_fetch_seconds')! > 0, 'fetch latency observed');
      assert.equal(m.get('pilotlight_nbd_chunk_errors_total') ?? 0, 0);
    });
  });
}
