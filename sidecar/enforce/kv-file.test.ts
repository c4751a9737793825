/**
 * The file-backed kv store on real files: entries outlive the store object, a name can never
 * reach outside its scope's folder whatever the key holds, writes are whole or absent, the
 * bounds hold, and a broken or tampered entry is an error, never a miss.
 */
import { existsSync, mkdirSync, readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { HOST_LIMITS, HostError } from "../abi/host.js";
import { FileKvStore, keyOfKvFileName, kvFileName, MAX_NAME_CHARS } from "./kv-file.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));

let root: string;
beforeEach(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "astrid-kv-file-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

async function errorOf(p: Promise<unknown>): Promise<HostError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(HostError);
  return e as HostError;
}

/** Every file under dir, relative, sorted. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => path.relative(dir, path.join(d.parentPath, d.name)))
    .sort();
}

describe("FileKvStore", () => {
  it("gets, sets, lists and deletes, and a new store on the folder sees the same entries", async () => {
    const dir = path.join(root, "cache");
    const a = await FileKvStore.open({ dir });
    await a.set("cache.cache", "e.1", enc("one"));
    await a.set("cache.cache", "e.2", enc("two"));
    await a.set("cache.cache", "index", enc("[]"));
    await a.set("cache.cache", "e.1", enc("uno"));
    expect(dec(await a.get("cache.cache", "e.1"))).toBe("uno");
    expect(await a.list("cache.cache", "e.")).toEqual(["e.1", "e.2"]);
    expect(await a.get("cache.cache", "never-written")).toBeNull();
    expect(await a.get("other.scope", "e.1")).toBeNull();
    expect(await a.list("other.scope", "")).toEqual([]);

    const b = await FileKvStore.open({ dir });
    expect(dec(await b.get("cache.cache", "e.2"))).toBe("two");
    expect(await b.list("cache.cache", "")).toEqual(["e.1", "e.2", "index"]);
    expect(b.usage()).toEqual(a.usage());
    await b.delete("cache.cache", "e.2");
    await b.delete("cache.cache", "never-written");
    expect(await a.get("cache.cache", "e.2")).toBeNull();
    expect(await b.list("cache.cache", "e.")).toEqual(["e.1"]);
  });

  it("keeps every key inside its scope's folder: slashes, dots, case, wildcards and non-ASCII", async () => {
    const dir = path.join(root, "one");
    const kv = await FileKvStore.open({ dir });
    const keys = ["../escape", "/etc/passwd", ".", "..", "a/b", "A", "a", "=41", "naïve ✓", "*"];
    for (const k of keys) await kv.set("one.cache", k, enc(`one:${k}`));
    await kv.set("one.cache.x", "y", enc("a scope that extends another's name"));
    await kv.set("two.cache", "a", enc("two"));
    for (const k of keys) expect(dec(await kv.get("one.cache", k))).toBe(`one:${k}`);
    expect(await kv.list("one.cache", "")).toEqual([...keys].sort());
    expect(await kv.list("one.cache", "a")).toEqual(["a", "a/b"]);
    expect(await kv.list("two.cache", "")).toEqual(["a"]);
    expect(await kv.list("one.cache.x", "")).toEqual(["y"]);
    // Three folders, one file per entry, nothing written outside the store's folder.
    expect(readdirSync(dir).sort()).toEqual(["one=2Ecache", "one=2Ecache=2Ex", "two=2Ecache"]);
    expect(filesUnder(dir)).toHaveLength(keys.length + 2);
    expect(readdirSync(root)).toEqual(["one"]);
    // A and a are two files even where the disk ignores case.
    expect(kvFileName("A")).toBe("=41");
    expect(kvFileName("a")).toBe("a");
  });

  it("keeps two capsules' stores apart: one folder each, the same scope and key in both", async () => {
    const cache = await FileKvStore.open({ dir: path.join(root, "cache") });
    const other = await FileKvStore.open({ dir: path.join(root, "other") });
    await cache.set("cache.cache", "k", enc("cache's"));
    expect(await other.get("cache.cache", "k")).toBeNull();
    expect(await other.list("cache.cache", "")).toEqual([]);
    await other.set("cache.cache", "k", enc("other's"));
    expect(dec(await cache.get("cache.cache", "k"))).toBe("cache's");
  });

  it("escapes every string to one file name and back; names differ even ignoring case", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 }),
        fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 }),
        (s, t) => {
          const n = kvFileName(s);
          expect(n).toMatch(/^([a-z0-9_-]|=[0-9A-F]{2})+$/);
          expect(keyOfKvFileName(n)).toBe(s);
          if (s !== t) expect(n.toLowerCase()).not.toBe(kvFileName(t).toLowerCase());
        },
      ),
    );
    expect(kvFileName("a.b/../ü")).toBe("a=2Eb=2F=2E=2E=2F=C3=BC");
  });

  it("stores a key too long for a file name under its hash, and still lists and reads it", async () => {
    const kv = await FileKvStore.open({ dir: root });
    const long = "✓".repeat(512);
    expect(kvFileName(long)).toMatch(/^#[0-9a-f]{64}$/);
    expect(kvFileName("x".repeat(MAX_NAME_CHARS))).toBe("x".repeat(MAX_NAME_CHARS));
    expect(keyOfKvFileName(kvFileName(long))).toBeUndefined();
    await kv.set("c.cache", long, enc("long"));
    await kv.set("c.cache", "short", enc("short"));
    expect(dec(await kv.get("c.cache", long))).toBe("long");
    expect(await kv.list("c.cache", "✓")).toEqual([long]);
    expect(await kv.list("c.cache", "")).toEqual([long, "short"].sort());
    await kv.delete("c.cache", long);
    expect(await kv.list("c.cache", "")).toEqual(["short"]);
  });

  it("refuses a value over the host's limit, and empty scopes and keys, with the reason", async () => {
    const kv = await FileKvStore.open({ dir: root });
    expect(kv.maxValueBytes).toBe(HOST_LIMITS.maxKvValueBytes);
    const big = await errorOf(kv.set("c.cache", "k", new Uint8Array(kv.maxValueBytes + 1)));
    expect(big.code).toBe("too_large");
    expect(big.message).toBe(`kv set: values are at most 1048576 bytes, got 1048577`);
    await kv.set("c.cache", "k", new Uint8Array(kv.maxValueBytes));
    expect((await kv.get("c.cache", "k"))?.byteLength).toBe(kv.maxValueBytes);
    expect((await errorOf(kv.get("c.cache", ""))).message).toBe("kv: expected a non-empty key");
    expect((await errorOf(kv.set("", "k", enc("v")))).message).toBe(
      "kv: expected a non-empty scope",
    );
  });

  it("bounds the store's keys and bytes; overwriting and deleting give room back", async () => {
    // Each entry here: 4 bytes of header, 1 of key, 10 of value.
    const kv = await FileKvStore.open({ dir: root, maxKeys: 3, maxBytes: 45 });
    const ten = enc("0123456789");
    for (const k of ["a", "b", "c"]) await kv.set("c.cache", k, ten);
    await kv.set("c.cache", "a", ten);
    expect(kv.usage()).toEqual({ bytes: 45, keys: 3 });
    const keys = await errorOf(kv.set("c.cache", "d", enc("x")));
    expect(keys.code).toBe("too_large");
    expect(keys.message).toBe("kv set: the store holds its limit of 3 keys; delete some first");
    const bytes = await errorOf(kv.set("c.cache", "a", enc("0123456789!")));
    expect(bytes.message).toBe(
      "kv set: 16 bytes would take the store past its limit of 45 bytes (45 in use)",
    );
    expect(dec(await kv.get("c.cache", "a"))).toBe("0123456789");
    await kv.delete("c.cache", "c");
    await kv.set("c.cache", "a", enc("0123456789!"));
    expect(kv.usage()).toEqual({ bytes: 31, keys: 2 });
    // The bound counts what a new store object finds on disk.
    const again = await FileKvStore.open({ dir: root, maxKeys: 2 });
    expect(again.usage()).toEqual({ bytes: 31, keys: 2 });
    expect((await errorOf(again.set("c.cache", "z", ten))).code).toBe("too_large");
  });

  it("is atomic: concurrent writers and readers of one key only ever see a whole value", async () => {
    const kv = await FileKvStore.open({ dir: root });
    const values = ["a", "b", "c", "d"].map((c) => c.repeat(256 * 1024));
    await kv.set("c.cache", "k", enc(values[0]!));
    const seen: (string | null)[] = [];
    const readers = Array.from({ length: 40 }, async () => {
      seen.push(dec(await kv.get("c.cache", "k")));
    });
    const writers = values.map((v) => kv.set("c.cache", "k", enc(v)));
    await Promise.all([...readers, ...writers]);
    for (const s of seen) expect(values).toContain(s);
    expect(values).toContain(dec(await kv.get("c.cache", "k")));
    expect(kv.usage()).toEqual({ bytes: 4 + 1 + 256 * 1024, keys: 1 });
    // Only the entry is left: no temporary file stays behind.
    expect(filesUnder(root)).toEqual(["c=2Ecache/k"]);
  });

  it("removes a write cut off mid-way when it opens, and never lists it", async () => {
    const kv = await FileKvStore.open({ dir: root });
    await kv.set("c.cache", "k", enc("v"));
    const tmp = path.join(root, "c=2Ecache", ".tmp-0123456789abcdef");
    writeFileSync(tmp, "half a val");
    expect(await kv.list("c.cache", "")).toEqual(["k"]);
    const again = await FileKvStore.open({ dir: root });
    expect(existsSync(tmp)).toBe(false);
    expect(again.usage()).toEqual({ bytes: 4 + 1 + 1, keys: 1 });
  });

  it("fails closed: a tampered, linked or unreadable entry is an error, not a miss", async () => {
    const kv = await FileKvStore.open({ dir: root });
    await kv.set("c.cache", "k", enc("v"));
    const scopeDir = path.join(root, "c=2Ecache");

    writeFileSync(path.join(scopeDir, "k"), "\u0000\u0000\u0001\u0000short");
    const corrupt = await errorOf(kv.get("c.cache", "k"));
    expect(corrupt.code).toBe("io");
    expect(corrupt.message).toBe(
      `kv read: ${path.join(scopeDir, "k")} is not a kv entry (expected a key header); delete the key to clear it`,
    );
    await kv.delete("c.cache", "k");
    expect(await kv.get("c.cache", "k")).toBeNull();

    // Another key's entry copied under this key's name.
    await kv.set("c.cache", "x", enc("x's"));
    writeFileSync(path.join(scopeDir, "y"), "\u0000\u0000\u0000\u0001xx's");
    expect((await errorOf(kv.get("c.cache", "y"))).message).toBe(
      `kv get: ${path.join(scopeDir, "y")} holds another key than the one asked for; delete the key to clear it`,
    );

    // A link planted where an entry belongs is not followed.
    const outside = path.join(root, "outside");
    writeFileSync(outside, "\u0000\u0000\u0000\u0001zsecret");
    symlinkSync(outside, path.join(scopeDir, "z"));
    const linked = await errorOf(kv.get("c.cache", "z"));
    expect(linked.code).toBe("io");
    expect(linked.message).toMatch(/^kv read: store .* failed: ELOOP/);

    mkdirSync(path.join(scopeDir, "d"));
    expect((await errorOf(kv.get("c.cache", "d"))).code).toBe("io");
    // A scope whose folder cannot be made: the write fails, and nothing is counted.
    writeFileSync(path.join(root, "f=2Ecache"), "a file where a folder belongs");
    const set = await errorOf(kv.set("f.cache", "k", enc("v")));
    expect(set.code).toBe("io");
    expect(set.message).toMatch(/^kv set: store .* failed: EEXIST/);
  });
});
