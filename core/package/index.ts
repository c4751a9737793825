export { packArchive, unpackArchive } from "./archive.js";
export {
  canonicalList,
  digestPackage,
  listPackageFiles,
  type PackageDigest,
  type PackageFile,
} from "./digest.js";
export { PackageError, type PackageErrorCode } from "./errors.js";
export {
  type InstalledPackage,
  type InstallOptions,
  installPackage,
  uninstallPackage,
  verifyInstalled,
} from "./install.js";
export { DEFAULT_LIMITS, type PackageLimits } from "./limits.js";
