import { describe, expect, it } from "vitest";
import { closestKey } from "./suggest.js";

const CAPS = [
  "fs_read",
  "fs_write",
  "net",
  "net_bind",
  "host_process",
  "ipc_publish",
  "ipc_subscribe",
  "kv",
];

describe("closestKey", () => {
  it.each([
    ["fs_raed", "fs_read"],
    ["fs-read", "fs_read"],
    ["FS_READ", "fs_read"],
    ["nett", "net"],
    ["ipc_publsh", "ipc_publish"],
    ["hostprocess", "host_process"],
  ])("%s → %s", (typo, known) => {
    expect(closestKey(typo, CAPS)).toBe(known);
  });

  it("suggests nothing when nothing is close or two are equally close", () => {
    expect(closestKey("homepage", CAPS)).toBeUndefined();
    expect(closestKey("fs_", CAPS)).toBeUndefined();
    expect(closestKey("ab", ["aa", "bb"])).toBeUndefined();
  });
});
