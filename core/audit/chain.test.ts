import { type ChildProcess, spawn } from "node:child_process";
import { appendFile, readFile, stat, symlink, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AuditChain } from "./chain.js";
import { AuditEntrySchema, GENESIS_HASH, hashArgs, SegmentHeaderSchema } from "./entry.js";
import { AuditCorruptError, AuditInputError, AuditLockedError, AuditWriteError } from "./errors.js";
import { decision, readLines, tempDir, testKeys } from "./test-fixtures.js";
import { verifyChain } from "./verify.js";

const keys = testKeys();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function dir(): Promise<string> {
  const t = await tempDir();
  cleanups.push(t.cleanup);
  return t.dir;
}

function openChain(d: string, extra: Partial<Parameters<typeof AuditChain.open>[1]> = {}) {
  return AuditChain.open(d, { key: keys.privateKey, keyId: "sidecar-1", ...extra });
}

const seg1 = (d: string) => path.join(d, "segment-000001.jsonl");

describe("AuditChain.append", () => {
  it("numbers entries from 0, links them and has them on disk when it resolves", async () => {
    const d = await dir();
    const chain = await openChain(d);
    const r0 = await chain.append(decision(0));
    const r1 = await chain.append(decision(1, { decision: "deny", reason: "outside fs_read" }));
    expect(r0.seq).toBe(0);
    expect(r1.seq).toBe(1);
    // Read before close: resolution means written and fdatasync-ed, not "buffered".
    const lines = await readLines(seg1(d));
    expect(lines.map((l) => JSON.parse(l).type)).toEqual([
      "segment",
      "entry",
      "seal",
      "entry",
      "seal",
    ]);
    const e0 = AuditEntrySchema.parse(JSON.parse(lines[1]!));
    const e1 = AuditEntrySchema.parse(JSON.parse(lines[3]!));
    expect(e0.prev).toBe(GENESIS_HASH);
    expect(e0.hash).toBe(r0.hash);
    expect(e1.prev).toBe(r0.hash);
    expect(e1.decision).toBe("deny");
    expect(e0.argsHash).toBe(hashArgs({ path: "/workspace/file-0.txt", n: 0 }));
    expect(e0.time).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    expect(chain.head).toEqual({ seq: 1, hash: r1.hash });
    await chain.close();
    expect(await verifyChain(d, keys.keyring)).toEqual({
      ok: true,
      entries: 2,
      segments: 1,
      lastHash: r1.hash,
      lastSeq: 1,
    });
  });

  it("group-commits concurrent appends: one seal per batch, not per entry", async () => {
    const d = await dir();
    const chain = await openChain(d, { groupCommit: { maxEntries: 100 } });
    const receipts = await Promise.all(
      Array.from({ length: 1000 }, (_, i) => chain.append(decision(i))),
    );
    expect(receipts.map((r) => r.seq)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    await chain.close();
    const types = (await readLines(seg1(d))).map((l) => JSON.parse(l).type);
    expect(types.filter((t) => t === "entry")).toHaveLength(1000);
    // 1,000 appends in one tick, at most 100 a batch: exactly 10 batches.
    expect(types.filter((t) => t === "seal")).toHaveLength(10);
    expect((await verifyChain(d, keys.keyring)).ok).toBe(true);
  });

  it("batches appends that arrive while a flush is in progress into the next flush", async () => {
    const d = await dir();
    const chain = await openChain(d);
    const first = chain.append(decision(0));
    // The chain's flush starts in this check phase, before this callback: appends made here
    // find a flush in progress.
    await new Promise((r) => setImmediate(r));
    const rest = Array.from({ length: 9 }, (_, i) => chain.append(decision(i + 1)));
    await Promise.all([first, ...rest]);
    await chain.close();
    const records = (await readLines(seg1(d))).map((l) => JSON.parse(l));
    const seals = records.filter((r) => r.type === "seal").map((r) => r.seq);
    expect(seals).toEqual([0, 9]);
  });

  it("signs every entry with the 'entry' strategy and writes no seals", async () => {
    const d = await dir();
    const chain = await openChain(d, { signing: "entry" });
    await Promise.all([0, 1, 2].map((i) => chain.append(decision(i))));
    await chain.close();
    const records = (await readLines(seg1(d))).map((l) => JSON.parse(l));
    expect(records.map((r) => r.type)).toEqual(["segment", "entry", "entry", "entry"]);
    expect(records[1].signature.keyId).toBe("sidecar-1");
    expect((await verifyChain(d, keys.keyring)).ok).toBe(true);
  });

  it("rejects a bad entry with AuditInputError and spends no seq on it", async () => {
    const d = await dir();
    const chain = await openChain(d);
    await expect(chain.append(decision(0, { layer: "kernel" as "gate" }))).rejects.toThrow(
      new AuditInputError(
        'invalid audit entry: layer: Invalid option: expected one of "sandbox"|"gate"|"acl"|"token"|"budget"|"approval"|"lifecycle"',
      ),
    );
    await expect(chain.append(decision(0, { args: { cost: Number.NaN } }))).rejects.toThrow(
      "invalid audit entry: args: canonical JSON cannot encode NaN at $.cost",
    );
    expect((await chain.append(decision(0))).seq).toBe(0);
    await chain.close();
  });

  it("rejects appends after close", async () => {
    const d = await dir();
    const chain = await openChain(d);
    await chain.close();
    await expect(chain.append(decision(0))).rejects.toThrow(
      new AuditWriteError(`audit chain ${d} is closed`),
    );
  });

  it("refuses bad options with what was expected", async () => {
    const d = await dir();
    await expect(openChain(d, { keyId: "has space" })).rejects.toThrow(
      'audit chain: keyId "has space" must be 1-128 characters of [A-Za-z0-9._:-]',
    );
    await expect(openChain(d, { key: keys.publicKey })).rejects.toThrow(
      "audit chain: key must be an ed25519 private KeyObject",
    );
  });
});

describe("AuditChain rotation", () => {
  it("starts a new segment past segmentMaxBytes, its header and first entry linked to the last", async () => {
    const d = await dir();
    const chain = await openChain(d, { segmentMaxBytes: 2048 });
    for (let i = 0; i < 20; i++) await chain.append(decision(i));
    await chain.close();
    const v = await verifyChain(d, keys.keyring);
    expect(v.ok && v.segments).toBeGreaterThanOrEqual(3);
    const first = await readLines(seg1(d));
    const second = await readLines(path.join(d, "segment-000002.jsonl"));
    const lastOfFirst = AuditEntrySchema.parse(JSON.parse(first.at(-2)!));
    const header = SegmentHeaderSchema.parse(JSON.parse(second[0]!));
    expect(header).toMatchObject({
      segment: "segment-000002.jsonl",
      previous: "segment-000001.jsonl",
      previousHash: lastOfFirst.hash,
      firstSeq: lastOfFirst.seq + 1,
    });
    expect(AuditEntrySchema.parse(JSON.parse(second[1]!)).prev).toBe(lastOfFirst.hash);
  });
});

describe("AuditChain resume", () => {
  it("continues seq and prev from the last entry on disk, never forking", async () => {
    const d = await dir();
    const a = await openChain(d, { segmentMaxBytes: 2048 });
    for (let i = 0; i < 12; i++) await a.append(decision(i));
    const head = a.head;
    await a.close();
    const b = await openChain(d, { segmentMaxBytes: 2048 });
    const r = await b.append(decision(12));
    expect(r.seq).toBe(12);
    await b.close();
    const v = await verifyChain(d, keys.keyring);
    expect(v).toMatchObject({ ok: true, entries: 13, lastHash: r.hash });
    const all = await readLines(
      path.join(d, `segment-${String(v.ok ? v.segments : 0).padStart(6, "0")}.jsonl`),
    );
    const e = all.map((l) => JSON.parse(l)).find((x) => x.seq === 12 && x.type === "entry");
    expect(e.prev).toBe(head.hash);
  });

  it("cuts a torn last record, says so in an info entry, and verifies", async () => {
    const d = await dir();
    const a = await openChain(d);
    for (let i = 0; i < 3; i++) await a.append(decision(i));
    await a.close();
    // A crash in the middle of writing the next batch: half a record, no newline.
    await appendFile(seg1(d), '{"type":"entry","seq":3,"time":"2026-');
    const b = await openChain(d);
    expect(b.head.seq).toBe(3);
    await b.close();
    const last = JSON.parse((await readLines(seg1(d))).at(-2)!);
    expect(last).toMatchObject({
      seq: 3,
      layer: "lifecycle",
      action: "audit.recovered",
      decision: "info",
      target: "segment-000001.jsonl",
      reason:
        "truncated 37 bytes of a record cut short at the end of segment-000001.jsonl (a crash during a write); nothing acknowledged was lost: an append resolves only after its whole batch, signature included, was fdatasync-ed",
    });
    expect(await verifyChain(d, keys.keyring)).toMatchObject({ ok: true, entries: 4 });
  });

  it("seals entries whose batch lost its seal in a crash", async () => {
    const d = await dir();
    const a = await openChain(d);
    await Promise.all([0, 1].map((i) => a.append(decision(i))));
    await a.close();
    const text = await readFile(seg1(d), "utf8");
    const cut = text.lastIndexOf('{"type":"seal"');
    await truncate(seg1(d), Buffer.byteLength(text.slice(0, cut + 20)));
    expect((await verifyChain(d, keys.keyring)).ok).toBe(false);
    const b = await openChain(d);
    await b.close();
    const info = JSON.parse((await readLines(seg1(d))).at(-2)!);
    expect(info.reason).toMatch(
      /^truncated 20 bytes of a record cut short at the end of segment-000001\.jsonl \(a crash during a write\); entries seq 0\.\.1 of segment-000001\.jsonl were written but never signed before a crash; the next signature covers them; /,
    );
    expect(await verifyChain(d, keys.keyring)).toMatchObject({ ok: true, entries: 3 });
  });

  it("removes a last segment that a crash left empty and continues from the one before", async () => {
    const d = await dir();
    const a = await openChain(d);
    await a.append(decision(0));
    await a.close();
    await writeFile(path.join(d, "segment-000002.jsonl"), "");
    const b = await openChain(d);
    await b.close();
    const info = JSON.parse((await readLines(seg1(d))).at(-2)!);
    expect(info).toMatchObject({ seq: 1, action: "audit.recovered" });
    expect(info.reason).toMatch(/^removed segment-000002\.jsonl, which held no complete record; /);
    expect(await verifyChain(d, keys.keyring)).toMatchObject({ ok: true, entries: 2, segments: 1 });
  });

  it("refuses to open over a corrupt line before the tail, naming file and line", async () => {
    const d = await dir();
    const a = await openChain(d);
    for (let i = 0; i < 3; i++) await a.append(decision(i));
    await a.close();
    const lines = await readLines(seg1(d));
    lines[3] = lines[3]!.replace('"decision":"allow"', '"decision":"alow"');
    await writeFile(seg1(d), `${lines.join("\n")}\n`);
    const err = await openChain(d).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuditCorruptError);
    expect((err as Error).message).toBe(
      `cannot continue the audit chain in ${d}: segment-000001.jsonl line 4: malformed: not an audit record: decision: Invalid option: expected one of "allow"|"deny"|"info"; refusing to open (continuing would fork the chain or bury the damage) — run verifyChain to locate it`,
    );
    // And it did not leave its lock behind.
    await writeFile(seg1(d), `${lines.join("\n").replace('"alow"', '"allow"')}\n`);
    await (await openChain(d)).close();
  });

  it("refuses an edited entry in the last segment (hash-mismatch)", async () => {
    const d = await dir();
    const a = await openChain(d);
    for (let i = 0; i < 3; i++) await a.append(decision(i));
    await a.close();
    const text = await readFile(seg1(d), "utf8");
    await writeFile(
      seg1(d),
      text.replace('"target":"/workspace/file-1.txt"', '"target":"/etc/shadow"'),
    );
    await expect(openChain(d)).rejects.toThrow(
      /segment-000001\.jsonl line 4: hash-mismatch: content hashes to/,
    );
  });
});

