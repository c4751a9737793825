/**
 * Fail closed on a REAL full disk: a 256 KiB tmpfs is mounted (needs root), the chain writes
 * until the kernel answers ENOSPC, and the test checks that (1) the failing batch and every later
 * append reject with AuditWriteError, and (2) every append that had resolved is on disk and the
 * copy verifies. tmpfs contents vanish on unmount, so the files are copied out first.
 */
import { execFileSync } from "node:child_process";
import { cp, mkdtemp, rm } from "node:fs/promises";
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
});
