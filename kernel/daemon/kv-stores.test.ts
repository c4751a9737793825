import { existsSync, readdirSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HomeKvStores } from "./kv-stores.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "astrid-kv-stores-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("HomeKvStores", () => {
  it("gives each capsule one store in a folder of its own, the same for every session", async () => {
    const kv = new HomeKvStores(path.join(root, "state", "kv"));
    const cache = await kv.of("cache");
    expect(await kv.of("cache")).toBe(cache);
    const other = await kv.of("other");
    await cache.set("cache.cache", "k", new TextEncoder().encode("v"));
    expect(await other.get("cache.cache", "k")).toBeNull();
    expect(readdirSync(path.join(root, "state", "kv")).sort()).toEqual(["cache", "other"]);
    // Private like the rest of the home: the entries are the user's prompts and answers.
    for (const d of ["state", "state/kv", "state/kv/cache"]) {
      expect(statSync(path.join(root, d)).mode & 0o777, d).toBe(0o700);
    }
    // A new daemon finds what the last one stored.
    const again = await new HomeKvStores(path.join(root, "state", "kv")).of("cache");
    expect(new TextDecoder().decode((await again.get("cache.cache", "k")) ?? undefined)).toBe("v");
  });

  it("refuses a name that is not a capsule name: it would be a path", async () => {
    const kv = new HomeKvStores(path.join(root, "kv"));
    await expect(kv.of("../keys")).rejects.toThrow(
      'kv store: expected a capsule name, got "../keys"',
    );
    expect(existsSync(path.join(root, "keys"))).toBe(false);
  });
});
