import { ObjectSealer, SaltedSealer, SealFormat, Sealer } from './crypto.js';
import { IntegrityError } from './errors.js';
import { KeyedHasher } from './hasher.js';

/**
 * How one repository seals and opens its objects (index files, pack trailers,
 * snapshot records): seal format 1 in a version 1 repository, 2 in version 2.
 * A migrated repository (its authenticated config says `migratedFrom: 1`) still
 * holds version 1 index files and packs: `openEither` accepts those, and only
 * there. Both formats need the key, so accepting format 1 is no downgrade.
 */
export class RepoSealer implements ObjectSealer {
  private readonly v1: Sealer;
  private readonly v2: SaltedSealer;
  readonly format: SealFormat;

  constructor(
    encryptionKey: Buffer | null,
    readonly version: number,
    readonly hasher: KeyedHasher,
    /** Whether version 1 objects may be present (a version 1 or a migrated repository). */
    readonly acceptsV1: boolean,
  ) {
    this.v1 = new Sealer(encryptionKey);
    this.v2 = new SaltedSealer(encryptionKey);
    this.format = version >= 2 ? 2 : 1;
  }

  get encrypted(): boolean {
    return this.v1.encrypted;
  }

  seal(parts: Uint8Array[], ad: Uint8Array): Buffer {
    return this.format === 2 ? this.v2.seal(parts, ad) : this.v1.seal(parts);
  }

  open(sealed: Uint8Array, ad: Uint8Array, what: string): Buffer {
    return this.format === 2 ? this.v2.open(sealed, ad, what) : this.v1.open(sealed, what);
  }

  /** Opens an object of the given seal format (taken from authenticated or structural context). */
  openFormat(format: SealFormat, sealed: Uint8Array, ad: Uint8Array, what: string): Buffer {
    if (format === 1 && !this.acceptsV1) throw new IntegrityError(`${what}: a version 1 object in a repository created as version 2`);
    return format === 2 ? this.v2.open(sealed, ad, what) : this.v1.open(sealed, what);
  }

  /**
   * Opens an object whose format the name does not tell (index files of a migrated
   * repository): this repository's format first, then format 1 where allowed.
   */
  openEither(sealed: Uint8Array, ad: Uint8Array, what: string): { plain: Buffer; format: SealFormat } {
    try {
      return { plain: this.open(sealed, ad, what), format: this.format };
    } catch (err) {
      if (!(err instanceof IntegrityError) || this.format === 1 || !this.acceptsV1 || !this.encrypted) throw err;
      try {
        return { plain: this.v1.open(sealed, what), format: 1 };
      } catch {
        throw err;
      }
    }
  }
}
