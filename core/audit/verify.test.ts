/**
 * Tamper tests on real chain files: each attack edits the files the writer produced and the
 * verifier must name the first entry it can no longer vouch for.
 */
import { generateKeyPairSync } from "node:crypto";
import { readFile, rm, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AuditChain, type SigningStrategy } from "./chain.js";
import { computeEntryHash } from "./entry.js";
import { AuditKeyring, signChainHash } from "./signature.js";
import { decision, readLines, tempDir, testKeys } from "./test-fixtures.js";
import { ChainVerifier, verifyChain, verifyEntries } from "./verify.js";

const keys = testKeys("sidecar-1");
const mallory = generateKeyPairSync("ed25519");
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

type Rec = Record<string, unknown> & { type: string; seq?: number; hash?: string };

/** A closed chain of `n` entries written in batches of 5 (so one seal per 5 entries). */
async function writeChain(n: number, signing: SigningStrategy = "seal", segmentMaxBytes?: number) {
  const t = await tempDir();
  cleanups.push(t.cleanup);
  const chain = await AuditChain.open(t.dir, {
    key: keys.privateKey,
    keyId: "sidecar-1",
    signing,
    segmentMaxBytes,
  });
  for (let i = 0; i < n; i += 5) {
    await Promise.all(
      Array.from({ length: Math.min(5, n - i) }, (_, j) => chain.append(decision(i + j))),
    );
  }
  await chain.close();
  return { dir: t.dir, seg1: path.join(t.dir, "segment-000001.jsonl") };
}

async function records(file: string): Promise<Rec[]> {
  return (await readLines(file)).map((l) => JSON.parse(l) as Rec);
}

async function save(file: string, recs: Rec[]): Promise<void> {
  await writeFile(file, recs.map((r) => `${JSON.stringify(r)}\n`).join(""));
}

/** 1-based line of the entry with this seq. */
function lineOf(recs: Rec[], seq: number): number {
  return recs.findIndex((r) => r.type === "entry" && r.seq === seq) + 1;
}

/** What a careful attacker does after editing entry `seq`: recompute every hash and link after. */
function rechain(recs: Rec[], fromSeq: number): void {
  let prev: string | undefined;
  for (const r of recs) {
    if (r.type !== "entry" || (r.seq as number) < fromSeq) {
      if (r.type === "entry") prev = r.hash as string;
      continue;
    }
    r.prev = prev;
    r.hash = computeEntryHash(r as never);
    prev = r.hash;
  }
}

describe("verifyChain on intact chains", () => {
  it.each(["seal", "entry"] as const)("accepts a %s-signed chain across segments", async (s) => {
    const { dir } = await writeChain(40, s, 4096);
    const v = await verifyChain(dir, keys.keyring);
    expect(v).toMatchObject({ ok: true, entries: 40, lastSeq: 39 });
    expect(v.ok && v.segments).toBeGreaterThan(2);
  });
});

describe("verifyChain per principal", () => {
  it("returns one principal's entries of a verified chain, and none of a broken one", async () => {
    const t = await tempDir();
    cleanups.push(t.cleanup);
    const chain = await AuditChain.open(t.dir, { key: keys.privateKey, keyId: "sidecar-1" });
    for (let i = 0; i < 6; i++) {
      await chain.append(decision(i, { principal: i % 3 === 0 ? "bob" : "alice" }));
    }
    await chain.close();
    const v = await verifyChain(t.dir, keys.keyring, { principal: "bob" });
    expect(v.ok && v.principalEntries?.map((e) => e.seq)).toEqual([0, 3]);
    const seg1 = path.join(t.dir, "segment-000001.jsonl");
    const recs = await records(seg1);
    recs[lineOf(recs, 5) - 1]!.reason = "edited";
    await save(seg1, recs);
    expect(await verifyChain(t.dir, keys.keyring, { principal: "bob" })).toMatchObject({
      ok: false,
      error: { kind: "hash-mismatch", seq: 5 },
    });
  });
});

