/**
 * The cache capsule's own rules, run in the real QuickJS engine (the file the sidecar loads)
 * against the RecordingHost test double with a clock and a downstream the test controls: the
 * guest's SHA-256 against node:crypto, what goes into the key, which requests are cacheable,
 * eviction of the oldest entries and refusal of bad settings. The session path (bus, sidecars,
 * router behind it) is covered in test/cache-router.test.ts.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CallContext, CallReply } from "../../sidecar/abi/host.js";
import { QuickJsEngine } from "../../sidecar/engine/wasm/quickjs-engine.js";
import { RecordingHost } from "../../test/fixtures/wasm/recording-host.js";

const SOURCE = readFileSync(path.resolve("capsules/cache/main.js"), "utf8");
const ctx: CallContext = {
  callId: "c1",
  session: "s",
  principal: "user:a",
  capsule: "cache",
  token: undefined,
  deadline: Date.now() + 60_000,
};

/** A host whose clock the test sets and whose downstream answers with a counter. */
class CacheHost extends RecordingHost {
  now = 1_700_000_000_000;
  downstreamCalls = 0;
  constructor(settings: Record<string, string> = {}) {
    super();
    this.config_.set("bind.astrid.llm", "provider");
    for (const [k, v] of Object.entries(settings)) this.config_.set(k, v);
  }
  override clockNow(): number {
    return this.now;
  }
  override async ipcCall(subject: string, kind: string, body: unknown): Promise<CallReply> {
    this.downstreamCalls++;
    expect([subject, kind]).toEqual(["llm.v1.chat.provider", "llm.chat.request"]);
    const q = (body as { messages: { content: string }[] }).messages[0]!.content;
    return {
      kind: "llm.chat.response",
      body: {
        provider: "provider",
        model: "m",
        content: [{ type: "text", text: `answer to ${q} #${this.downstreamCalls}` }],
        stopReason: "end_turn",
        usage: { inputTokens: 3, outputTokens: 2, costMicroUsd: 7 },
      },
    };
  }
  entryKeys(): string[] {
    return [...this.kv.keys()].filter((k) => k.startsWith("cache/e.")).sort();
  }
}

let engine: QuickJsEngine;

beforeAll(async () => {
  engine = await QuickJsEngine.create({
    source: SOURCE,
    memoryMb: 32,
    stackKb: 256,
    timeoutMs: 10_000,
    name: "cache",
  });
});

afterAll(async () => {
  await engine.stop();
});

const call = (fn: string, input: unknown, host = new CacheHost()) =>
  engine.invoke(fn, input, ctx, host) as Promise<Record<string, unknown>>;
const req = (q: string, extra: Record<string, unknown> = {}) => ({
  messages: [{ role: "user", content: q }],
  temperature: 0,
  ...extra,
});
const textOf = (r: Record<string, unknown>) =>
  (r.content as { text: string }[]).map((p) => p.text).join("");

