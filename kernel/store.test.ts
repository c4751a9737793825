import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CapsuleStore } from "./store.js";

const FIX = path.resolve("test/fixtures");
let root: string;
let store: CapsuleStore;

beforeEach(() => {
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-store-"));
  store = new CapsuleStore(path.join(root, "capsules"));
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

describe("CapsuleStore", () => {
  it("installs packages, lists them and resolves their start order", async () => {
    const a = await store.install(path.join(FIX, "capsules/wasm-tools"), path.join(root, "build"));
    await store.install(path.join(FIX, "capsules/echo-orchestrator"), path.join(root, "build"));
    expect(a).toMatchObject({ name: "wasm-tools", version: "0.1.0" });
    expect(a.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect((await store.list()).map((e) => `${e.name}@${e.version}`)).toEqual([
      "echo-orchestrator@0.1.0",
      "wasm-tools@0.1.0",
    ]);
    const plan = await store.tree();
    expect(plan.order).toEqual(["wasm-tools", "echo-orchestrator"]);
    expect(plan.bindings).toMatchObject([
      { importer: "echo-orchestrator", interface: "astrid.llm", exporter: "wasm-tools" },
    ]);
  });

  it("is idempotent for the same bytes and refuses other bytes under the same version", async () => {
    const src = path.join(FIX, "capsules/wasm-tools");
    await store.install(src, path.join(root, "build"));
    await store.install(src, path.join(root, "build"));
    const changed = path.join(root, "changed");
    cpSync(src, changed, { recursive: true });
    writeFileSync(path.join(changed, "main.js"), "export function x() {}\n");
    await expect(store.install(changed, path.join(root, "build"))).rejects.toThrow(
      /^wasm-tools@0\.1\.0 is already installed with sha256:[0-9a-f]{64}; refusing a different package sha256:[0-9a-f]{64} under the same version \(bump the version\)$/,
    );
  });

  it("builds a source folder before installing it", async () => {
    const e = await store.install(path.join(FIX, "build/quickjs-ts"), path.join(root, "build"));
    expect(e.manifest.engine.type).toBe("wasm");
    expect((await store.list()).length).toBe(1);
  });

  it("removes a capsule and says so when it is not installed", async () => {
    await store.install(path.join(FIX, "capsules/wasm-tools"), path.join(root, "build"));
    expect(await store.remove("wasm-tools")).toEqual(["wasm-tools@0.1.0"]);
    expect(await store.list()).toEqual([]);
    await expect(store.remove("wasm-tools")).rejects.toThrow("capsule wasm-tools is not installed");
  });

  it("refuses to load a package whose files changed after install", async () => {
    const e = await store.install(path.join(FIX, "capsules/wasm-tools"), path.join(root, "build"));
    const { chmodSync } = await import("node:fs");
    chmodSync(path.join(e.dir, "main.js"), 0o644);
    writeFileSync(path.join(e.dir, "main.js"), "tampered");
    await expect(store.load("wasm-tools", "0.1.0")).rejects.toThrow();
  });

  it("gives the newest version of the named capsules, and loads only those", async () => {
    await store.install(path.join(FIX, "capsules/wasm-tools"), path.join(root, "build"));
    const orchestrator = await store.install(
      path.join(FIX, "capsules/echo-orchestrator"),
      path.join(root, "build"),
    );
    // A newer version beside the old one: the session must run the newer.
    const v2 = path.join(root, "wasm-tools-0.2.0");
    cpSync(path.join(FIX, "capsules/wasm-tools"), v2, { recursive: true });
    const toml = path.join(v2, "Capsule.toml");
    const { readFileSync, chmodSync } = await import("node:fs");
    writeFileSync(
      toml,
      readFileSync(toml, "utf8").replace('version = "0.1.0"', 'version = "0.2.0"'),
    );
    const newer = await store.install(v2, path.join(root, "build"));
    expect(newer.version).toBe("0.2.0");

    expect(await store.newest()).toEqual([
      { name: "echo-orchestrator", version: "0.1.0", digest: orchestrator.digest },
      { name: "wasm-tools", version: "0.2.0", digest: newer.digest },
    ]);
    expect((await store.latest(["wasm-tools"])).map((e) => `${e.name}@${e.version}`)).toEqual([
      "wasm-tools@0.2.0",
    ]);
    // A tampered package that the session does not run is not read; one it runs is refused.
    chmodSync(path.join(orchestrator.dir, "main.js"), 0o644);
    writeFileSync(path.join(orchestrator.dir, "main.js"), "tampered");
    expect(await store.latest(["wasm-tools"])).toHaveLength(1);
    await expect(store.latest(["echo-orchestrator"])).rejects.toThrow();
  });
});