describe("verifyChain names the first broken entry", () => {
  it("an edited field: hash-mismatch at that entry", async () => {
    const { dir, seg1 } = await writeChain(20);
    const recs = await records(seg1);
    const k = lineOf(recs, 7);
    recs[k - 1]!.decision = "deny";
    await save(seg1, recs);
    const v = await verifyChain(dir, keys.keyring);
    expect(v.ok).toBe(false);
    expect(!v.ok && v.error).toMatchObject({
      kind: "hash-mismatch",
      file: "segment-000001.jsonl",
      line: k,
      seq: 7,
    });
    expect(!v.ok && v.error.message).toMatch(
      new RegExp(
        `^segment-000001\\.jsonl line ${k}: content hashes to [0-9a-f]{64}, but the entry records [0-9a-f]{64}: it was changed after it was written$`,
      ),
    );
  });

  it("a deleted entry: seq-gap naming the missing seq", async () => {
    const { dir, seg1 } = await writeChain(20);
    const recs = await records(seg1);
    const k = lineOf(recs, 7);
    recs.splice(k - 1, 1);
    await save(seg1, recs);
    const v = await verifyChain(dir, keys.keyring);
    expect(!v.ok && v.error).toEqual({
      kind: "seq-gap",
      file: "segment-000001.jsonl",
      line: k,
      seq: 7,
      message: `segment-000001.jsonl line ${k}: found seq 8 where seq 7 was expected: entries 7..7 are missing`,
    });
  });

  it("a deleted entry with the seqs after it renumbered: bad-link", async () => {
    const { dir, seg1 } = await writeChain(20);
    const recs = await records(seg1);
    const k = lineOf(recs, 7);
    recs.splice(k - 1, 1);
    for (const r of recs)
      if (r.type === "entry" && (r.seq as number) > 7) r.seq = (r.seq as number) - 1;
    await save(seg1, recs);
    const v = await verifyChain(dir, keys.keyring);
    expect(!v.ok && v.error).toMatchObject({ kind: "bad-link", line: k, seq: 7 });
  });

  it("two entries swapped: seq-reorder", async () => {
    const { dir, seg1 } = await writeChain(20);
    const recs = await records(seg1);
    const k = lineOf(recs, 7);
    [recs[k - 1], recs[k]] = [recs[k]!, recs[k - 1]!];
    await save(seg1, recs);
    const v = await verifyChain(dir, keys.keyring);
    expect(!v.ok && v.error).toEqual({
      kind: "seq-reorder",
      file: "segment-000001.jsonl",
      line: k,
      seq: 7,
      message: `segment-000001.jsonl line ${k}: found seq 8 where seq 7 was expected; seq 7 appears later, at line ${k + 1}: entries were reordered`,
    });
  });

  it("a file cut in the middle of a line: truncated", async () => {
    const { dir, seg1 } = await writeChain(20);
    const text = await readFile(seg1, "utf8");
    const lines = text.split("\n");
    const cutAt = lines.slice(0, 6).join("\n").length + 1 + 40; // 40 bytes into line 7
    await truncate(seg1, cutAt);
    const v = await verifyChain(dir, keys.keyring);
    expect(!v.ok && v.error).toEqual({
      kind: "truncated",
      file: "segment-000001.jsonl",
      line: 7,
      seq: 5,
      message:
        "segment-000001.jsonl line 7: the file ends in the middle of a record (40 bytes after the last newline)",
    });
  });

  it("a middle segment deleted: missing-segment naming it", async () => {
    const { dir } = await writeChain(40, "seal", 4096);
    await rm(path.join(dir, "segment-000002.jsonl"));
    const v = await verifyChain(dir, keys.keyring);
    expect(!v.ok && v.error).toMatchObject({
      kind: "missing-segment",
      file: "segment-000002.jsonl",
    });
    expect(!v.ok && v.error.message).toMatch(
      /^segment-000002\.jsonl is missing \(found segment-000003\.jsonl next\): the entries from seq \d+ on cannot be vouched for$/,
    );
  });

  it("segments renumbered to hide a deleted one: the header link names it", async () => {
    const { dir } = await writeChain(40, "seal", 4096);
    const p = (n: number) => path.join(dir, `segment-00000${n}.jsonl`);
    await rm(p(2));
    await writeFile(p(2), await readFile(p(3)));
    await rm(p(3));
    const v = await verifyChain(dir, keys.keyring);
    expect(!v.ok && v.error).toMatchObject({
      kind: "bad-link",
      file: "segment-000002.jsonl",
      line: 1,
    });
    expect(!v.ok && v.error.message).toBe(
      "segment-000002.jsonl line 1: header names itself segment-000003.jsonl, expected segment-000002.jsonl",
    );
  });

  it("a directory without segments: missing-segment", async () => {
    const t = await tempDir();
    cleanups.push(t.cleanup);
    expect(await verifyChain(t.dir, keys.keyring)).toEqual({
      ok: false,
      error: {
        kind: "missing-segment",
        file: "segment-000001.jsonl",
        line: 0,
        seq: 0,
        message: `${t.dir} holds no segment files (expected segment-000001.jsonl)`,
      },
    });
  });

  it("a line that is not JSON: malformed", async () => {
    const { dir, seg1 } = await writeChain(5);
    const text = await readFile(seg1, "utf8");
    await writeFile(seg1, text.replace('"type":"entry"', '"type":"entry",,'));
    const v = await verifyChain(dir, keys.keyring);
    expect(!v.ok && v.error).toMatchObject({ kind: "malformed", line: 2, seq: 0 });
  });
});

