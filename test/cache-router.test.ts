/**
 * The cache and the router end to end, through the real session runtime: every capsule under
 * its own sidecar (five layers, audit chain) on the session's bus, wired only by bindings —
 * orchestrator → cache → router → {cheap, big}. The providers are test capsules that answer with
 * their name and fail with the code the request's metadata tells them to; every call they serve
 * is counted from their log lines (the sidecar's logger), never from timing.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import type { Bindings } from "../core/manifest/index.js";
import { loadManifest } from "../core/manifest/index.js";
import { digestPackage } from "../core/package/index.js";
import { generateIssuerKey, TrustedKeys } from "../core/security/tokens/keys.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../core/security/tokens/verifier.js";
import { SessionRuntime } from "../kernel/daemon/session-runtime.js";

const FIXTURES = path.resolve("test/fixtures/cache-router");
const DIRS: Record<string, string> = {
  orchestrator: path.join(FIXTURES, "orchestrator"),
  cache: path.resolve("capsules/cache"),
  router: path.resolve("capsules/router"),
  cheap: path.join(FIXTURES, "cheap"),
  big: path.join(FIXTURES, "big"),
};
const RULES = JSON.stringify([
  { when: { modelHint: "opus" }, use: "big" },
  { when: { maxInputChars: 40 }, use: "cheap" },
  { use: "big" },
]);
const WITH_CACHE: Bindings = {
  orchestrator: { "astrid.llm": "cache" },
  cache: { "astrid.llm": "router" },
  router: { "astrid.llm": "cheap" },
};
const WITHOUT_CACHE: Bindings = {
  orchestrator: { "astrid.llm": "router" },
  cache: { "astrid.llm": "router" },
  router: { "astrid.llm": "cheap" },
};
const identity = { key: generateKeyPairSync("ed25519").privateKey, keyId: "kernel" };
const issuer = generateIssuerKey();

let root: string | undefined;
let runtime: SessionRuntime | undefined;
let logs: { level: string; message: string; fields: Record<string, unknown> }[] = [];

afterEach(async () => {
  await runtime?.close();
  runtime = undefined;
  if (root) rmSync(root, { recursive: true, force: true });
  root = undefined;
  logs = [];
});

async function startSession(
  bindings: Bindings = WITH_CACHE,
  env: Record<string, string> = {},
): Promise<SessionRuntime> {
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-cache-router-"));
  const capsules = await Promise.all(
    Object.values(DIRS).map(async (dir) => ({ dir, manifest: await loadManifest(dir) })),
  );
  runtime = await SessionRuntime.start({
    session: "s-cr",
    principal: "user:test",
    sessionDir: path.join(root, "sessions", "s-cr"),
    workspace: root,
    home: root,
    mode: "guided",
    yes: false,
    capsules,
    bindings,
    orchestrator: "orchestrator",
    identity,
    issuer,
    tokens: new TokenVerifier({
      keys: new TrustedKeys([issuer.publicKey]),
      revocations: new MemoryRevocationSet(),
    }),
    env: { ROUTER_PROVIDERS: "cheap,big", ROUTER_RULES: RULES, ...env },
    approvalTimeoutMs: 5000,
    logger: (level, message, fields) => logs.push({ level, message, fields }),
  });
  return runtime;
}

interface Answer {
  text?: string;
  provider?: string;
  usage?: Record<string, number>;
  metadata?: Record<string, unknown> & {
    cache?: string;
    cacheReason?: string;
    router?: { chose: string; reason: string; answered: string; tried: unknown[] };
  };
  error?: { code: string; message: string };
}

async function ask(rt: SessionRuntime, q: Record<string, unknown>): Promise<Answer> {
  const res = await rt.prompt(JSON.stringify(q), { timeoutMs: 20_000 }, { onEvent: () => {} });
  return JSON.parse(res.text) as Answer;
}

/** How many calls each fixture provider served, from its own log lines. */
function providerCalls(): Record<string, number> {
  const n: Record<string, number> = { cheap: 0, big: 0 };
  for (const l of logs) {
    if (l.message === "fixture provider called") n[l.fields.provider as string]! += 1;
  }
  return n;
}