describe("AuditChain exclusive writer", () => {
  it("refuses a second writer in this process", async () => {
    const d = await dir();
    const a = await openChain(d);
    await expect(openChain(d)).rejects.toBeInstanceOf(AuditLockedError);
    await a.close();
  });

  it("keeps out a second process, and takes over after that writer is killed", async () => {
    const d = await dir();
    const script = `
      import { AuditChain } from "./core/audit/chain.ts";
      import { createPrivateKey } from "node:crypto";
      const key = createPrivateKey(process.env.KEY);
      const chain = await AuditChain.open(process.env.DIR, { key, keyId: "sidecar-1" });
      for (let i = 0; i < 5; i++) await chain.append({ session: "s", principal: "p", capsule: "c",
        layer: "acl", action: "ipc.publish", target: "tool.v1.execute.x", decision: "allow", reason: "child" });
      process.stdout.write("ready\\n");
      setInterval(() => {}, 1000);`;
    const child: ChildProcess = spawn(
      process.execPath,
      ["--import", "tsx", "--input-type=module", "-e", script],
      {
        cwd: path.resolve(import.meta.dirname, "../.."),
        env: {
          ...process.env,
          DIR: d,
          KEY: keys.privateKey.export({ format: "pem", type: "pkcs8" }).toString(),
        },
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on("data", (b: Buffer) => b.toString().includes("ready") && resolve());
      child.on("exit", (code) => reject(new Error(`child exited ${code}`)));
    });
    await expect(openChain(d)).rejects.toThrow(
      `is locked by running pid ${child.pid} (${path.join(d, "writer.lock")}); a second writer would fork the chain`,
    );
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    const chain = await openChain(d);
    expect((await chain.append(decision(5))).seq).toBe(5);
    await chain.close();
    expect(await verifyChain(d, keys.keyring)).toMatchObject({ ok: true, entries: 6 });
  });
});

describe("AuditChain fail closed (/dev/full planted as the next segment)", () => {
  it("rejects the batch and every later append when the next segment cannot be created", async () => {
    const d = await dir();
    const chain = await openChain(d, { segmentMaxBytes: 1024 });
    await chain.append(decision(0));
    let n = 1;
    // Fill segment 1 to its limit: the next batch must create segment 2.
    while ((await stat(seg1(d))).size < 1024) await chain.append(decision(n++));
    await symlink("/dev/full", path.join(d, "segment-000002.jsonl"));
    const err = await chain.append(decision(n)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuditWriteError);
    expect((err as Error).message).toMatch(
      /: writing segment-000002\.jsonl failed \(EEXIST: .*\); every append is refused until the chain is reopened$/,
    );
    expect(chain.failure).toBe(err);
    await expect(chain.append(decision(n + 1))).rejects.toBe(err);
    await chain.close();
    // The planted file is not a segment the writer made: the verifier names it.
    const v = await verifyChain(d, keys.keyring);
    expect(v.ok).toBe(false);
    expect(!v.ok && v.error.kind).toBe("malformed");
    expect(!v.ok && v.error.file).toBe("segment-000002.jsonl");
  });
});
