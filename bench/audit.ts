/**
 * Audit chain: durable appends/s (write + fdatasync) with group commit under both signing
 * strategies, next to fdatasync-per-entry; and verification entries/s for both strategies next
 * to a hash-and-link-only pass. Timed loops (not tinybench): each case is one long run whose
 * throughput is the figure, with per-append latency percentiles from the same run.
 */
import { generateKeyPairSync, hash } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { AuditChain, type SigningStrategy } from "../core/audit/chain.js";
import type { AuditEntryInput } from "../core/audit/entry.js";
import { listSegments, splitLines } from "../core/audit/segment-files.js";
import { AuditKeyring } from "../core/audit/signature.js";
import { verifyChain } from "../core/audit/verify.js";
import { type BenchRow, printTable } from "./lib.js";

const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const keyring = new AuditKeyring([["bench", publicKey]]);

function entry(i: number): AuditEntryInput {
  return {
    session: "sess-7f3a",
    principal: "alice@example.com",
    capsule: "github-tools",
    layer: "gate",
    action: "tool.call",
    target: "github/create_issue",
    decision: i % 10 === 0 ? "deny" : "allow",
    reason: "token jti 8d1c scope tool:github/*",
    args: { repo: "acme/web", title: `issue ${i}` },
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0;
}

/** `total` appends keeping `inFlight` outstanding; returns the row and the chain's directory. */
async function appendRun(
  name: string,
  total: number,
  inFlight: number,
  signing: SigningStrategy,
  maxEntries: number,
  goal = "",
): Promise<{ row: BenchRow; dir: string }> {
  const dir = await mkdtemp(path.join(tmpdir(), "astrid-audit-bench-"));
  const chain = await AuditChain.open(dir, {
    key: privateKey,
    keyId: "bench",
    signing,
    groupCommit: { maxEntries },
  });
  const lat: number[] = [];
  let next = 0;
  const start = performance.now();
  async function worker(): Promise<void> {
    while (next < total) {
      const i = next++;
      const t = performance.now();
      await chain.append(entry(i));
      lat.push((performance.now() - t) * 1000);
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker));
  const secs = (performance.now() - start) / 1000;
  await chain.close();
  lat.sort((a, b) => a - b);
  return {
    dir,
    row: {
      name,
      opsPerSec: total / secs,
      p50us: percentile(lat, 0.5),
      p99us: percentile(lat, 0.99),
      samples: total,
      vsBaseline: "",
      goal,
    },
  };
}

async function verifyRun(
  name: string,
  dir: string,
  entries: number,
  goal = "",
  floor = false,
): Promise<BenchRow> {
  const runs: number[] = [];
  for (let r = 0; r < 3; r++) {
    const t = performance.now();
    if (floor) {
      // What any JSON-lines chain verifier pays at least: parse every line, sha256 every line.
      let n = 0;
      for (const seg of await listSegments(dir)) {
        const { lines } = splitLines(await readFile(path.join(dir, seg.name), "utf8"));
        for (const line of lines) {
          if (JSON.parse(line).type === "entry") n++;
          hash("sha256", line, "hex");
        }
      }
      if (n !== entries) throw new Error(`bench chain holds ${n} entries, expected ${entries}`);
    } else {
      const res = await verifyChain(dir, keyring);
      if (!res.ok || res.entries !== entries) throw new Error(`bench chain does not verify`);
    }
    runs.push((performance.now() - t) / 1000);
  }
  runs.sort((a, b) => a - b);
  const secs = runs[1]!; // median of 3
  return {
    name,
    opsPerSec: entries / secs,
    p50us: (secs / entries) * 1e6,
    p99us: (runs[2]! / entries) * 1e6,
    samples: entries * runs.length,
    vsBaseline: "",
    goal,
  };
}

function versus(rows: BenchRow[], baseline: BenchRow, label: string): void {
  for (const r of rows) {
    if (r === baseline) continue;
    r.vsBaseline = `×${(r.opsPerSec / baseline.opsPerSec).toFixed(2)} ops/s vs ${label}`;
  }
}

export async function main(): Promise<void> {
  const dirs: string[] = [];
  try {
    const base = await appendRun("fdatasync per entry (1 in flight, seal each)", 500, 1, "seal", 1);
    const seal = await appendRun(
      "group commit, seal per batch (1,000 in flight)",
      60_000,
      1000,
      "seal",
      1000,
      "≥ 50k/s",
    );
    const perEntry = await appendRun(
      "group commit, signature per entry (1,000 in flight)",
      20_000,
      1000,
      "entry",
      1000,
    );
    dirs.push(base.dir, seal.dir, perEntry.dir);
    const appendRows = [base.row, seal.row, perEntry.row];
    versus(appendRows, base.row, "fdatasync per entry");
    printTable(
      "Audit: durable appends/s (write + fdatasync; p50/p99 = append latency)",
      appendRows,
    );

    const hashOnly = await verifyRun(
      "floor: JSON.parse + sha256 per line",
      seal.dir,
      60_000,
      "",
      true,
    );
    const verifySeal = await verifyRun("verifyChain, seal per batch", seal.dir, 60_000, "≥ 200k/s");
    const verifyEntry = await verifyRun("verifyChain, signature per entry", perEntry.dir, 20_000);
    const verifyRows = [hashOnly, verifySeal, verifyEntry];
    versus(verifyRows, hashOnly, "floor");
    printTable(
      "Audit: verification entries/s (p50 = µs per entry in the median of 3 runs, p99 = in the slowest)",
      verifyRows,
    );
  } finally {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