const cacheLines = () => logs.filter((l) => l.message.startsWith("cache ")).map((l) => l.message);

describe("cache in front of the router", () => {
  it("serves a second identical deterministic prompt from the cache without calling the provider", async () => {
    const rt = await startSession();
    const first = await ask(rt, { text: "hello", temperature: 0 });
    expect(first).toMatchObject({
      text: 'cheap answers "hello" (call 1)',
      provider: "cheap",
      usage: { inputTokens: 10, outputTokens: 5, costMicroUsd: 20 },
      metadata: { cache: "miss", cacheReason: "not in the cache", cacheStored: true },
    });
    const second = await ask(rt, { text: "hello", temperature: 0 });
    expect(second).toMatchObject({
      text: 'cheap answers "hello" (call 1)',
      provider: "cheap",
      // Nobody was paid for the second answer; what the first cost is kept for the record.
      usage: { inputTokens: 0, outputTokens: 0, costMicroUsd: 0 },
      metadata: {
        cache: "hit",
        cacheKey: first.metadata?.cacheKey,
        cachedUsage: { inputTokens: 10, outputTokens: 5, costMicroUsd: 20 },
        cacheStats: { hits: 1, misses: 1, bypasses: 0 },
        fixture: "cheap",
        calls: 1,
      },
    });
    // The router's explanation of the original choice travels with the stored answer.
    expect(second.metadata?.router).toEqual(first.metadata?.router);
    expect(providerCalls()).toEqual({ cheap: 1, big: 0 });
    expect(cacheLines()).toEqual(["cache miss", "cache hit"]);
  });

  it("never caches a non-deterministic request unless the caller opts in", async () => {
    const rt = await startSession();
    const warm1 = await ask(rt, { text: "poem", temperature: 0.7 });
    const warm2 = await ask(rt, { text: "poem", temperature: 0.7 });
    expect(warm1.metadata).toMatchObject({
      cache: "bypass",
      cacheReason: "temperature is 0.7 (not deterministic)",
    });
    expect(warm2.text).toBe('cheap answers "poem" (call 2)');
    const unset = await ask(rt, { text: "poem" });
    expect(unset.metadata?.cacheReason).toBe(
      "temperature is not set (the provider's default is not deterministic)",
    );
    await ask(rt, { text: "poem", temperature: 0.7, metadata: { cache: true } });
    const optedIn = await ask(rt, { text: "poem", temperature: 0.7, metadata: { cache: true } });
    expect(optedIn.metadata).toMatchObject({ cache: "hit" });
    expect(providerCalls()).toEqual({ cheap: 4, big: 0 });
  });

  it("drops an entry older than CACHE_TTL_SECONDS and asks the provider again", async () => {
    const rt = await startSession(WITH_CACHE, { CACHE_TTL_SECONDS: "1" });
    expect((await ask(rt, { text: "ttl", temperature: 0 })).metadata?.cache).toBe("miss");
    expect((await ask(rt, { text: "ttl", temperature: 0 })).metadata?.cache).toBe("hit");
    // A real wait past the TTL on the host clock the guest reads; only counts are asserted.
    await new Promise((r) => setTimeout(r, 1300));
    const after = await ask(rt, { text: "ttl", temperature: 0 });
    expect(after.text).toBe('cheap answers "ttl" (call 2)');
    expect(after.metadata?.cache).toBe("miss");
    expect(after.metadata?.cacheReason).toMatch(
      /^the stored entry expired \(1 s old, TTL 1 s\)$|^the stored entry expired \([2-9] s old, TTL 1 s\)$/,
    );
    expect(providerCalls()).toEqual({ cheap: 2, big: 0 });
  });

  it("does not store an error reply: the same request goes to the providers again", async () => {
    const rt = await startSession();
    const failing = {
      text: "flaky",
      temperature: 0,
      metadata: { fail: { cheap: "unavailable", big: "unavailable" } },
    };
    const e1 = await ask(rt, failing);
    expect(e1.error?.code).toBe("unavailable");
    expect(e1.error?.message).toBe(
      "cache.chat: HostError: router.chat: Error: router: every provider failed: cheap (unavailable), big (unavailable)",
    );
    await ask(rt, failing);
    expect(providerCalls()).toEqual({ cheap: 2, big: 2 });
    // metadata is not part of the key: had the error been stored, this would be a hit.
    const ok = await ask(rt, { text: "flaky", temperature: 0 });
    expect(ok).toMatchObject({
      text: 'cheap answers "flaky" (call 3)',
      metadata: { cache: "miss" },
    });
    expect(providerCalls()).toEqual({ cheap: 3, big: 2 });
  });
});