describe("cache key", () => {
  it("computes SHA-256 exactly as node:crypto does, across the padding boundaries", async () => {
    const inputs = [0, 1, 55, 56, 63, 64, 65, 119, 1000].map((n) =>
      Array.from({ length: n }, (_, i) => (i * 31 + n) & 0xff),
    );
    inputs.push([...new TextEncoder().encode("héllo wörld ✓ 𝄞")]);
    for (const bytes of inputs) {
      const want = createHash("sha256").update(Uint8Array.from(bytes)).digest("hex");
      expect(await engine.invoke("sha256Hex", bytes, ctx, new RecordingHost())).toBe(want);
    }
  });

  it("encodes and decodes UTF-8 exactly as TextEncoder/TextDecoder do, lone surrogates as U+FFFD", async () => {
    const texts = [
      "",
      "plain ascii",
      "héllo wörld ✓ 𝄞",
      "a\u0000b",
      "lone \ud800 high",
      "lone \udc00 low",
    ];
    for (const t of texts) {
      const bytes = (await engine.invoke("utf8Bytes", t, ctx, new RecordingHost())) as Record<
        string,
        number
      >;
      const got = Uint8Array.from(Object.values(bytes));
      expect(got).toEqual(new TextEncoder().encode(t));
      expect(await engine.invoke("utf8Text", [...got], ctx, new RecordingHost())).toBe(
        new TextDecoder().decode(got),
      );
    }
    // Bytes that are not UTF-8 (a corrupt kv value) decode as the host's decoder does.
    const bad = [0x61, 0xff, 0x62, 0xc3];
    expect(await engine.invoke("utf8Text", bad, ctx, new RecordingHost())).toBe(
      new TextDecoder().decode(Uint8Array.from(bad)),
    );
  });

  it("depends on the answer's fields and the downstream, not on field order, stream or metadata", async () => {
    const key = async (request: unknown, downstream = "router") =>
      ((await call("cacheKey", { request, downstream })) as { key: string }).key;
    const base = await key({
      messages: [{ role: "user", content: "q" }],
      temperature: 0,
      model: "m",
    });
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    expect(
      await key({
        model: "m",
        temperature: 0,
        messages: [{ content: "q", role: "user" }],
        stream: "_INBOX.x.stream.1",
        metadata: { trace: "t1" },
      }),
    ).toBe(base);
    const variants = await Promise.all([
      key({ messages: [{ role: "user", content: "q" }], temperature: 0, model: "m" }, "anthropic"),
      key({ messages: [{ role: "user", content: "q" }], temperature: 0, model: "m2" }),
      key({ messages: [{ role: "user", content: "q!" }], temperature: 0, model: "m" }),
      key({ messages: [{ role: "user", content: "q" }], temperature: 0, model: "m", maxTokens: 9 }),
      key({ messages: [{ role: "user", content: "q" }], model: "m", stopSequences: ["x"] }),
    ]);
    expect(new Set([base, ...variants]).size).toBe(6);
    const small = (await call("cacheKey", {
      request: { temperature: 0, messages: [] },
      downstream: "d",
    })) as { key: string; canonical: string };
    expect(small.canonical).toBe('{"downstream":"d","messages":[],"temperature":0}');
    // The host's sys.sha256 and the portable JS one agree (the same key either way).
    expect(small.key).toBe(createHash("sha256").update(small.canonical).digest("hex"));
    expect(
      await engine.invoke("sha256Hex", [...Buffer.from(small.canonical)], ctx, new RecordingHost()),
    ).toBe(small.key);
  });
});

describe("cache policy", () => {
  it("caches only deterministic or opted-in requests; metadata.cache = false always bypasses", async () => {
    const policy = (request: unknown, cacheAll = false) =>
      call("cachePolicy", { request, cacheAll });
    expect(await policy({ temperature: 0 })).toEqual({
      cacheable: true,
      reason: "temperature is 0",
    });
    expect(await policy({ temperature: 1, metadata: { cache: true } })).toEqual({
      cacheable: true,
      reason: "metadata.cache is true",
    });
    expect(await policy({ temperature: 0.2 })).toEqual({
      cacheable: false,
      reason: "temperature is 0.2 (not deterministic)",
    });
    expect(await policy({})).toEqual({
      cacheable: false,
      reason: "temperature is not set (the provider's default is not deterministic)",
    });
    expect(await policy({ temperature: 0.2 }, true)).toEqual({
      cacheable: true,
      reason: "CACHE_ALL is true",
    });
    expect(await policy({ temperature: 0, metadata: { cache: false } }, true)).toEqual({
      cacheable: false,
      reason: "metadata.cache is false",
    });
  });
});

