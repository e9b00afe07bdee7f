/**
 * The machine's limits, measured in the same run as the backups: how fast this machine can
 * read, hash, compress, encrypt and write the same data the backups process. Both standard
 * CLIs (cat, b3sum, zstd, lz4) and pilotlight's own primitives in-process (one thread).
 *
 * The input is the non-zero 64 KiB blocks of the first image, concatenated (the data a
 * first backup really has to process; holes and zero blocks would flatter every tool).
 */
import { promises as fsp, openSync, readSync, writeSync, closeSync, existsSync, fsyncSync, statSync, renameSync } from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import { timedOk, which, MiB } from './util.js';

const BLOCK = 64 * 1024;

export interface StageResult {
  stage: string;
  how: string;
  bytes: number;
  seconds: number;
  mbPerS: number;
  threads: string;
  /** Extra figure: compression ratio, for example. */
  note?: string;
}

/** Writes the non-zero 64 KiB blocks of image into out (once; cached next to the series). */
export function denseSample(image: string, out: string): number {
  if (existsSync(out)) return statSync(out).size;
  const tmp = `${out}.tmp`;
  const fi = openSync(image, 'r');
  const fo = openSync(tmp, 'w');
  const buf = Buffer.alloc(8 * MiB);
  const zero = Buffer.alloc(BLOCK);
  let pos = 0;
  let written = 0;
  for (;;) {
    const n = readSync(fi, buf, 0, buf.length, pos);
    if (n === 0) break;
    for (let o = 0; o < n; o += BLOCK) {
      const b = buf.subarray(o, Math.min(n, o + BLOCK));
      if (b.equals(zero.subarray(0, b.length))) continue;
      writeSync(fo, b);
      written += b.length;
    }
    pos += n;
  }
  closeSync(fi);
  closeSync(fo);
  renameSync(tmp, out);
  return written;
}



async function cli(stage: string, how: string, cmd: string, args: string[], bytes: number, threads: string): Promise<StageResult | undefined> {
  if (!which(cmd)) return undefined;
  const t = await timedOk(cmd, args, { stdoutFile: '/dev/null' });
  const seconds = t.wallMs / 1000;
  return { stage, how, bytes, seconds, mbPerS: bytes / 1e6 / seconds, threads };
}

type AnyMod = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

async function tryImport(file: string): Promise<AnyMod | undefined> {
  if (!existsSync(file)) return undefined;
  try { return (await import(pathToFileURL(file).href)) as AnyMod; } catch { return undefined; }
}

/**
 * The faster of two passes: the first pass of the native BLAKE3 hasher over data just
 * read from a file ran at 610-660 MB/s and every later one at 5.1 GB/s (the same
 * process, the same buffers; a fresh random buffer hashes at 4.3-5.2 GB/s from the
 * first pass), so one pass understated it 8x and with it the pipeline ceiling. Writes
 * to disk (pack files) are timed once (timeOnce).
 */
