import { PackageError } from "./errors.js";

/**
 * Refuses any relative path that could mean something else on another system or escape the
 * package root: "..", ".", empty segments, absolute paths, backslashes (a separator on Windows)
 * and control characters (a newline would forge a line of the canonical file list).
 */
export function assertSafeRelativePath(path: string, where: string): void {
  const bad = (why: string): never => {
    throw new PackageError(
      "unsafe-path",
      `${where}: refusing path ${JSON.stringify(path)}: ${why}`,
    );
  };
  if (path.length === 0) bad("empty path");
  if (path.startsWith("/")) bad("absolute path; expected a path relative to the package root");
  if (path.includes("\\")) bad('contains a backslash; expected "/" as the only separator');
  if (/[\u0000-\u001f\u007f]/.test(path)) bad("contains a control character");
  for (const seg of path.split("/")) {
    if (seg === "..") bad('contains ".."; expected a path inside the package');
    if (seg === "." || seg === "") bad('contains an empty or "." segment');
  }
}
