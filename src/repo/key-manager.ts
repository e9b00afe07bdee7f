import { randomBytes } from 'node:crypto';
import { UserError } from './errors.js';
import { KEYS_PREFIX } from './format.js';
import { KdfParams, parseKeyFile, writeKeyFile } from './keyfile.js';
import { Repository } from './repository.js';

/**
 * Key files of a repository: one per password, each sealing the same master key.
 * Adding one needs the repository open (with any password); the last key file is
 * never removed, so the repository can always be opened by someone.
 */
export interface KeyInfo {
  /** 32 hex: the key file's name without `keys/`. */
  id: string;
  created: string;
  version: number;
  kdf: Omit<KdfParams, 'salt'> & { name: string };
  /** The key file that opened the repository in this process. */
  inUse: boolean;
}

export async function listKeys(repo: Repository): Promise<KeyInfo[]> {
  const out: KeyInfo[] = [];
  for await (const k of repo.store.list(KEYS_PREFIX)) {
    const json = parseKeyFile(await repo.store.get(k.name), k.name);
    const { salt: _salt, ...kdf } = json.kdf as KdfParams & { salt?: string };
    out.push({ id: k.name.slice(KEYS_PREFIX.length), created: json.created, version: json.version, kdf, inUse: k.name === repo.key.name });
  }
  return out.sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id));
}

/** Adds a key file for `password` (a version 2 key file in a version 2 repository); returns its id. */
export async function addKey(repo: Repository, password: string): Promise<string> {
  if (!repo.master.encryptionKey) throw new UserError('this repository is not encrypted: it has no passwords to add');
  const id = randomBytes(16).toString('hex');
  const name = `${KEYS_PREFIX}${id}`;
  await repo.store.put(name, await writeKeyFile(repo.master, password, name, repo.config.version >= 2 ? 2 : 1), { ifNotExists: true });
  return id;
}

/** Resolves a key id or unique prefix of one. */
async function resolveKey(repo: Repository, ref: string): Promise<KeyInfo> {
  const keys = await listKeys(repo);
  const hits = keys.filter((k) => k.id.startsWith(ref.toLowerCase()));
  if (hits.length === 0) throw new UserError(`no key ${ref}; 'pilotlight key list' shows them`);
  if (hits.length > 1) throw new UserError(`key ${ref} is ambiguous: ${hits.map((h) => h.id).join(', ')}`);
  return hits[0]!;
}

/** Removes a key file; never the last one (the key in use may go only while another stays). */
export async function removeKey(repo: Repository, ref: string): Promise<KeyInfo> {
  const key = await resolveKey(repo, ref);
  const count = (await listKeys(repo)).length;
  if (count <= 1) throw new UserError(`key ${key.id} is the repository's only key: removing it would lock everyone out; add another first`);
  await repo.store.delete(`${KEYS_PREFIX}${key.id}`);
  return key;
}

/** Replaces the key in use by one for `newPassword`: the new key file is written before the old one goes. */
export async function changePassword(repo: Repository, newPassword: string): Promise<{ added: string; removed: string }> {
  const added = await addKey(repo, newPassword);
  const old = repo.key.name.slice(KEYS_PREFIX.length);
  await repo.store.delete(repo.key.name);
  return { added, removed: old };
}
