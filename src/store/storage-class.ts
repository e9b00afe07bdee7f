/**
 * Storage classes whose objects cannot be read by a GET until a restore request
 * (RestoreObject) has completed, hours later. Packs must be readable at once: a restore
 * reads ranges of them, and so does verify and every backup that dedups against them.
 */
const ARCHIVE_CLASSES = new Set(['GLACIER', 'DEEP_ARCHIVE']);

/** Throws (one line: why, and what to use instead) for a storage class packs cannot live in. */
export function checkPackStorageClass(storageClass: string): void {
  const cls = storageClass.trim().toUpperCase();
  if (!ARCHIVE_CLASSES.has(cls)) return;
  throw new StorageClassError(
    `storage class ${cls} is refused for packs: its objects need a restore request (hours) before they can be read, ` +
      `so restores could not read them; use GLACIER_IR (instant retrieval), STANDARD_IA or ONEZONE_IA for colder, cheaper packs`,
  );
}

export class StorageClassError extends Error {
  readonly code = 'STORAGE_CLASS_REFUSED';
}
