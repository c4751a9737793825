/**
 * The audit chain's errors. Each names what was expected, because the reader of these messages
 * is an operator deciding whether a chain can be trusted or an action may proceed.
 */

/**
 * An append could not be made durable (write or fdatasync failed: EIO, ENOSPC, EROFS…), or the
 * chain had already failed or been closed. The contract for callers: only a resolved `append`
 * authorises the action it records; on this rejection the action must be denied.
 */
export class AuditWriteError extends Error {
  override readonly name = "AuditWriteError";
}

/** The entry given to `append` does not match the entry schema; nothing was written. */
export class AuditInputError extends Error {
  override readonly name = "AuditInputError";
}

/**
 * An existing chain on disk cannot be continued safely (a corrupt line before the tail, a broken
 * link inside the last segment, a segment that is not a regular file). Continuing would fork the
 * chain or bury the damage under new entries, so the writer refuses to open.
 */
export class AuditCorruptError extends Error {
  override readonly name = "AuditCorruptError";
}

/** Another live writer holds the chain's lock; a second writer would fork the chain. */
export class AuditLockedError extends Error {
  override readonly name = "AuditLockedError";
}
