import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { HOST_LIMITS } from "./host.js";
import { hostSha256 } from "./sha256.js";

describe("sys.sha256", () => {
  it("is the lowercase hex SHA-256 of the text's UTF-8 bytes", () => {
    for (const t of ["", "abc", "ünïcødé ✓ 🚀"]) {
      expect(hostSha256(t)).toBe(createHash("sha256").update(Buffer.from(t, "utf8")).digest("hex"));
    }
    expect(hostSha256("abc")).toBe(
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    );
  });

  it("refuses a text over the host's limit with too_large", () => {
    const big = "é".repeat(HOST_LIMITS.maxHashBytes / 2 + 1); // 2 UTF-8 bytes each
    expect(() => hostSha256(big)).toThrow(
      expect.objectContaining({
        code: "too_large",
        message: `sha256: the text is larger than ${HOST_LIMITS.maxHashBytes} bytes`,
      }),
    );
  });
});