describe("cache store", () => {
  it("answers a hit with zero usage, one text delta and the stored usage in metadata", async () => {
    const host = new CacheHost();
    await call("chat", req("a"), host);
    const before = host.calls.length;
    const hit = await call("chat", req("a"), host);
    expect(textOf(hit)).toBe("answer to a #1");
    expect(hit.usage).toEqual({ inputTokens: 0, outputTokens: 0, costMicroUsd: 0 });
    expect(hit.metadata).toMatchObject({
      cache: "hit",
      cacheAgeMs: 0,
      cachedUsage: { inputTokens: 3, outputTokens: 2, costMicroUsd: 7 },
      cacheStats: { hits: 1, misses: 1, bypasses: 0 },
    });
    expect(host.calls.slice(before).filter((c) => c.method === "streamDelta")).toEqual([
      { method: "streamDelta", args: [{ text: "answer to a #1" }] },
      { method: "streamDelta", args: [{ done: true }] },
    ]);
    expect(host.downstreamCalls).toBe(1);
  });

  // An orchestrator that asked for no stream (react) should not pay a host call per delta.
  it("sends no further deltas on a hit when the request has no stream inbox", async () => {
    class NoStreamHost extends CacheHost {
      override async streamDelta(delta: Parameters<RecordingHost["streamDelta"]>[0]) {
        await super.streamDelta(delta);
        return false;
      }
    }
    const host = new NoStreamHost();
    await call("chat", req("no-stream"), host);
    const before = host.calls.length;
    const hit = await call("chat", req("no-stream"), host);
    expect(hit.metadata).toMatchObject({ cache: "hit" });
    expect(host.calls.slice(before).filter((c) => c.method === "streamDelta")).toHaveLength(1);
  });

  // A kv write per hit would put a durable write (a JetStream round trip in a cluster) on the
  // path the cache exists to make fast.
  it("writes the counts to kv on every miss, and on hits at most every 5 s", async () => {
    const host = new CacheHost();
    host.now += 10 * 3600_000; // after every write of the tests before (the engine is shared)
    const stored = () =>
      JSON.parse(new TextDecoder().decode(host.kv.get("cache/stats"))) as Record<string, number>;
    await call("chat", req("stats"), host);
    const afterMiss = stored();
    const hit = await call("chat", req("stats"), host);
    expect((hit.metadata as { cacheStats: { hits: number } }).cacheStats.hits).toBe(
      afterMiss.hits! + 1,
    );
    expect(stored()).toEqual(afterMiss);
    host.now += 5000;
    await call("chat", req("stats"), host);
    expect(stored()).toEqual({ ...afterMiss, hits: afterMiss.hits! + 2 });
  });

  it("keeps at most CACHE_MAX_ENTRIES entries, evicting the oldest", async () => {
    const host = new CacheHost({ CACHE_MAX_ENTRIES: "2" });
    for (const q of ["a", "b", "c"]) {
      host.now += 1000;
      await call("chat", req(q), host);
    }
    expect(host.entryKeys()).toHaveLength(2);
    // "c" and "b" are kept; "a", the oldest, was evicted and is asked for again.
    expect((await call("chat", req("c"), host)).metadata).toMatchObject({ cache: "hit" });
    expect((await call("chat", req("b"), host)).metadata).toMatchObject({ cache: "hit" });
    const a = await call("chat", req("a"), host);
    expect(a.metadata).toMatchObject({ cache: "miss", cacheReason: "not in the cache" });
    expect(textOf(a)).toBe("answer to a #4");
    expect(host.entryKeys()).toHaveLength(2);
  });

  it("expires an entry past the TTL on the host's clock", async () => {
    const host = new CacheHost({ CACHE_TTL_SECONDS: "60" });
    await call("chat", req("a"), host);
    host.now += 60_000;
    expect((await call("chat", req("a"), host)).metadata).toMatchObject({ cache: "hit" });
    host.now += 1;
    expect((await call("chat", req("a"), host)).metadata).toMatchObject({
      cache: "miss",
      cacheReason: "the stored entry expired (60 s old, TTL 60 s)",
    });
    expect(host.downstreamCalls).toBe(2);
  });

  it("refuses settings it cannot honour instead of guessing", async () => {
    await expect(
      call("chat", req("a"), new CacheHost({ CACHE_TTL_SECONDS: "1h" })),
    ).rejects.toThrow(
      'cache.chat: Error: cache: CACHE_TTL_SECONDS must be an integer from 1 to 315360000, got "1h"',
    );
    await expect(
      call("chat", req("a"), new CacheHost({ CACHE_MAX_ENTRIES: "9000" })),
    ).rejects.toThrow(
      'cache.chat: Error: cache: CACHE_MAX_ENTRIES must be an integer from 1 to 5000, got "9000"',
    );
    const unbound = new CacheHost();
    unbound.config_.delete("bind.astrid.llm");
    await expect(call("chat", req("a"), unbound)).rejects.toThrow(
      "cache.chat: Error: cache: no capsule is bound to the astrid.llm import (bind.astrid.llm is unset)",
    );
  });
});