describe("router between two providers", () => {
  it("chooses by rule and explains the choice in metadata.router", async () => {
    const rt = await startSession(WITHOUT_CACHE);
    const short = await ask(rt, { text: "hi" });
    expect(short.provider).toBe("cheap");
    expect(short.metadata?.router).toEqual({
      chose: "cheap",
      reason: "rule 2: input 2 chars ≤ 40",
      answered: "cheap",
      tried: [{ provider: "cheap", outcome: "ok" }],
    });
    const hinted = await ask(rt, { text: "hi", model: "claude-opus-4" });
    expect(hinted.metadata?.router).toEqual({
      chose: "big",
      reason: 'rule 1: model "claude-opus-4" asks for "opus"',
      answered: "big",
      tried: [{ provider: "big", outcome: "ok" }],
    });
    const long = await ask(rt, { text: "x".repeat(41) });
    expect(long.metadata?.router).toMatchObject({ chose: "big", reason: "rule 3: always" });
    expect(providerCalls()).toEqual({ cheap: 1, big: 2 });
  });

  it("falls back to the next provider when the chosen one is unavailable", async () => {
    const rt = await startSession(WITHOUT_CACHE);
    const res = await ask(rt, { text: "hi", metadata: { fail: { cheap: "unavailable" } } });
    expect(res.text).toBe('big answers "hi" (call 1)');
    const router = res.metadata?.router;
    expect(router).toMatchObject({
      chose: "cheap",
      reason: "rule 2: input 2 chars ≤ 40",
      answered: "big",
      tried: [
        { provider: "cheap", outcome: "unavailable" },
        { provider: "big", outcome: "ok" },
      ],
    });
    expect((router!.tried[0] as { message: string }).message).toBe(
      "cheap.chat: Error: cheap fails as told (unavailable)",
    );
    expect(providerCalls()).toEqual({ cheap: 1, big: 1 });
  });

  it("does not route around a denial: the error reaches the caller and no other provider runs", async () => {
    const rt = await startSession(WITHOUT_CACHE);
    const res = await ask(rt, { text: "hi", metadata: { fail: { cheap: "denied" } } });
    expect(res.error?.code).toBe("denied");
    expect(res.error?.message).toBe(
      "router.chat: Error: router: cheap refused (denied), not falling back: cheap.chat: Error: cheap fails as told (denied)",
    );
    expect(providerCalls()).toEqual({ cheap: 1, big: 0 });
  });
});

describe("wiring the cache in or out", () => {
  it("is a change of bindings only: the same packages answer, with and without the cache", async () => {
    const digests = async () =>
      Object.fromEntries(
        await Promise.all(
          ["orchestrator", "router", "cheap", "big"].map(
            async (n) => [n, (await digestPackage(DIRS[n]!)).digest] as const,
          ),
        ),
      );
    const before = await digests();
    let rt = await startSession(WITH_CACHE);
    await ask(rt, { text: "wired", temperature: 0 });
    const cached = await ask(rt, { text: "wired", temperature: 0 });
    await rt.close();
    runtime = undefined;
    rmSync(root!, { recursive: true, force: true });
    const during = await digests();
    rt = await startSession(WITHOUT_CACHE);
    await ask(rt, { text: "wired", temperature: 0 });
    const direct = await ask(rt, { text: "wired", temperature: 0 });
    expect(await digests()).toEqual(before);
    expect(during).toEqual(before);
    expect(cached.metadata?.cache).toBe("hit");
    expect(cached.text).toBe('cheap answers "wired" (call 1)');
    // Without the cache every prompt reaches the provider, and nothing claims a cache.
    expect(direct.text).toBe('cheap answers "wired" (call 2)');
    expect(direct.metadata?.cache).toBeUndefined();
  });
});
