/**
 * Capsule benchmarks (issue 6), each beside a baseline in the same run:
 * - router decision: `decideRoute` run in the router's own QuickJS instance, next to an empty
 *   handler call in the same engine (the cost of entering the sandbox);
 * - cache hit: a model request answered by the cache capsule from its store, through the
 *   embedded bus and both layers of sidecar enforcement, next to the same request answered by
 *   the provider capsule directly (the cache's miss path adds the provider on top of this).
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { EmbeddedBus } from "../core/bus/embedded.js";
import { loadManifest } from "../core/manifest/index.js";
import { decode, encode } from "../core/protocol/envelope.js";
import { generateIssuerKey, TrustedKeys } from "../core/security/tokens/keys.js";
import { mintToken } from "../core/security/tokens/mint.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../core/security/tokens/verifier.js";
import { assembleSidecar } from "../sidecar/assemble.js";
import { QuickJsEngine } from "../sidecar/engine/wasm/quickjs-engine.js";
import { RecordingHost } from "../test/fixtures/wasm/recording-host.js";
import { runSuite } from "./lib.js";

export async function main(): Promise<void> {
  const router = await QuickJsEngine.create({
    source: readFileSync(path.resolve("capsules/router/main.js"), "utf8"),
    memoryMb: 32,
    stackKb: 256,
    timeoutMs: 5000,
    name: "router",
  });
  const host = new RecordingHost();
  const ctx = {
    callId: "c",
    session: "bench",
    principal: "user:bench",
    capsule: "router",
    token: undefined,
    deadline: Date.now() + 3_600_000,
  };
  const request = {
    model: "hint-big",
    messages: [{ role: "user", content: "Summarise the design notes in three bullet points." }],
    maxTokens: 200,
    temperature: 0,
  };
  const routeInput = {
    request,
    // As the capsule reads them from its settings: ROUTER_PROVIDERS and ROUTER_RULES.
    providers: "cheap,big",
    rules: JSON.stringify([{ when: { modelHint: "big" }, use: "big" }, { use: "cheap" }]),
  };

  const root = mkdtempSync(path.join(os.tmpdir(), "astrid-bench-capsules-"));
  const issuer = generateIssuerKey();
  const tokens = new TokenVerifier({
    keys: new TrustedKeys([issuer.publicKey]),
    revocations: new MemoryRevocationSet(),
  });
  const token = mintToken(
    {
      sub: "user:bench",
      res: ["topic:>"],
      perm: ["publish"],
      exp: Math.floor(Date.now() / 1000) + 3600,
    },
    issuer,
  );
  const bus = new EmbeddedBus();
  const identity = { key: generateKeyPairSync("ed25519").privateKey, keyId: "bench" };
  const start = async (
    dir: string,
    bindings: Record<string, string>,
    env: Record<string, string>,
  ) =>
    assembleSidecar({
      packageDir: dir,
      manifest: await loadManifest(dir),
      bus,
      auditDir: path.join(root, path.basename(dir), "audit"),
      stateDir: path.join(root, path.basename(dir), "state"),
      identity,
      tokens,
      requireCallerToken: true,
      mode: "autonomous",
      workspace: root,
      home: root,
      bindings,
      env,
      logger: () => {},
    });
  const cheap = await start(path.resolve("test/fixtures/cache-router/cheap"), {}, {});
  const cache = await start(
    path.resolve("capsules/cache"),
    { "astrid.llm": "cheap" },
    {
      CACHE_ALL: "true",
    },
  );
  const ask = async (subject: string) => {
    const wire = encode(
      "llm.chat.request",
      request as never,
      { session: "bench", principal: "user:bench", capsule: "caller" },
      { timeoutMs: 10_000 },
    );
    const reply = await bus.request(subject, wire, {
      timeoutMs: 10_000,
      headers: { "astrid-token": token },
    });
    const env = decode(reply.data, { checkDeadline: false });
    if (env.kind !== "llm.chat.response")
      throw new Error(`${subject}: ${JSON.stringify(env.body)}`);
    return env.body as { metadata?: { cache?: string } };
  };
  // Prime the cache, then check the next answer really is a hit.
  await ask("llm.v1.chat.cache");
  const hit = await ask("llm.v1.chat.cache");
  if (hit.metadata?.cache !== "hit") throw new Error("bench setup: the cache did not hit");

  try {
    await runSuite("Capsules: router decision and cache hit", [
      {
        name: "QuickJS handler call (echo-like, baseline)",
        fn: () => router.invoke("parseRouterConfig", { providers: "a", rules: "[]" }, ctx, host),
      },
      {
        name: "router decideRoute in QuickJS",
        baseline: "QuickJS handler call (echo-like, baseline)",
        goal: "< 100 µs",
        fn: () => router.invoke("decideRoute", routeInput, ctx, host),
      },
      { name: "provider answers directly (bus + sidecar)", fn: () => ask("llm.v1.chat.cheap") },
      {
        name: "cache hit (bus + sidecar + kv)",
        baseline: "provider answers directly (bus + sidecar)",
        goal: "< 1 ms",
        fn: () => ask("llm.v1.chat.cache"),
      },
    ]);
  } finally {
    await router.stop();
    await cache.close();
    await cheap.close();
    await bus.close();
    rmSync(root, { recursive: true, force: true });
  }
}
