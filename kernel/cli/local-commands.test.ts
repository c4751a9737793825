import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditChain } from "../../core/audit/index.js";
import { homeLayout, readHomeKey } from "../config/home.js";
import { parseCommand } from "./args.js";
import { DISTRIBUTION_DIR, KERNEL_KEY_ID, runLocal } from "./local-commands.js";

let home: string;
const run = async (...argv: string[]) => {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runLocal(parseCommand(argv), home, {
    out: (l) => out.push(l),
    err: (l) => err.push(l),
  });
  return { code, out, err };
};

beforeAll(() => {
  home = path.join(mkdtempSync(path.join(os.tmpdir(), "astrid-cli-")), ".astrid");
});
afterAll(() => rmSync(path.dirname(home), { recursive: true, force: true }));

describe("local commands", () => {
  it("init creates the home and installs the default distribution", async () => {
    const r = await run("init");
    expect(r.code).toBe(0);
    expect(r.out).toContain(`created ${path.join(home, "keys", "kernel.pem")}`);
    expect(r.out.some((l) => /^installed anthropic@\d+\.\d+\.\d+ sha256:/.test(l))).toBe(true);
    expect(r.out.some((l) => /^installed replay@/.test(l))).toBe(true);
    expect(r.out.at(-1)).toBe(`astrid is ready in ${home}`);
    // A second init changes nothing and does not fail (same bytes, same version).
    expect((await run("init")).code).toBe(0);
  });

  it("lists installed capsules and their start order", async () => {
    const list = await run("capsule", "list");
    // Every capsule of the distribution folder is installed, whatever it holds today.
    const shipped = readdirSync(DISTRIBUTION_DIR)
      .filter((n) => existsSync(path.join(DISTRIBUTION_DIR, n, "Capsule.toml")))
      .sort();
    expect(list.out.map((l) => l.split(/\s+/)[0])).toEqual(shipped);
    const tree = await run("capsule", "tree");
    const order = tree.out[0]!.replace("start order: ", "").split(" → ");
    expect([...order].sort()).toEqual(shipped);
    // Exporters start first: the orchestrator after its provider and its tools.
    for (const dep of ["anthropic", "fs"]) {
      expect(order.indexOf(dep)).toBeLessThan(order.indexOf("react"));
    }
    // With no [bindings], the configured provider (anthropic by default) serves react's model,
    // and react's tool import reaches every tool capsule.
    expect(tree.out).toContain("  react ─ astrid.llm ^1.0 → anthropic@1.0.0");
    expect(tree.out).toContain("  react ─ astrid.tool ^1.0 → fs@1.0.0");
  });

  it("installs and removes a capsule from a folder", async () => {
    const r = await run("capsule", "install", path.resolve("test/fixtures/capsules/wasm-tools"));
    expect(r.out[0]).toMatch(/^installed wasm-tools@0\.1\.0 sha256:[0-9a-f]{64}$/);
    expect((await run("capsule", "remove", "wasm-tools")).out).toEqual([
      "removed wasm-tools@0.1.0",
    ]);
    await expect(run("capsule", "remove", "wasm-tools")).rejects.toThrow(
      "capsule wasm-tools is not installed",
    );
  });

  it("audit verify checks every chain under the sessions and names a broken entry", async () => {
    const layout = homeLayout(home);
    const dir = path.join(layout.sessions, "s1", "audit", "fs");
    const chain = await AuditChain.open(dir, {
      key: await readHomeKey(layout.kernelKey),
      keyId: KERNEL_KEY_ID,
    });
    for (const target of ["/a", "/b", "/c"]) {
      await chain.append({
        session: "s1",
        principal: "user:me",
        capsule: "fs",
        layer: "gate",
        action: "fs.read",
        target,
        decision: "allow",
        reason: "cwd://**",
      });
    }
    await chain.close();
    const ok = await run("audit", "verify");
    expect(ok.code).toBe(0);
    expect(ok.out[0]).toMatch(/^ok {6}.*audit\/fs: 3 entries, 1 segment\(s\), head [0-9a-f]{16}…$/);
    const seg = path.join(dir, "segment-000001.jsonl");
    writeFileSync(
      seg,
      readFileSync(seg, "utf8").replace('"target":"/b"', '"target":"/etc/shadow"'),
    );
    const bad = await run("audit", "verify", dir);
    expect(bad.code).toBe(1);
    expect(bad.out[0]).toMatch(
      /^BROKEN {2}.*: hash-mismatch at .*segment-000001\.jsonl:\d+ \(seq 1\)/,
    );
  });

  it("audit verify says when there is nothing to verify", async () => {
    const r = await run("audit", "verify", path.join(home, "nowhere"));
    expect(r).toMatchObject({
      code: 1,
      err: [`astrid audit verify: ${path.join(home, "nowhere")} does not exist`],
    });
  });
});
