/**
 * Fail closed on a REAL full disk: a 256 KiB tmpfs is mounted (needs root), the chain writes
 * until the kernel answers ENOSPC, and the test checks that (1) the failing batch and every later
 * append reject with AuditWriteError, and (2) every append that had resolved is on disk and the
 * copy verifies. tmpfs contents vanish on unmount, so the files are copied out first.
 * With sync "interval" the disk fills under the deferred seal instead: the background seal fails,
 * the chain stops and says so through onBackgroundFailure, and resume repairs the copy.
 */
import { execFileSync } from "node:child_process";
import { appendFile, cp, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { type AppendReceipt, AuditChain } from "./chain.js";
import { AuditWriteError } from "./errors.js";
import { decision, readLines, testKeys } from "./test-fixtures.js";
import { verifyChain } from "./verify.js";

function mountProbe(): string | null {
  if (process.getuid?.() !== 0) return "not running as root";
  const probe = path.join(tmpdir(), `astrid-audit-probe-${process.pid}`);
  try {
    execFileSync("mkdir", ["-p", probe]);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], { stdio: "pipe" });
    execFileSync("umount", [probe]);
    return null;
  } catch (err) {
    return `mount -t tmpfs failed: ${(err as Error).message.split("\n")[0]}`;
  } finally {
    execFileSync("rmdir", [probe]);
  }
}

const cannotMount = mountProbe();
if (cannotMount) console.warn(`skipping the full-disk audit test: ${cannotMount}`);