describe("signatures catch what hashes alone cannot", () => {
  it("seal: an edit with every later hash recomputed passes the links but fails the seal", async () => {
    const { dir, seg1 } = await writeChain(20);
    const recs = await records(seg1);
    recs[lineOf(recs, 7) - 1]!.decision = "deny";
    rechain(recs, 7);
    await save(seg1, recs);
    // Hash-only check (no keyring): the forged chain is internally consistent…
    const hashOnly = new ChainVerifier(null);
    hashOnly.beginSegment("segment-000001.jsonl");
    const linkErrors = (await readLines(seg1))
      .map((l, i) => hashOnly.pushLine(l, i + 1))
      .filter((e) => e !== null && e.kind !== "bad-signature");
    expect(linkErrors).toEqual([]);
    // …but the seal of the batch holding seq 7 (seqs 5..9) signed the old hash.
    const v = await verifyChain(dir, keys.keyring);
    const sealLine = recs.findIndex((r) => r.type === "seal" && r.seq === 9) + 1;
    expect(!v.ok && v.error).toMatchObject({ kind: "bad-signature", line: sealLine, seq: 5 });
    expect(!v.ok && v.error.message).toMatch(
      /an entry of seq 5\.\.9 was changed \(and hashes recomputed\) after it was sealed$/,
    );
  });

  it("seal: the attacker updates the seal's hash too, keeping the old signature", async () => {
    const { dir, seg1 } = await writeChain(10);
    const recs = await records(seg1);
    recs[lineOf(recs, 7) - 1]!.target = "/etc/shadow";
    rechain(recs, 7);
    const seal = recs.find((r) => r.type === "seal" && r.seq === 9)!;
    seal.hash = recs[lineOf(recs, 9) - 1]!.hash;
    await save(seg1, recs);
    const v = await verifyChain(dir, keys.keyring);
    expect(!v.ok && v.error).toMatchObject({ kind: "bad-signature", seq: 5 });
    expect(!v.ok && v.error.message).toMatch(
      /signature by key "sidecar-1" does not verify over hash/,
    );
  });

  it("seal: re-sealed with a foreign key under a new id is unknown-key", async () => {
    const { dir, seg1 } = await writeChain(10);
    const recs = await records(seg1);
    recs[lineOf(recs, 7) - 1]!.target = "/etc/shadow";
    rechain(recs, 7);
    const seal = recs.find((r) => r.type === "seal" && r.seq === 9)!;
    seal.hash = recs[lineOf(recs, 9) - 1]!.hash;
    seal.keyId = "mallory";
    seal.sig = signChainHash(mallory.privateKey, seal.hash as string);
    await save(seg1, recs);
    const v = await verifyChain(dir, keys.keyring);
    expect(!v.ok && v.error).toMatchObject({ kind: "unknown-key", seq: 5 });
    expect(!v.ok && v.error.message).toMatch(/signed by key "mallory", which is not trusted$/);
  });

  it("seal: stripping every seal after rewriting leaves the tail unsigned", async () => {
    const { dir, seg1 } = await writeChain(10);
    const recs = (await records(seg1)).filter((r) => r.type !== "seal");
    recs[lineOf(recs, 7) - 1]!.target = "/etc/shadow";
    rechain(recs, 7);
    await save(seg1, recs);
    const v = await verifyChain(dir, keys.keyring);
    expect(!v.ok && v.error).toEqual({
      kind: "unsigned",
      file: "segment-000001.jsonl",
      line: 2,
      seq: 0,
      message:
        "entries seq 0..9 are not covered by any signature or seal: they could have been appended or rewritten by anyone who can write the files",
    });
  });

  it("entry: re-signed with a foreign key is unknown-key (new id) or bad-signature (our id)", async () => {
    for (const [keyId, kind] of [
      ["mallory", "unknown-key"],
      ["sidecar-1", "bad-signature"],
    ] as const) {
      const { dir, seg1 } = await writeChain(10, "entry");
      const recs = await records(seg1);
      const k = lineOf(recs, 4);
      recs[k - 1]!.decision = "allow";
      recs[k - 1]!.reason = "approved by admin";
      rechain(recs, 4);
      for (const r of recs) {
        if (r.type === "entry" && (r.seq as number) >= 4) {
          r.signature = { keyId, sig: signChainHash(mallory.privateKey, r.hash as string) };
        }
      }
      await save(seg1, recs);
      const v = await verifyChain(dir, keys.keyring);
      expect(!v.ok && v.error).toMatchObject({ kind, line: k, seq: 4 });
    }
  });

  it("a chain signed by a key the verifier does not hold is refused", async () => {
    const { dir } = await writeChain(5);
    const other = new AuditKeyring([["sidecar-1", mallory.publicKey]]);
    const v = await verifyChain(dir, other);
    expect(!v.ok && v.error).toMatchObject({ kind: "bad-signature", seq: 0 });
  });
});

