import * as fs from "node:fs";
import { describe, expect, it } from "vitest";
import { RecordingHost } from "../../../test/fixtures/wasm/recording-host.js";
import { HostError } from "../../abi/host.js";
import { callHostOp, callSyncHostOp, HOST_OP_NAMES, HOST_OP_OF_METHOD } from "./host-ops.js";

const wit = fs.readFileSync(new URL("../../abi/host.wit", import.meta.url), "utf8");

/** Function names declared in each `interface name { ... }` block of the WIT file. */
function witFunctions(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  for (const m of wit.matchAll(/^interface ([a-z-]+) \{([\s\S]*?)^\}/gm)) {
    const fns = new Set<string>();
    for (const f of m[2]!.matchAll(/^\s+%?([a-z][a-z0-9-]*): func\(/gm)) fns.add(f[1]!);
    out.set(m[1]!, fns);
  }
  return out;
}

const kebab = (s: string) => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

describe("host ABI: host.ts, host.wit and the op table agree", () => {
  const fns = witFunctions();

  it("declares the package, the seven interfaces and the capsule world", () => {
    expect(wit).toContain("package astrid:host@0.1.0;");
    expect([...fns.keys()].filter((k) => k !== "types").sort()).toEqual([
      "approval",
      "fs",
      "ipc",
      "kv",
      "net",
      "process",
      "sys",
    ]);
    expect(wit).toMatch(
      /world capsule \{[\s\S]*import sys;[\s\S]*import approval;[\s\S]*export handle: func\(function: string, input: string\) -> result<string, error>;/,
    );
  });

  it("has a WIT function for every HostApi method, kebab-cased", () => {
    for (const [method, op] of Object.entries(HOST_OP_OF_METHOD)) {
      const [iface, fn] = op.split(".") as [string, string];
      expect(fns.get(iface)?.has(fn), `${method} → ${op}`).toBe(true);
      // The method name is the interface's prefix (if any) plus the function, kebab-cased.
      expect([fn, `${iface}-${fn}`]).toContain(kebab(method));
    }
  });

  it("has an op for every WIT function and no other", () => {
    const fromWit = [...fns.entries()].flatMap(([iface, set]) =>
      [...set].map((fn) => `${iface}.${fn}`),
    );
    expect([...HOST_OP_NAMES].sort()).toEqual(fromWit.sort());
  });
});

describe("callHostOp", () => {
  it("calls the matching HostApi method with validated arguments", async () => {
    const host = new RecordingHost({ "/f": "hi" });
    expect(await callHostOp(host, "fs.read", { path: "/f" })).toEqual(
      new TextEncoder().encode("hi"),
    );
    expect(host.calls).toEqual([{ method: "fsRead", args: ["/f"] }]);
  });

  it("refuses an unknown op and bad arguments with HostError invalid", async () => {
    const host = new RecordingHost();
    await expect(callHostOp(host, "fs.unlink", {})).rejects.toEqual(
      new HostError("invalid", 'unknown host operation "fs.unlink"'),
    );
    await expect(callHostOp(host, "__proto__", {})).rejects.toThrow(
      'unknown host operation "__proto__"',
    );
    await expect(callHostOp(host, "fs.write", { path: "/x", data: "text" })).rejects.toThrow(
      "data: Invalid input: expected Uint8Array, received string",
    );
    expect(host.calls).toEqual([]);
  });

  it("passes HostError through and hides other host failures behind io", async () => {
    const host = new RecordingHost();
    await expect(callHostOp(host, "fs.read", { path: "/secret/x" })).rejects.toEqual(
      new HostError("denied", "read of /secret/x is not allowed"),
    );
    host.fsStat = async () => {
      throw new Error("EACCES /internal/path");
    };
    await expect(callHostOp(host, "fs.stat", { path: "/x" })).rejects.toEqual(
      new HostError("io", "fs.stat failed in the host"),
    );
  });

  it("runs only the synchronous ops synchronously", () => {
    const host = new RecordingHost();
    expect(callSyncHostOp(host, "sys.clock-now", {})).toBe(1_700_000_000_000);
    expect(() => callSyncHostOp(host, "fs.read", { path: "/x" })).toThrow(
      "fs.read is not a synchronous host operation",
    );
  });
});
