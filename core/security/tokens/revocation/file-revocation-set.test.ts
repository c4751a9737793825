import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { generateIssuerKey, TrustedKeys } from "../keys.js";
import { mintToken } from "../mint.js";
import { TokenVerifier } from "../verifier.js";
import { FileRevocationSet } from "./file-revocation-set.js";

let dir: string;
const open: FileRevocationSet[] = [];
const openSet = async (file: string, opts = {}) => {
  const s = await FileRevocationSet.open(file, { pollMs: 20, ...opts });
  open.push(s);
  return s;
};

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`gave up waiting for ${what}`);
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "astrid-revoke-"));
});
afterEach(async () => {
  await Promise.all(open.splice(0).map((s) => s.close()));
  rmSync(dir, { recursive: true, force: true });
});

describe("FileRevocationSet", () => {
  it("sees a revocation written by another instance, live", async () => {
    const file = path.join(dir, "revoked.jsonl");
    const a = await openSet(file);
    const b = await openSet(file);
    const seen: string[] = [];
    b.onChange((jti) => seen.push(jti));
    await a.revoke("jti-1", 2_000_000_000);
    expect(a.has("jti-1")).toBe(true);
    await until(() => b.has("jti-1"), "b to see jti-1");
    expect(seen).toEqual(["jti-1"]);
  });

  it("loads what is already in the file and holds back a partial last line", async () => {
    const file = path.join(dir, "revoked.jsonl");
    writeFileSync(file, '{"jti":"old","exp":2000000000}\n{"jti":"half","ex');
    const s = await openSet(file);
    expect(s.has("old")).toBe(true);
    expect(s.has("half")).toBe(false);
    appendFileSync(file, 'p":2000000000}\n');
    await until(() => s.has("half"), "the rest of the line");
  });

  it("skips a torn record and still reads the revocation written after it", async () => {
    const file = path.join(dir, "revoked.jsonl");
    writeFileSync(file, '{"jti":"torn","e');
    const s = await openSet(file);
    await s.revoke("after", 2_000_000_000);
    await s.refresh();
    const fresh = await openSet(file);
    expect(fresh.has("after")).toBe(true);
    expect(fresh.has("torn")).toBe(false);
  });

  it("marks a single-use token used exactly once, across instances", async () => {
    const file = path.join(dir, "revoked.jsonl");
    const a = await openSet(file);
    const b = await openSet(file);
    const results = await Promise.all([
      a.markUsed("once-1", 2_000_000_000),
      b.markUsed("once-1", 2_000_000_000),
    ]);
    expect(results.sort()).toEqual([false, true]);
  });

  it("compacts away expired entries and keeps live ones", async () => {
    const file = path.join(dir, "revoked.jsonl");
    const s = await openSet(file);
    await s.revoke("expired", 1_000);
    await s.revoke("live", 2_000_000_000);
    await s.markUsed("used-expired", 1_000);
    await s.compact(1_000_000);
    expect(readFileSync(file, "utf8")).toBe('{"jti":"live","exp":2000000000}\n');
    expect(s.has("live")).toBe(true);
    expect(s.has("expired")).toBe(false);
    expect(await s.markUsed("used-expired", 1_000)).toBe(true);
  });

  it("fails closed once the file has been unreadable past the grace period", async () => {
    const sub = path.join(dir, "sub");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(sub);
    const s = await openSet(path.join(sub, "revoked.jsonl"), { graceMs: 0 });
    expect(s.unavailable()).toBeUndefined();
    rmSync(sub, { recursive: true });
    await until(() => s.unavailable() !== undefined, "the set to notice the deletion");
    expect(s.unavailable()).toMatch(
      /^revocation list unavailable: cannot read .*\/sub\/revoked\.jsonl \(ENOENT\) since \d{4}-/,
    );
  });

  it("makes a cached verifier deny every token once its directory is gone", async () => {
    const sub = path.join(dir, "sub");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(sub);
    const s = await openSet(path.join(sub, "revoked.jsonl"), { graceMs: 0 });
    const issuer = generateIssuerKey();
    const v = new TokenVerifier({ keys: new TrustedKeys([issuer.publicKey]), revocations: s });
    const token = mintToken(
      {
        sub: "alice",
        res: ["fs:/work/**"],
        perm: ["read"],
        exp: Math.floor(Date.now() / 1000) + 600,
      },
      issuer,
    );
    const req = { principal: "alice", resource: "fs:/work/a", permission: "read" } as const;
    expect((await v.verify(token, req)).allowed).toBe(true);
    rmSync(sub, { recursive: true });
    await until(() => s.unavailable() !== undefined, "the set to notice the deletion");
    expect(await v.verify(token, req)).toMatchObject({
      allowed: false,
      reason: expect.stringMatching(/^revocation list unavailable: cannot read /),
    });
  });

  it("tolerates an outage shorter than the grace period", async () => {
    let now = 0;
    const sub = path.join(dir, "sub");
    const { mkdirSync } = await import("node:fs");
    mkdirSync(sub);
    const s = await openSet(path.join(sub, "revoked.jsonl"), { graceMs: 5000, clock: () => now });
    rmSync(sub, { recursive: true });
    await s.refresh();
    expect(s.unavailable()).toBeUndefined();
    now = 5000;
    expect(s.unavailable()).toMatch(/^revocation list unavailable: cannot read/);
  });

  it("refuses to open a list in a directory that does not exist", async () => {
    await expect(FileRevocationSet.open(path.join(dir, "nope", "r.jsonl"))).rejects.toThrow(
      "ENOENT",
    );
  });
});
