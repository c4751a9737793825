/**
 * Reads one file of an installed package, refusing anything that leaves it. The manifest parser
 * already refuses absolute paths and "..", but a symlink inside the package can still point at
 * /etc/shadow or the sidecar's key; so the path is resolved with realpath and must stay under
 * the package's own realpath (defence in depth), the final open refuses a symlink swapped in
 * since (O_NOFOLLOW), and only a regular file is read (a FIFO would block the sidecar forever).
 */
import { constants } from "node:fs";
import { open, realpath } from "node:fs/promises";
import path from "node:path";
import { StaticEngineError } from "./errors.js";

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** `what` names the file in messages, e.g. `prompt "review"` or `context file "docs/a.md"`. */
export async function readPackageText(
  packageRoot: string,
  relPath: string,
  maxBytes: number,
  what: string,
): Promise<string> {
  const root = await realpath(packageRoot);
  let real: string;
  try {
    real = await realpath(path.resolve(root, relPath));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new StaticEngineError(
      "not_found",
      `${what}: ${JSON.stringify(relPath)} is not in the package (${code ?? String(e)})`,
    );
  }
  if (!real.startsWith(root + path.sep)) {
    throw new StaticEngineError(
      "denied",
      `${what}: ${JSON.stringify(relPath)} resolves to ${JSON.stringify(real)}, outside the package; expected a file inside ${JSON.stringify(root)}`,
    );
  }
  const handle = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    const stat = await handle.stat();
    if (!stat.isFile()) {
      throw new StaticEngineError(
        "invalid",
        `${what}: ${JSON.stringify(relPath)} is not a regular file`,
      );
    }
    if (stat.size > maxBytes) {
      throw new StaticEngineError(
        "too_large",
        `${what}: ${JSON.stringify(relPath)} has ${stat.size} bytes; the limit is ${maxBytes} bytes`,
      );
    }
    // Read at most one byte past the cap: a file that grew since stat is still refused.
    const buf = Buffer.alloc(Math.min(stat.size, maxBytes) + 1);
    const { bytesRead } = await handle.read(buf, 0, buf.length, 0);
    if (bytesRead > maxBytes) {
      throw new StaticEngineError(
        "too_large",
        `${what}: ${JSON.stringify(relPath)} has more than ${maxBytes} bytes`,
      );
    }
    try {
      return utf8.decode(buf.subarray(0, bytesRead));
    } catch {
      throw new StaticEngineError(
        "invalid",
        `${what}: ${JSON.stringify(relPath)} is not UTF-8 text`,
      );
    }
  } finally {
    await handle.close();
  }
}
