import { Command } from 'commander';
import { repairIndex, repairSnapshots } from '../engine/repair.js';
import { parseAge, parseDataSubset, verifyRepository } from '../engine/verify.js';
import { UserError } from '../repo/errors.js';
import { globals, openRepo, printJson } from './context.js';

export function registerVerify(program: Command): void {
  program
    .command('verify')
    .description('check the repository structure and every index entry against its pack; --read-data also reads and re-hashes blobs')
    .option('--read-data', 'read every pack (or, with --older-than, every pack due) and verify every blob')
    .option('--read-data-subset <subset>', 'read only a share of the packs: a percentage (5%: a random sample) or slice n/m (the same packs every time; m runs cover all)')
    .option('--older-than <age>', 'with --read-data: only packs not verified within AGE (30d, 12h, 2w); never-verified packs are spread over AGE')
    .action(async (opts: { readData?: boolean; readDataSubset?: string; olderThan?: string }, cmd: Command) => {
      const subset = opts.readDataSubset ? parseDataSubset(opts.readDataSubset) : undefined;
      const olderThanMs = opts.olderThan ? parseAge(opts.olderThan) : undefined;
      if (olderThanMs !== undefined && !opts.readData && !subset) throw new UserError('--older-than needs --read-data or --read-data-subset');
      const repo = await openRepo(cmd);
      try {
        const readData = subset ?? (opts.readData ? true : undefined);
        const r = await verifyRepository(repo, { readData, olderThanMs });
        if (globals(cmd).json) printJson(r);
        else {
          for (const p of r.problems) process.stdout.write(`problem: ${p}\n`);
          process.stdout.write(
            `${r.ok ? 'ok' : 'DAMAGED'}: ${r.snapshots} snapshot(s), ${r.packs} pack(s), ${r.indexEntriesChecked} index entries checked against pack trailers, ` +
              `${r.chunksReferenced} chunk references checked` +
              `${readData ? `, ${r.packsRead} of ${r.packsSelected} selected pack(s) read, ${r.blobsChecked} blob(s) verified` : ''}\n`,
          );
          if (r.damagedSnapshots.length) process.stdout.write(`damaged snapshots: ${r.damagedSnapshots.join(' ')}\n`);
        }
        if (!r.ok) process.exitCode = 3;
      } finally {
        await repo.close();
      }
    });
}

export function registerRepair(program: Command): void {
  const repair = program.command('repair').description('rebuild what can be rebuilt; never deletes a data pack');
  repair
    .command('index')
    .description('rebuild the index from the pack trailers alone, then remove the old index files')
    .action(async (_opts: unknown, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const r = await repairIndex(repo);
        if (globals(cmd).json) printJson(r);
        else {
          for (const p of r.problems) process.stdout.write(`problem: ${p}\n`);
          process.stdout.write(
            `${r.ok ? 'rebuilt' : 'PARTLY rebuilt'}: ${r.entries} blob(s) of ${r.packsIndexed} pack(s) in ${r.indexFilesWritten} new index file(s); ` +
              `${r.indexFilesRemoved} old index file(s) removed${r.ok ? '' : ' (old index files kept: some packs could not be read)'}\n`,
          );
        }
        if (!r.ok) process.exitCode = 3;
      } finally {
        await repo.close();
      }
    });
  repair
    .command('snapshots')
    .description('name the snapshots whose blobs are missing; --forget removes them')
    .option('--forget', 'remove the records of those snapshots (their data packs stay)')
    .action(async (opts: { forget?: boolean }, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const r = await repairSnapshots(repo, { forget: opts.forget });
        if (globals(cmd).json) printJson(r);
        else {
          for (const s of r.damaged) process.stdout.write(`${r.forgotten.includes(s.id) ? 'forgot' : 'damaged'}: ${s.id} (${s.vm}): ${s.why[0] ?? ''}\n`);
          process.stdout.write(
            r.damaged.length === 0
              ? `ok: ${r.snapshots} snapshot(s), none is missing blobs\n`
              : `${r.damaged.length} of ${r.snapshots} snapshot(s) miss blobs` +
                  (opts.forget
                    ? `; ${r.forgotten.length} forgotten (their packs stay; 'pilotlight repair index' drops index entries of packs that are gone)\n`
                    : `; rerun with --forget to remove them\n`),
          );
        }
        if (r.damaged.length > r.forgotten.length) process.exitCode = 3;
      } finally {
        await repo.close();
      }
    });
}
