/** The host's `sys.sha256`: lowercase hex SHA-256 of a text's UTF-8 bytes, size-capped. */
import { createHash } from "node:crypto";
import { HOST_LIMITS, HostError } from "./host.js";

export function hostSha256(text: string): string {
  // Length in UTF-16 units bounds the UTF-8 size at 3×; the exact count is only needed near it.
  if (
    text.length * 3 > HOST_LIMITS.maxHashBytes &&
    Buffer.byteLength(text) > HOST_LIMITS.maxHashBytes
  ) {
    throw new HostError(
      "too_large",
      `sha256: the text is larger than ${HOST_LIMITS.maxHashBytes} bytes`,
    );
  }
  return createHash("sha256").update(text, "utf8").digest("hex");
}
