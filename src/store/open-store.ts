import { BlobStore } from './blob-store.js';
import { FsStore } from './fs-store.js';

export interface OpenStoreOptions {
  s3Endpoint?: string;
  storageClass?: string;
  concurrency?: number;
}

/** A plain path or file:// URL -> FsStore. (s3:// is added by the S3 backend.) */
export async function openStore(location: string, _options: OpenStoreOptions = {}): Promise<BlobStore> {
  if (location.startsWith('s3://')) throw new Error('s3:// repositories are not supported by this build yet');
  const p = location.startsWith('file://') ? new URL(location).pathname : location;
  return new FsStore(p);
}
