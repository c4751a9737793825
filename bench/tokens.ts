/**
 * Security layers 3 and 4 on the hot path: the IPC ACL per message and the capability token
 * per call, each beside its baseline in the same run (a bare subject match; a bare ed25519
 * verify through node:crypto). Sub-microsecond cases run 100 decisions per call so the timer's
 * resolution does not swamp them: read their ops/s, and their p50 as the cost of 100.
 */
import { verify as nodeVerify } from "node:crypto";
import * as ed from "@noble/ed25519";
import { compilePattern, matchCompiled, subjectMatches } from "../core/bus/subject.js";
import { IpcAcl } from "../core/security/acl/ipc-acl.js";
import { generateIssuerKey, TrustedKeys } from "../core/security/tokens/keys.js";
import { mintToken } from "../core/security/tokens/mint.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import { type TokenRequest, TokenVerifier } from "../core/security/tokens/verifier.js";
import { type BenchCase, runSuite } from "./lib.js";

const BATCH = 100;

function batched(fn: () => unknown): () => void {
  return () => {
    for (let i = 0; i < BATCH; i++) fn();
  };
}

export async function main(): Promise<void> {
  const subject = "tool.v1.execute.fs";
  const patterns = ["session.v1.*", "audit.v1.>", "tool.v1.execute.*"];
  const acl = new IpcAcl({ publish: patterns, subscribe: patterns }, { capsuleId: "bench" });
  // cacheSize 1 with two alternating subjects: every lookup misses and recomputes.
  const uncached = new IpcAcl(
    { publish: patterns, subscribe: [] },
    { capsuleId: "bench", cacheSize: 1 },
  );
  const alternate = ["tool.v1.execute.fs", "tool.v1.execute.git"];
  let flip = 0;
  const compiled = patterns.map(compilePattern);

  const issuer = generateIssuerKey();
  const keys = new TrustedKeys([issuer.publicKey]);
  const revocations = new MemoryRevocationSet();
  const claims = {
    sub: "alice",
    res: ["fs:/work/**", "tool:git/*", "topic:tool.v1.execute.fs"],
    perm: ["read" as const, "execute" as const],
    exp: Math.floor(Date.now() / 1000) + 3600,
  };
  const token = mintToken(claims, issuer);
  const req: TokenRequest = {
    principal: "alice",
    resource: "fs:/work/src/index.ts",
    permission: "read",
  };
  const coldNode = new TokenVerifier({ keys, revocations, cache: false, engine: "node" });
  const coldNoble = new TokenVerifier({ keys, revocations, cache: false, engine: "noble" });
  const cached = new TokenVerifier({ keys, revocations });
  cached.check(token, req);
  const dot = token.lastIndexOf(".");
  const data = Buffer.from(token.slice(0, dot), "ascii");
  const sig = Buffer.from(token.slice(dot + 1), "base64url");
  for (const v of [coldNode, coldNoble, cached]) {
    if (!v.check(token, req).allowed) throw new Error("bench token does not verify");
  }

  const cases: BenchCase[] = [
    {
      name: `subjectMatches, 3 patterns (${BATCH}×)`,
      fn: batched(() => patterns.some((p) => subjectMatches(p, subject))),
      opsPerCall: BATCH,
    },
    {
      name: `matchCompiled, 3 patterns (${BATCH}×)`,
      baseline: `subjectMatches, 3 patterns (${BATCH}×)`,
      fn: batched(() => {
        const tokens = subject.split(".");
        return compiled.some((p) => matchCompiled(p, tokens));
      }),
      opsPerCall: BATCH,
    },
    {
      name: `ACL checkPublish cached (${BATCH}×)`,
      baseline: `subjectMatches, 3 patterns (${BATCH}×)`,
      goal: "< 1 µs per decision",
      fn: batched(() => acl.checkPublish(subject)),
      opsPerCall: BATCH,
    },
    {
      name: `ACL checkPublish uncached (${BATCH}×)`,
      baseline: `subjectMatches, 3 patterns (${BATCH}×)`,
      goal: "< 1 µs per decision",
      fn: batched(() => uncached.checkPublish(alternate[flip++ & 1]!)),
      opsPerCall: BATCH,
    },
    {
      name: `ACL checkSubscribe cached (${BATCH}×)`,
      baseline: `subjectMatches, 3 patterns (${BATCH}×)`,
      fn: batched(() => acl.checkSubscribe("tool.v1.execute.fs")),
      opsPerCall: BATCH,
    },
    { name: "mintToken", fn: () => mintToken(claims, issuer) },
    {
      name: "ed25519 verify, node:crypto",
      fn: () => nodeVerify(null, data, issuer.publicKey, sig),
    },
    {
      name: "ed25519 verify, noble (zip215 false)",
      baseline: "ed25519 verify, node:crypto",
      fn: () => ed.verify(sig, data, issuer.publicKeyRaw, { zip215: false }),
    },
    {
      name: "token verify cold, node:crypto",
      baseline: "ed25519 verify, node:crypto",
      fn: () => coldNode.check(token, req),
    },
    {
      name: "token verify cold, noble",
      baseline: "token verify cold, node:crypto",
      fn: () => coldNoble.check(token, req),
    },
    {
      name: `token check cached, sync (${BATCH}×)`,
      goal: "< 2 µs per check",
      fn: batched(() => cached.check(token, req)),
      opsPerCall: BATCH,
    },
    {
      name: `token verify cached, async (${BATCH}×)`,
      baseline: `token check cached, sync (${BATCH}×)`,
      goal: "< 2 µs per check",
      fn: async () => {
        for (let i = 0; i < BATCH; i++) await cached.verify(token, req);
      },
      opsPerCall: BATCH,
    },
  ];
  await runSuite("Security: IPC ACL and capability tokens", cases, { time: 500, warmupTime: 100 });
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
