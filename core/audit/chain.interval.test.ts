/**
 * sync "interval": an append is acknowledged once written, sealed and fdatasync-ed later. These
 * tests hold it to what it promises: the chain on disk is never forked or silently unsigned, a
 * crash loses at most the unsealed tail and resume repairs it, a failed write still denies.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readdir, readFile, stat, symlink, truncate, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { AuditChain, type AuditChainOptions } from "./chain.js";
import { AuditWriteError } from "./errors.js";
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

/** A minute: long enough that only flushToDisk/close seal, unless a test wants the timer. */
const NEVER_MS = 60_000;

function openChain(d: string, extra: Partial<AuditChainOptions> = {}) {
  return AuditChain.open(d, {
    key: keys.privateKey,
    keyId: "sidecar-1",
    sync: "interval",
    syncIntervalMs: NEVER_MS,
    ...extra,
  });
}

const seg = (d: string, n = 1) => path.join(d, `segment-${String(n).padStart(6, "0")}.jsonl`);
const types = async (file: string) => (await readLines(file)).map((l) => JSON.parse(l).type);

/** Waits for a condition the chain reaches on its own (its timer); no time is asserted. */
async function until(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 2));
}

describe('AuditChain sync "interval"', () => {
  it("acknowledges once written: the entry is in the file, not yet sealed or counted durable", async () => {
    const d = await dir();
    const chain = await openChain(d);
    // The first append creates the segment, which is always written durably (see rotation).
    const r0 = await chain.append(decision(0));
    const r1 = await chain.append(decision(1));
    const r2 = await chain.append(decision(2));
    expect(await types(seg(d))).toEqual(["segment", "entry", "seal", "entry", "entry"]);
    expect(chain.head).toEqual({ seq: 0, hash: r0.hash });
    // Verification stays strict: an unsealed tail is not evidence yet.
    expect(await verifyChain(d, keys.keyring)).toEqual({
      ok: false,
      error: {
        kind: "unsigned",
        file: "segment-000001.jsonl",
        line: 4,
        seq: 1,
        message:
          "entries seq 1..2 are not covered by any signature or seal: they could have been appended or rewritten by anyone who can write the files",
      },
    });
    await chain.flushToDisk();
    expect(await types(seg(d))).toEqual(["segment", "entry", "seal", "entry", "entry", "seal"]);
    expect(chain.head).toEqual({ seq: 2, hash: r2.hash });
    expect(await verifyChain(d, keys.keyring)).toEqual({
      ok: true,
      entries: 3,
      segments: 1,
      lastHash: r2.hash,
      lastSeq: 2,
    });
    expect(r1.seq).toBe(1);
    await chain.close();
  });

  it("seals and syncs by itself within the interval, one seal for all written since the last", async () => {
    const d = await dir();
    const chain = await openChain(d, { syncIntervalMs: 5 });
    await chain.append(decision(0));
    const receipts = await Promise.all([1, 2, 3].map((i) => chain.append(decision(i))));
    await until(() => chain.head.seq === 3);
    expect(await types(seg(d))).toEqual([
      "segment",
      "entry",
      "seal",
      "entry",
      "entry",
      "entry",
      "seal",
    ]);
    expect(await verifyChain(d, keys.keyring)).toMatchObject({
      ok: true,
      entries: 4,
      lastHash: receipts[2]!.hash,
    });
    await chain.close();
  });

  it("close seals and syncs everything written, without waiting for the interval", async () => {
    const d = await dir();
    const chain = await openChain(d);
    for (let i = 0; i < 3; i++) await chain.append(decision(i));
    await chain.close();
    expect(await types(seg(d))).toEqual(["segment", "entry", "seal", "entry", "entry", "seal"]);
    expect(await verifyChain(d, keys.keyring)).toMatchObject({ ok: true, entries: 3 });
  });

  it("seals and syncs a segment before starting the next, so a new header never links to lost entries", async () => {
    const d = await dir();
    const chain = await openChain(d, { segmentMaxBytes: 2048 });
    for (let i = 0; i < 20; i++) await chain.append(decision(i));
    const v = await verifyChain(d, keys.keyring);
    // Still open: only the current segment's tail waits for its seal.
    expect(!v.ok && v.error.kind).toBe("unsigned");
    const segments = (await readdir(d)).filter((f) => f.startsWith("segment-")).length;
    expect(segments).toBeGreaterThanOrEqual(3);
    for (let n = 1; n < segments; n++) expect((await types(seg(d, n))).at(-1)).toBe("seal");
    await chain.close();
    expect(await verifyChain(d, keys.keyring)).toMatchObject({ ok: true, entries: 20 });
  });

  it("survives a crash mid-entry: resume cuts the torn record, seals the unsealed entries, verifies", async () => {
    const d = await dir();
    // A real crash: a writer process appends in interval mode and is SIGKILLed before its seal.
    const script = `
      import { AuditChain } from "./core/audit/chain.ts";
      import { createPrivateKey } from "node:crypto";
      const key = createPrivateKey(process.env.KEY);
      const chain = await AuditChain.open(process.env.DIR,
        { key, keyId: "sidecar-1", sync: "interval", syncIntervalMs: 3600000 });
      for (let i = 0; i < 5; i++) await chain.append({ session: "s", principal: "p", capsule: "c",
        layer: "acl", action: "ipc.publish", target: "tool.v1.execute.x", decision: "allow", reason: "child " + i });
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
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    expect(await types(seg(d))).toEqual([
      "segment",
      "entry",
      "seal",
      "entry",
      "entry",
      "entry",
      "entry",
    ]);
    // A power cut also tore the last entry: keep only its first 40 bytes.
    const text = await readFile(seg(d), "utf8");
    const lastStart = text.lastIndexOf('{"type":"entry"');
    const kept = Buffer.byteLength(text.slice(0, lastStart)) + 40;
    await truncate(seg(d), kept);
    expect(await verifyChain(d, keys.keyring)).toMatchObject({
      ok: false,
      error: { kind: "truncated", file: "segment-000001.jsonl", line: 7, seq: 4 },
    });

    const chain = await openChain(d);
    // Recovery is sealed and on disk before open returns.
    expect(chain.head.seq).toBe(4);
    const records = (await readLines(seg(d))).map((l) => JSON.parse(l));
    expect(records.map((r) => r.type)).toEqual([
      "segment",
      "entry",
      "seal",
      "entry",
      "entry",
      "entry",
      "entry",
      "seal",
    ]);
    expect(records[6]).toMatchObject({ seq: 4, action: "audit.recovered", decision: "info" });
    expect(records[6].reason).toBe(
      'truncated 40 bytes of a record cut short at the end of segment-000001.jsonl (a crash during a write); entries seq 1..3 of segment-000001.jsonl were written but never signed before a crash; the next signature covers them; this chain runs with sync "interval" (60000 ms): entries acknowledged in the last interval before the crash may be missing, the chain up to here is whole',
    );
    expect(records[7]).toMatchObject({ type: "seal", seq: 4 });
    expect(await verifyChain(d, keys.keyring)).toMatchObject({ ok: true, entries: 5, lastSeq: 4 });
    // And it continues the same chain.
    expect((await chain.append(decision(5))).seq).toBe(5);
    await chain.close();
    expect(await verifyChain(d, keys.keyring)).toMatchObject({ ok: true, entries: 6 });
  });

  it("still fails closed on a failed write, after sealing what it had acknowledged", async () => {
    const d = await dir();
    const chain = await openChain(d, { segmentMaxBytes: 1024 });
    const acked = [await chain.append(decision(0))];
    while ((await stat(seg(d))).size < 1024) acked.push(await chain.append(decision(acked.length)));
    // The next batch must create segment 2; a planted /dev/full stands in its way.
    await symlink("/dev/full", seg(d, 2));
    const err = await chain.append(decision(acked.length)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuditWriteError);
    expect((err as Error).message).toMatch(
      /: writing segment-000002\.jsonl failed \(EEXIST: .*\); every append is refused until the chain is reopened$/,
    );
    expect(chain.failure).toBe(err);
    await expect(chain.append(decision(99))).rejects.toBe(err);
    await expect(chain.flushToDisk()).rejects.toBe(err);
    await chain.close();
    // Everything acknowledged is in segment 1, sealed.
    const records = (await readLines(seg(d))).map((l) => JSON.parse(l));
    expect(records.at(-1)).toMatchObject({ type: "seal", hash: acked.at(-1)!.hash });
    // The planted file is not evidence (verifyChain names it); segment 1 alone verifies.
    const other = await dir();
    await writeFile(seg(other), await readFile(seg(d)));
    expect(await verifyChain(other, keys.keyring)).toMatchObject({
      ok: true,
      entries: acked.length,
    });
  });

  it("with per-entry signatures, an acknowledged entry is signed at once and only its fdatasync waits", async () => {
    const d = await dir();
    const chain = await openChain(d, { signing: "entry" });
    await chain.append(decision(0));
    const r1 = await chain.append(decision(1));
    expect(chain.head.seq).toBe(0);
    expect(await types(seg(d))).toEqual(["segment", "entry", "entry"]);
    expect(await verifyChain(d, keys.keyring)).toMatchObject({ ok: true, entries: 2 });
    await chain.flushToDisk();
    expect(chain.head).toEqual({ seq: 1, hash: r1.hash });
    await chain.close();
  });

  it("refuses bad durability options with what was expected", async () => {
    const d = await dir();
    await expect(openChain(d, { sync: "sometimes" as "always" })).rejects.toThrow(
      new TypeError('audit chain: sync "sometimes" must be "always" or "interval"'),
    );
    await expect(openChain(d, { syncIntervalMs: 0 })).rejects.toThrow(
      new TypeError("audit chain: syncIntervalMs 0 must be a number > 0"),
    );
  });

  it('keeps sync "always" the default: an append resolves sealed and on disk', async () => {
    const d = await dir();
    const chain = await AuditChain.open(d, { key: keys.privateKey, keyId: "sidecar-1" });
    expect(chain.sync).toBe("always");
    const r = await chain.append(decision(0));
    expect(chain.head).toEqual({ seq: 0, hash: r.hash });
    expect(await types(seg(d))).toEqual(["segment", "entry", "seal"]);
    await chain.close();
  });
});
