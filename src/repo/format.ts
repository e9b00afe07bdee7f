/** Constants of the repository format; docs/FORMAT.md is the normative text. */

/** The format version this build writes for new repositories. A repository with a higher one is refused. */
export const FORMAT_VERSION = 2;
/** The oldest version this build reads (and writes, for repositories not yet migrated). */
export const MIN_FORMAT_VERSION = 1;

export const DEFAULT_CHUNK_SIZE = 64 * 1024;
export const DEFAULT_PACK_SIZE = 16 * 1024 * 1024;
/** Slots (32-byte ids) per manifest page: a leaf covers 1024 chunks = 64 MiB of disk. */
export const PAGE_SLOTS = 1024;
export const ID_BYTES = 32;

/** Object names (see FORMAT.md, "Layout"). */
export const CONFIG_NAME = 'config';
export const KEYS_PREFIX = 'keys/';
export const INDEX_PREFIX = 'index/';
export const SNAPSHOTS_PREFIX = 'snapshots/';
export const LOCKS_PREFIX = 'locks/';
export const DATA_PREFIX = 'data/';
export const META_PREFIX = 'meta/';

/** Blob types, as stored in pack trailers and index entries. */
export enum BlobType {
  Data = 0,
  Page = 1,
}

export function packObjectName(type: BlobType, packId: string): string {
  const top = type === BlobType.Data ? DATA_PREFIX : META_PREFIX;
  return `${top}${packId.slice(0, 2)}/${packId}`;
}

const ZERO_ID = Buffer.alloc(ID_BYTES);
/** The id that stands for an all-zero chunk, or an all-zero manifest page: 32 zero bytes. */
export function isZeroId(id: Uint8Array): boolean {
  return ZERO_ID.equals(id);
}
export function zeroId(): Buffer {
  return Buffer.alloc(ID_BYTES);
}

/**
 * Associated data of seal format 2 (FORMAT.md §4.2): every sealed object is bound
 * to its kind and name, so moving bytes to another name fails authentication.
 */
export const AD = {
  blob(type: BlobType, id: Uint8Array): Buffer {
    return Buffer.concat([Buffer.from('pilotlight v2 blob\0'), Uint8Array.of(type), id]);
  },
  trailer(type: BlobType): Buffer {
    return Buffer.concat([Buffer.from('pilotlight v2 trailer\0'), Uint8Array.of(type)]);
  },
  index(name: string): Buffer {
    return Buffer.from(`pilotlight v2 index\0${name}`);
  },
  snapshot(name: string): Buffer {
    return Buffer.from(`pilotlight v2 snapshot\0${name}`);
  },
  config(): Buffer {
    return Buffer.from('pilotlight v2 config');
  },
  /** GC epoch objects (intent, done, end, condemned lists): docs/FORMAT.md, GC epochs. */
  gc(name: string): Buffer {
    return Buffer.from(`pilotlight v2 gc\0${name}`);
  },
  verified(name: string): Buffer {
    return Buffer.from(`pilotlight v2 verified\0${name}`);
  },
  key(name: string): Buffer {
    return Buffer.from(`pilotlight v2 key\0${name}`);
  },
};