function timeOnce(fn: () => void): number {
  const t0 = process.hrtime.bigint();
  fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

function timeIt(fn: () => void): number {
  let best = Infinity;
  for (let pass = 0; pass < 2; pass++) {
    const t0 = process.hrtime.bigint();
    fn();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return best;
}

/**
 * Runs all stages on `sample` (the dense file). `inProcessBytes` caps how much of it the
 * in-process stages load into memory.
 */
export async function measureStages(root: string, sample: string, inProcessBytes: number): Promise<{ results: StageResult[]; notes: string[] }> {
  const bytes = (await fsp.stat(sample)).size;
  const results: StageResult[] = [];
  const notes: string[] = [];
  const add = (r: StageResult | undefined, missing: string) => { if (r) results.push(r); else notes.push(missing); };

  add(await cli('read', 'cat > /dev/null (page cache)', 'cat', [sample], bytes, '1'), 'cat missing');
  add(await cli('BLAKE3', 'b3sum (mmap, all cores)', 'b3sum', [sample], bytes, `${os.cpus().length}`), 'b3sum not installed (apt-get install b3sum)');
  add(await cli('BLAKE3', 'b3sum --num-threads 1', 'b3sum', ['--num-threads', '1', sample], bytes, '1'), 'b3sum not installed');
  add(await cli('compress', 'zstd -1 -T1', 'zstd', ['-1', '-T1', '-q', '-c', sample], bytes, '1'), 'zstd CLI not installed');
  add(await cli('compress', 'zstd -1 -T0 (all cores)', 'zstd', ['-1', '-T0', '-q', '-c', sample], bytes, `${os.cpus().length}`), 'zstd CLI not installed');
  add(await cli('compress', 'lz4 -1', 'lz4', ['-1', '-q', '-c', sample], bytes, '1'), 'lz4 CLI not installed');

  // pilotlight's own primitives, one thread, on data already in memory.
  const hasherMod = await tryImport(path.join(root, 'dist/src/repo/hasher.js'));
  const compMod = await tryImport(path.join(root, 'dist/src/repo/compression.js'));
  const cryptoMod = await tryImport(path.join(root, 'dist/src/repo/crypto.js'));
  const n = Math.min(bytes, inProcessBytes) - (Math.min(bytes, inProcessBytes) % BLOCK);
  const data = Buffer.alloc(n);
  const fd = openSync(sample, 'r');
  readSync(fd, data, 0, n, 0);
  closeSync(fd);
  const chunks: Buffer[] = [];
  for (let o = 0; o < n; o += BLOCK) chunks.push(data.subarray(o, o + BLOCK));
  const rate = (s: number, b = n) => b / 1e6 / s;

  if (hasherMod?.createKeyedHasher) {
    for (const impl of ['native', 'wasm'] as const) {
      const h = await hasherMod.createKeyedHasher(randomBytes(32), impl);
      if (h.implementation !== impl) continue;
      const s = timeIt(() => { for (const c of chunks) h.hash(c); });
      results.push({ stage: 'BLAKE3', how: `pilotlight hasher (${impl}, keyed, 64 KiB chunks)`, bytes: n, seconds: s, mbPerS: rate(s), threads: '1' });
    }
  } else notes.push('pilotlight hasher (dist/src/repo/hasher.js) not built: in-process BLAKE3 skipped');

  let compressed: Uint8Array[] = [];
  if (compMod?.Compression && compMod?.Codec) {
    for (const [name, codec] of [['zstd -1', compMod.Codec.Zstd], ['lz4', compMod.Codec.Lz4]] as const) {
      const c = new compMod.Compression(1);
      try {
        c.compress(codec, chunks[0]);
      } catch { notes.push(`pilotlight ${name} did not load`); continue; }
      const out: Uint8Array[] = [];
      const codecs: unknown[] = [];
      const s = timeIt(() => {
        out.length = 0;
        codecs.length = 0;
        for (const ch of chunks) { const r = c.compress(codec, ch); out.push(r.bytes); codecs.push(r.codec); }
      });
      const outBytes = out.reduce((a, b) => a + b.length, 0);
      results.push({ stage: 'compress', how: `pilotlight ${name} (64 KiB chunks)`, bytes: n, seconds: s, mbPerS: rate(s), threads: '1', note: `ratio ${(n / outBytes).toFixed(2)}` });
      if (name === 'zstd -1') compressed = out;
      try {
        const sd = timeIt(() => { out.forEach((o, i) => c.decompress(codecs[i], o)); });
        results.push({ stage: 'decompress', how: `pilotlight ${name.replace(' -1', '')} (64 KiB chunks)`, bytes: n, seconds: sd, mbPerS: rate(sd), threads: '1', note: 'MB/s of output' });
      } catch (e) { notes.push(`pilotlight ${name} decompression failed: ${(e as Error).message}`); }
    }
  } else notes.push('pilotlight compression (dist/src/repo/compression.js) not built: in-process compression skipped');

  if (cryptoMod?.Sealer) {
    const sealer = new cryptoMod.Sealer(randomBytes(32));
    const s = timeIt(() => { for (const c of chunks) sealer.seal([c]); });
    results.push({ stage: 'encrypt', how: 'pilotlight AES-256-GCM seal (64 KiB chunks)', bytes: n, seconds: s, mbPerS: rate(s), threads: '1' });
    const sealed = chunks.slice(0, 2048).map((c) => sealer.seal([c]));
    const so = timeIt(() => { for (const b of sealed) sealer.open(b, 'bench'); });
    const ob = sealed.length * BLOCK;
    results.push({ stage: 'decrypt', how: 'pilotlight AES-256-GCM open (64 KiB chunks)', bytes: ob, seconds: so, mbPerS: rate(so, ob), threads: '1' });
  } else notes.push('pilotlight Sealer (dist/src/repo/crypto.js) not built: in-process encryption skipped');

  // Pack writing: the compressed chunks appended to 16 MiB files, each fsynced, as a packer does.
  const blobs = compressed.length ? compressed : chunks;
  const dir = await fsp.mkdtemp(path.join(path.dirname(sample), '.packs-'));
  let packBytes = 0;
  const s = timeOnce(() => {
    let fdp = -1;
    let inPack = 0;
    let k = 0;
    for (const b of blobs) {
      if (fdp < 0) { fdp = openSync(path.join(dir, `p${k++}`), 'w'); inPack = 0; }
      writeSync(fdp, b);
      inPack += b.length;
      packBytes += b.length;
      if (inPack >= 16 * MiB) { fsyncSync(fdp); closeSync(fdp); fdp = -1; }
    }
    if (fdp >= 0) { fsyncSync(fdp); closeSync(fdp); }
  });
  await fsp.rm(dir, { recursive: true, force: true });
  results.push({ stage: 'pack write', how: `append ${compressed.length ? 'zstd-compressed ' : ''}chunks to 16 MiB files, fsync each`, bytes: packBytes, seconds: s, mbPerS: rate(s, packBytes), threads: '1', note: `${(n / 1e6 / s).toFixed(0)} MB/s of input data` });
  return { results, notes };
}