describe("AuditChain on a full disk (tmpfs, ENOSPC)", () => {
  it.skipIf(cannotMount !== null)(
    "rejects from the first failed write on, and loses nothing acknowledged",
    async () => {
      const keys = testKeys();
      const mnt = await mkdtemp(path.join(tmpdir(), "astrid-audit-tmpfs-"));
      const out = await mkdtemp(path.join(tmpdir(), "astrid-audit-copy-"));
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt]);
      let chain: AuditChain | undefined;
      try {
        const dir = path.join(mnt, "chain");
        chain = await AuditChain.open(dir, {
          key: keys.privateKey,
          keyId: "sidecar-1",
          groupCommit: { maxEntries: 50 },
        });
        const acked: AppendReceipt[] = [];
        const refused: unknown[] = [];
        let i = 0;
        // 256 KiB holds ~450 entries; stop at the first refusal (the bound only guards the loop).
        while (refused.length === 0 && i < 5000) {
          const results = await Promise.allSettled(
            Array.from({ length: 50 }, () => chain!.append(decision(i++))),
          );
          for (const r of results) {
            if (r.status === "fulfilled") acked.push(r.value);
            else refused.push(r.reason);
          }
        }
        expect(refused.length).toBeGreaterThan(0);
        expect(acked.length).toBeGreaterThan(100);
        const failure = chain.failure;
        expect(failure).toBeInstanceOf(AuditWriteError);
        expect(failure!.message).toMatch(
          /^audit chain .*: writing segment-000001\.jsonl failed \(ENOSPC: no space left on device, write\); every append is refused until the chain is reopened$/,
        );
        for (const r of refused) expect(r).toBe(failure);
        await expect(chain.append(decision(i))).rejects.toBe(failure);
        await chain.close();

        await cp(dir, out, { recursive: true });
        const v = await verifyChain(out, keys.keyring);
        const lastAcked = acked.at(-1)!;
        expect(v).toEqual({
          ok: true,
          entries: lastAcked.seq + 1,
          segments: 1,
          lastHash: lastAcked.hash,
          lastSeq: lastAcked.seq,
        });
        const onDisk = new Map(
          (await readLines(path.join(out, "segment-000001.jsonl")))
            .map((l) => JSON.parse(l))
            .filter((r) => r.type === "entry")
            .map((r) => [r.seq as number, r.hash as string]),
        );
        for (const r of acked) expect(onDisk.get(r.seq)).toBe(r.hash);
      } finally {
        await chain?.close(); // an open segment would keep the mount busy
        execFileSync("umount", [mnt]);
        await rm(mnt, { recursive: true, force: true });
        await rm(out, { recursive: true, force: true });
      }
    },
  );

  it.skipIf(cannotMount !== null)(
    'sync "interval": a failed background seal stops the chain loudly; resume seals the tail',
    async () => {
      const keys = testKeys();
      const mnt = await mkdtemp(path.join(tmpdir(), "astrid-audit-tmpfs-"));
      const out = await mkdtemp(path.join(tmpdir(), "astrid-audit-copy-"));
      execFileSync("mount", ["-t", "tmpfs", "-o", "size=256k", "tmpfs", mnt]);
      let chain: AuditChain | undefined;
      try {
        const dir = path.join(mnt, "chain");
        const reported: AuditWriteError[] = [];
        chain = await AuditChain.open(dir, {
          key: keys.privateKey,
          keyId: "sidecar-1",
          sync: "interval",
          syncIntervalMs: 3_600_000,
          onBackgroundFailure: (e) => reported.push(e),
        });
        const file = path.join(dir, "segment-000001.jsonl");
        const acked: AppendReceipt[] = [await chain.append(decision(0))]; // sealed: a new segment
        const sealBytes = (await readLines(file))[2]!.length + 1;
        // tmpfs allocates whole pages: leave less room in the segment's last page than a seal
        // needs, so that once the disk is full the seal cannot be written.
        const slack = async () => (4096 - ((await stat(file)).size % 4096)) % 4096;
        for (let round = 0; (await slack()) >= sealBytes; round++) {
          expect(round).toBeLessThan(3);
          const before = (await stat(file)).size;
          acked.push(await chain.append(decision(acked.length, { reason: "r" })));
          const lineBytes = (await stat(file)).size - before;
          const room = await slack();
          if (room < sealBytes) break;
          const want = room - 10 >= lineBytes ? room - 10 : room - 10 + 4096;
          acked.push(
            await chain.append(
              decision(acked.length, { reason: `r${"x".repeat(want - lineBytes)}` }),
            ),
          );
        }
        const filler = path.join(mnt, "filler");
        for (;;) {
          const full = await appendFile(filler, Buffer.alloc(4096)).then(
            () => false,
            (err: NodeJS.ErrnoException) => err.code === "ENOSPC",
          );
          if (full) break;
        }
        // flushToDisk runs the same seal-and-sync step as the interval timer, with no append
        // waiting on it: the failure must surface through onBackgroundFailure.
        const err = await chain.flushToDisk().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(AuditWriteError);
        expect(reported).toEqual([err]);
        expect((err as Error).message).toBe(
          `audit chain ${dir}: writing segment-000001.jsonl failed (ENOSPC: no space left on device, write); entries seq 1..${acked.length - 1} were acknowledged before they were on disk and may be lost in a crash; every append is refused until the chain is reopened`,
        );
        await expect(chain.append(decision(acked.length))).rejects.toBe(err);
        await chain.close();
        expect(reported).toHaveLength(1);

        await cp(dir, out, { recursive: true });
        // Strict: the unsealed tail is not evidence until a writer seals it.
        const before = await verifyChain(out, keys.keyring);
        expect(!before.ok && before.error.kind).toBe("unsigned");
        const resumed = await AuditChain.open(out, {
          key: keys.privateKey,
          keyId: "sidecar-1",
          sync: "interval",
        });
        await resumed.close();
        const v = await verifyChain(out, keys.keyring);
        expect(v).toMatchObject({ ok: true, entries: acked.length + 1 });
        const onDisk = new Map(
          (await readLines(path.join(out, "segment-000001.jsonl")))
            .map((l) => JSON.parse(l))
            .filter((r) => r.type === "entry")
            .map((r) => [r.seq as number, r.hash as string]),
        );
        for (const r of acked) expect(onDisk.get(r.seq)).toBe(r.hash);
      } finally {
        await chain?.close();
        execFileSync("umount", [mnt]);
        await rm(mnt, { recursive: true, force: true });
        await rm(out, { recursive: true, force: true });
      }
    },
  );
});
