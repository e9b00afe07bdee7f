import { Command } from 'commander';
import { promises as fsp } from 'node:fs';
import { UserError } from '../repo/errors.js';
import { addKey, changePassword, listKeys, removeKey } from '../repo/key-manager.js';
import { migrateRepository } from '../repo/migrate.js';
import { Repository, resolvePassword } from '../repo/repository.js';
import { credentials, globals, openRepo, printJson } from './context.js';

/** The new password of `key add` / `key passwd`: --new-password-file, or PILOTLIGHT_NEW_PASSWORD. */
async function newPassword(opts: { newPasswordFile?: string }): Promise<string> {
  if (opts.newPasswordFile) {
    const text = await fsp.readFile(opts.newPasswordFile, 'utf8').catch((err) => {
      throw new UserError(`cannot read new password file ${opts.newPasswordFile}: ${(err as Error).message}`);
    });
    const pw = text.replace(/\r?\n$/, '');
    if (!pw) throw new UserError(`new password file ${opts.newPasswordFile} is empty`);
    return pw;
  }
  const env = process.env.PILOTLIGHT_NEW_PASSWORD;
  if (!env) throw new UserError('no new password: pass --new-password-file FILE or set PILOTLIGHT_NEW_PASSWORD');
  return env;
}

/** Opens the repository, runs `fn`, prints its result (JSON, or `text` of it), closes. */
async function withRepo<T>(cmd: Command, fn: (repo: Repository) => Promise<T>, text: (r: T) => string): Promise<void> {
  const repo = await openRepo(cmd);
  try {
    const r = await fn(repo);
    if (globals(cmd).json) printJson(r);
    else process.stdout.write(text(r));
  } finally {
    await repo.close();
  }
}

export function registerKey(program: Command): void {
  const key = program.command('key').description('manage the passwords (key files) of a repository');
  key
    .command('list')
    .description('list key files')
    .action(async (_opts: unknown, cmd: Command) =>
      withRepo(cmd, listKeys, (keys) =>
        keys
          .map((k) => {
            const params = Object.entries(k.kdf).filter(([n]) => n !== 'name').map(([n, v]) => `${n}=${v}`).join(' ');
            return `${k.inUse ? '*' : ' '} ${k.id}  ${k.created}  v${k.version}  ${k.kdf.name} ${params}\n`;
          })
          .join(''),
      ),
    );
  key
    .command('add')
    .description('add a password (the new one from --new-password-file or PILOTLIGHT_NEW_PASSWORD)')
    .option('--new-password-file <file>', 'file holding the new password')
    .action(async (opts: { newPasswordFile?: string }, cmd: Command) => {
      const pw = await newPassword(opts);
      await withRepo(cmd, async (repo) => ({ added: await addKey(repo, pw) }), (r) => `added key ${r.added}\n`);
    });
  key
    .command('remove')
    .description('remove a key file (never the last one)')
    .argument('<id>', 'key id or unique prefix (see key list)')
    .action(async (id: string, _opts: unknown, cmd: Command) =>
      withRepo(
        cmd,
        async (repo) => {
          const k = await removeKey(repo, id);
          return { removed: k.id, inUse: k.inUse };
        },
        (r) => `removed key ${r.removed}${r.inUse ? ' (the one this command opened with)' : ''}\n`,
      ),
    );
  key
    .command('passwd')
    .description('change the password in use (adds the new key file, then removes the old one)')
    .option('--new-password-file <file>', 'file holding the new password')
    .action(async (opts: { newPasswordFile?: string }, cmd: Command) => {
      const pw = await newPassword(opts);
      await withRepo(cmd, (repo) => changePassword(repo, pw), (r) => `password changed: key ${r.added} replaces ${r.removed}\n`);
    });
}

export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('upgrade a version 1 repository to format version 2 in place (safe to interrupt and re-run)')
    .action(async (_opts: unknown, cmd: Command) => {
      const repo = await openRepo(cmd);
      try {
        const password = repo.master.encryptionKey ? await resolvePassword(credentials(globals(cmd))) : null;
        const r = await migrateRepository(repo, password);
        if (globals(cmd).json) printJson(r);
        else if (r.alreadyDone) process.stdout.write(`${repo.location} is already format version ${r.to}\n`);
        else {
          process.stdout.write(
            `${repo.location}: format version ${r.from} -> ${r.to}: ${r.recordsConverted} snapshot record(s) converted, ${r.recordsRemoved} old one(s) removed` +
              `${r.keyReplaced ? `, key file replaced by ${r.keyReplaced}` : ''}; data packs and index files kept as they are\n`,
          );
          if (r.otherV1Keys) process.stdout.write(`${r.otherV1Keys} key file(s) of other passwords stay version 1; 'pilotlight key passwd' with each password upgrades it\n`);
        }
      } finally {
        await repo.close();
      }
    });
}
