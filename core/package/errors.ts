/** One error type for every refusal of the package layer, with a code tests and callers can match. */

export type PackageErrorCode =
  | "unsafe-path"
  | "unsupported-file-type"
  | "too-large"
  | "too-many-files"
  | "bad-archive"
  | "digest-mismatch"
  | "version-conflict"
  | "writable"
  | "not-found";

export class PackageError extends Error {
  override readonly name = "PackageError";
  constructor(
    readonly code: PackageErrorCode,
    message: string,
  ) {
    super(message);
  }
}
