/**
 * Limits on what a capsule package may hold. They bound the work (hashing, unpacking) an
 * untrusted package can make the installer do, and keep a package a package, not a dataset.
 */
export interface PackageLimits {
  /** Sum of all file sizes, in bytes. */
  readonly maxTotalBytes: number;
  readonly maxFiles: number;
}

export const DEFAULT_LIMITS: PackageLimits = {
  maxTotalBytes: 64 * 1024 * 1024,
  maxFiles: 10_000,
};

/** Directories never part of a package: version-control metadata is not an artefact. */
export const EXCLUDED_DIRS: ReadonlySet<string> = new Set([".git", ".hg", ".svn"]);