describe("verifyEntries (a stream, e.g. from a remote sidecar)", () => {
  it("verifies records or lines, from the start or from a known position", async () => {
    const { seg1 } = await writeChain(10);
    const lines = await readLines(seg1);
    expect(await verifyEntries(lines, keys.keyring)).toMatchObject({ ok: true, entries: 10 });
    const recs = lines.map((l) => JSON.parse(l) as Rec);
    // Resume after seq 4 (its seal is line 7): the verifier needs seq 5 and entry 4's hash.
    const from = { seq: 5, prevHash: recs[lineOf(recs, 4) - 1]!.hash as string };
    const tail = recs.slice(lineOf(recs, 4) + 1);
    expect(await verifyEntries(tail, keys.keyring, from)).toMatchObject({ ok: true, entries: 5 });
    async function* stream() {
      yield* tail;
    }
    const wrongStart = { seq: 5, prevHash: "f".repeat(64) };
    const v = await verifyEntries(stream(), keys.keyring, wrongStart);
    expect(!v.ok && v.error).toMatchObject({ kind: "bad-link", file: "<stream>", line: 1, seq: 5 });
  });

  it("names a reorder in an array", async () => {
    const { seg1 } = await writeChain(10);
    const recs = await records(seg1);
    const k = lineOf(recs, 2);
    [recs[k - 1], recs[k]] = [recs[k]!, recs[k - 1]!];
    const v = await verifyEntries(recs, keys.keyring);
    expect(!v.ok && v.error).toMatchObject({ kind: "seq-reorder", line: k, seq: 2 });
  });
});
