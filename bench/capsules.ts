/**
 * Capsule benchmarks (issue 6), each beside a baseline in the same run:
 * - router decision: `decideRoute` run in the router's own QuickJS instance, next to an empty
 *   handler call in the same engine (the cost of entering the sandbox);
 * - cache hit, and where its time goes: the request key (canonical JSON + SHA-256) in QuickJS
 *   beside node:crypto on the same bytes; the cache's whole `chat` hit in QuickJS without a
 *   sidecar; then a hit through the embedded bus and the sidecar's five layers beside the
 *   provider answering directly, once with the audit chains on disk and once on tmpfs (where
 *   fdatasync costs nothing), which isolates the durable-write share of a sidecar hop, and
 *   once on disk with the opt-in `audit.sync = interval` (acknowledged once written, fdatasync
 *   within 10 ms);
 * - ReAct step overhead: one turn of react (four model steps, three tool calls) under sidecars
 *   with the replay provider and a trivial tool, beside the provider call and the tool call
 *   alone; the overhead per step is the turn minus the model and tool calls it made, over 4.
 */
import { createHash, generateKeyPairSync } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { EmbeddedBus } from "../core/bus/embedded.js";
import { loadManifest } from "../core/manifest/index.js";
import { decode, encode } from "../core/protocol/envelope.js";
import { generateIssuerKey, TrustedKeys } from "../core/security/tokens/keys.js";
import { mintToken } from "../core/security/tokens/mint.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../core/security/tokens/verifier.js";
import type { CallReply } from "../sidecar/abi/host.js";
import { assembleSidecar } from "../sidecar/assemble.js";
import { QuickJsEngine } from "../sidecar/engine/wasm/quickjs-engine.js";
import { RecordingHost } from "../test/fixtures/wasm/recording-host.js";
import { type BenchRow, runSuite } from "./lib.js";

const ctx = (capsule: string) => ({
  callId: "c",
  session: "bench",
  principal: "user:bench",
  capsule,
  token: undefined,
  deadline: Date.now() + 3_600_000,
});

const SHORT_REQUEST = {
  model: "hint-big",
  messages: [{ role: "user", content: "Summarise the design notes in three bullet points." }],
  maxTokens: 200,
  temperature: 0,
};

/** A react request at its fourth step: three tool results of ~2 KB each, and two tools offered. */
function stepFourRequest() {
  const file = "The launch is on Friday, after the security review. ".repeat(40);
  const messages: unknown[] = [
    { role: "system", content: "You are the agent of an Astrid session. ".repeat(6) },
    { role: "user", content: "Read the notes, count their lines and write a summary." },
  ];
  for (let i = 1; i <= 3; i++) {
    messages.push({
      role: "assistant",
      content: [{ type: "tool_use", id: `t${i}`, name: "read_file", input: { path: `n${i}.md` } }],
    });
    messages.push({
      role: "tool",
      content: [
        {
          type: "tool_result",
          toolUseId: `t${i}`,
          content: `<tool_result name="read_file" id="t${i}">\n${file}\n</tool_result>`,
          isError: false,
        },
      ],
    });
  }
  const schema = { type: "object", properties: { path: { type: "string" } }, required: ["path"] };
  return {
    messages,
    tools: [
      { name: "read_file", description: "Reads a workspace file", inputSchema: schema },
      { name: "run", description: "Runs an allow-listed command", inputSchema: schema },
    ],
    temperature: 0,
  };
}

/** Host double whose model answers a miss once; later calls are served by the cache's kv. */
class CacheHost extends RecordingHost {
  override async ipcCall(): Promise<CallReply> {
    return {
      kind: "llm.chat.response",
      body: {
        provider: "p",
        model: "m",
        content: [{ type: "text", text: "ok" }],
        stopReason: "end_turn",
        usage: { inputTokens: 10, outputTokens: 2, costMicroUsd: 3 },
      },
    };
  }
}

async function inQuickJs(name: string, file: string): Promise<QuickJsEngine> {
  return QuickJsEngine.create({
    source: readFileSync(path.resolve(file), "utf8"),
    memoryMb: 32,
    stackKb: 256,
    timeoutMs: 5000,
    name,
  });
}

type AuditSyncOption = NonNullable<Parameters<typeof assembleSidecar>[0]["auditSync"]>;

/** One process-local world: a bus, sidecars under one root, a caller's token. */
async function world(root: string, auditSync?: AuditSyncOption) {
  const issuer = generateIssuerKey();
  const tokens = new TokenVerifier({
    keys: new TrustedKeys([issuer.publicKey]),
    revocations: new MemoryRevocationSet(),
  });
  const token = mintToken(
    // The grant a session gives its orchestrator (kernel/daemon/session-runtime.ts).
    {
      sub: "user:bench",
      res: ["tool:**", "topic:>"],
      perm: ["execute", "publish"],
      ses: "bench",
      exp: Math.floor(Date.now() / 1000) + 3600,
    },
    issuer,
  );
  const bus = new EmbeddedBus();
  const identity = { key: generateKeyPairSync("ed25519").privateKey, keyId: "bench" };
  const closers: (() => Promise<void>)[] = [];
  const start = async (
    dir: string,
    bindings: Record<string, string>,
    env: Record<string, string> = {},
    extraConfig: Record<string, string> = {},
  ) => {
    const s = await assembleSidecar({
      packageDir: dir,
      manifest: await loadManifest(dir),
      bus,
      auditDir: path.join(root, path.basename(dir), "audit"),
      stateDir: path.join(root, path.basename(dir), "state"),
      identity,
      tokens,
      requireCallerToken: true,
      session: "bench",
      mode: "autonomous",
      workspace: root,
      home: root,
      bindings,
      env,
      extraConfig,
      ...(auditSync ? { auditSync } : {}),
      logger: () => {},
    });
    closers.push(() => s.close());
    return s;
  };
  const call = async (subject: string, kind: string, body: unknown, expect: string) => {
    const wire = encode(
      kind as never,
      body as never,
      { session: "bench", principal: "user:bench", capsule: "caller" },
      { timeoutMs: 30_000 },
    );
    const reply = await bus.request(subject, wire, {
      timeoutMs: 30_000,
      headers: { "astrid-token": token },
    });
    const env = decode(reply.data, { checkDeadline: false });
    if (env.kind !== expect) throw new Error(`${subject}: ${JSON.stringify(env.body)}`);
    return env.body as Record<string, unknown>;
  };
  const close = async () => {
    for (const c of closers.reverse()) await c();
    await bus.close();
  };
  return { start, call, close };
}

const p50 = (rows: BenchRow[], name: string) => rows.find((r) => r.name === name)?.p50us ?? 0;

async function routerSuite(): Promise<void> {
  const router = await inQuickJs("router", "capsules/router/main.js");
  const host = new RecordingHost();
  const routeInput = {
    request: SHORT_REQUEST,
    // As the capsule reads them from its settings: ROUTER_PROVIDERS and ROUTER_RULES.
    providers: "cheap,big",
    rules: JSON.stringify([{ when: { modelHint: "big" }, use: "big" }, { use: "cheap" }]),
  };
  try {
    await runSuite("Capsules: router decision", [
      {
        name: "QuickJS handler call (echo-like, baseline)",
        fn: () => {
          host.calls.length = 0;
          return router.invoke(
            "parseRouterConfig",
            { providers: "a", rules: "[]" },
            ctx("router"),
            host,
          );
        },
      },
      {
        name: "router decideRoute in QuickJS",
        baseline: "QuickJS handler call (echo-like, baseline)",
        goal: "< 100 µs",
        fn: () => {
          host.calls.length = 0;
          return router.invoke("decideRoute", routeInput, ctx("router"), host);
        },
      },
    ]);
  } finally {
    await router.stop();
  }
}

async function cacheSuite(): Promise<void> {
  const cacheJs = await inQuickJs("cache", "capsules/cache/main.js");
  const host = new CacheHost();
  host.config_.set("bind.astrid.llm", "cheap");
  const big = stepFourRequest();
  const canonicalBig = (
    (await cacheJs.invoke(
      "cacheKey",
      { request: big, downstream: "cheap" },
      ctx("cache"),
      host,
    )) as {
      canonical: string;
    }
  ).canonical;
  // Prime the kv of the double: the first call is a miss, the next ones hits.
  await cacheJs.invoke("chat", SHORT_REQUEST, ctx("cache"), host);
  await cacheJs.invoke("chat", big, ctx("cache"), host);
  const hitInQuickJs = async (request: unknown) => {
    host.calls.length = 0;
    const r = (await cacheJs.invoke("chat", request, ctx("cache"), host)) as {
      metadata: { cache: string };
    };
    if (r.metadata.cache !== "hit") throw new Error("bench: the cache did not hit");
  };

  const roots = [mkdtempSync(path.join(os.tmpdir(), "astrid-bench-capsules-"))];
  const shm = existsSync("/dev/shm") ? mkdtempSync("/dev/shm/astrid-bench-capsules-") : undefined;
  if (shm) roots.push(shm);
  const intervalRoot = mkdtempSync(path.join(os.tmpdir(), "astrid-bench-capsules-interval-"));
  const worlds = await Promise.all(roots.map((r) => world(r)));
  const interval = await world(intervalRoot, { sync: "interval", intervalMs: 10 });
  for (const w of [...worlds, interval]) {
    await w.start(path.resolve("test/fixtures/cache-router/cheap"), {});
    await w.start(path.resolve("capsules/cache"), { "astrid.llm": "cheap" });
    await w.call("llm.v1.chat.cache", "llm.chat.request", SHORT_REQUEST, "llm.chat.response");
    const hit = await w.call(
      "llm.v1.chat.cache",
      "llm.chat.request",
      SHORT_REQUEST,
      "llm.chat.response",
    );
    if ((hit.metadata as { cache?: string }).cache !== "hit") {
      throw new Error("bench setup: the cache did not hit");
    }
  }
  const [disk, tmpfs] = worlds;
  const ask = (w: typeof disk, subject: string) => () =>
    w!.call(subject, "llm.chat.request", SHORT_REQUEST, "llm.chat.response");
  try {
    await runSuite("Capsules: cache hit, and where its time goes", [
      {
        name: "node:crypto sha256 of a step-4 request (8 KB)",
        fn: () => createHash("sha256").update(canonicalBig).digest("hex"),
      },
      {
        name: "cacheKey of a step-4 request in QuickJS",
        baseline: "node:crypto sha256 of a step-4 request (8 KB)",
        fn: () =>
          cacheJs.invoke("cacheKey", { request: big, downstream: "cheap" }, ctx("cache"), host),
      },
      { name: "cache chat hit in QuickJS, short request", fn: () => hitInQuickJs(SHORT_REQUEST) },
      {
        name: "cache chat hit in QuickJS, step-4 request",
        baseline: "cache chat hit in QuickJS, short request",
        fn: () => hitInQuickJs(big),
      },
      { name: "provider answers directly (bus + sidecar)", fn: ask(disk, "llm.v1.chat.cheap") },
      {
        name: "cache hit (bus + sidecar + kv)",
        baseline: "provider answers directly (bus + sidecar)",
        goal: "< 1 ms",
        fn: ask(disk, "llm.v1.chat.cache"),
      },
      ...(tmpfs
        ? [
            {
              name: "provider directly, audit on tmpfs",
              baseline: "provider answers directly (bus + sidecar)",
              fn: ask(tmpfs, "llm.v1.chat.cheap"),
            },
            {
              name: "cache hit, audit on tmpfs",
              baseline: "cache hit (bus + sidecar + kv)",
              goal: "< 1 ms",
              fn: ask(tmpfs, "llm.v1.chat.cache"),
            },
          ]
        : []),
      {
        name: "provider directly, audit sync=interval",
        baseline: "provider answers directly (bus + sidecar)",
        fn: ask(interval, "llm.v1.chat.cheap"),
      },
      {
        name: "cache hit, audit sync=interval",
        baseline: "cache hit (bus + sidecar + kv)",
        goal: "< 1 ms",
        fn: ask(interval, "llm.v1.chat.cache"),
      },
    ]);
  } finally {
    await cacheJs.stop();
    for (const w of [...worlds, interval]) await w.close();
    for (const r of [...roots, intervalRoot]) rmSync(r, { recursive: true, force: true });
  }
}

const STEPS = 4;
const TOOL_SPEC = {
  name: "read_file",
  description: "Reads a file of the workspace",
  inputSchema: { type: "object", properties: { path: { type: "string" } }, required: ["path"] },
};

/** The replay transcript's answers, keyed like replay does: by the assistant turns so far. */
function modelReply(step: number) {
  return step < STEPS - 1
    ? {
        content: [
          {
            type: "tool_use",
            id: `t${step + 1}`,
            name: "read_file",
            input: { path: "cwd://a.md" },
          },
        ],
        stopReason: "tool_use",
      }
    : { content: [{ type: "text", text: "done" }], stopReason: "end_turn" };
}

/**
 * Host double for react alone: model, tools and events answered at once in process, so a turn
 * measures the orchestrator's own work in QuickJS (the loop, the messages it builds and the
 * host-call marshalling), without a bus or a sidecar.
 */
class InstantWorldHost extends RecordingHost {
  constructor() {
    super();
    this.config_.set("bind.astrid.llm", "replay");
    this.config_.set("tool_capsules", "react-tools");
  }
  override async ipcCall(subject: string, _kind: string, body: unknown): Promise<CallReply> {
    if (subject.startsWith("llm.")) {
      const messages = (body as { messages: { role: string }[] }).messages;
      const step = messages.filter((m) => m.role === "assistant").length;
      return {
        kind: "llm.chat.response",
        body: {
          provider: "replay",
          model: "m",
          ...modelReply(step),
          usage: { inputTokens: 10, outputTokens: 2, costMicroUsd: 0 },
        },
      };
    }
    if (subject.startsWith("tool.v1.describe.")) {
      return { kind: "tool.describe.response", body: { tools: [TOOL_SPEC] } };
    }
    const { callId } = body as { callId: string };
    return {
      kind: "tool.result",
      body: { callId, content: [{ type: "text", text: "a\n" }], isError: false },
    };
  }
}

/** react + replay + a trivial tool, each under its sidecar, with the audit chains under `root`. */
async function reactWorld(root: string, auditSync?: AuditSyncOption) {
  // The replay provider plays line N to a request holding N assistant messages: three
  // read_file calls, then the answer.
  const transcript = Array.from({ length: STEPS }, (_, i) =>
    JSON.stringify({
      provider: "anthropic",
      model: "m",
      ...modelReply(i),
      usage: { inputTokens: 10, outputTokens: 2 },
    }),
  );
  mkdirSync(path.join(root, ".astrid", "replay"), { recursive: true });
  writeFileSync(
    path.join(root, ".astrid", "replay", "transcript.jsonl"),
    `${transcript.join("\n")}\n`,
  );
  writeFileSync(path.join(root, "a.md"), "a\n");
  const w = await world(root, auditSync);
  await w.start(path.resolve("capsules/replay"), {});
  await w.start(path.resolve("test/fixtures/react/react-tools"), {});
  await w.start(
    path.resolve("capsules/react"),
    { "astrid.llm": "replay" },
    {},
    { tool_capsules: "react-tools" },
  );
  const turn = async () => {
    const r = await w.call(
      "session.v1.prompt.bench",
      "session.prompt",
      { text: "read a.md three times" },
      "session.response",
    );
    if (r.text !== "done") throw new Error(`bench: react answered ${JSON.stringify(r)}`);
  };
  await turn();
  return { w, turn };
}

async function reactSuite(): Promise<void> {
  const roots = [mkdtempSync(path.join(os.tmpdir(), "astrid-bench-react-"))];
  const shm = existsSync("/dev/shm") ? mkdtempSync("/dev/shm/astrid-bench-react-") : undefined;
  if (shm) roots.push(shm);
  const worlds = [];
  for (const r of roots) worlds.push(await reactWorld(r));
  const [disk, tmpfs] = worlds;
  // The same on disk with the opt-in audit.sync = interval (acknowledged once written).
  const intervalRoot = mkdtempSync(path.join(os.tmpdir(), "astrid-bench-react-interval-"));
  roots.push(intervalRoot);
  const interval = await reactWorld(intervalRoot, { sync: "interval", intervalMs: 10 });
  worlds.push(interval);
  const reactJs = await inQuickJs("react", "capsules/react/main.js");
  const instant = new InstantWorldHost();
  const oneStepRequest = {
    messages: [
      { role: "system", content: "s" },
      { role: "user", content: "read a.md" },
    ],
    temperature: 0,
  };
  const TURN = `react turn: ${STEPS} steps, ${STEPS - 1} tool calls`;
  try {
    const rows = await runSuite("Capsules: ReAct step overhead (model and tool time excluded)", [
      {
        name: "replay provider call alone (bus + sidecar)",
        fn: () =>
          disk!.w.call(
            "llm.v1.chat.replay",
            "llm.chat.request",
            oneStepRequest,
            "llm.chat.response",
          ),
      },
      {
        name: "read_file tool call alone (bus + sidecar)",
        fn: () =>
          disk!.w.call(
            "tool.v1.execute.read_file",
            "tool.execute.request",
            { callId: "c", tool: "read_file", arguments: { path: "cwd://a.md" } },
            "tool.result",
          ),
      },
      {
        name: "tool describe alone (bus + sidecar)",
        fn: () =>
          disk!.w.call(
            "tool.v1.describe.react-tools",
            "tool.describe.request",
            {},
            "tool.describe.response",
          ),
      },
      { name: TURN, fn: disk!.turn },
      {
        name: "replay provider call alone, audit sync=interval",
        fn: () =>
          interval.w.call(
            "llm.v1.chat.replay",
            "llm.chat.request",
            oneStepRequest,
            "llm.chat.response",
          ),
      },
      {
        name: "read_file tool call alone, audit sync=interval",
        fn: () =>
          interval.w.call(
            "tool.v1.execute.read_file",
            "tool.execute.request",
            { callId: "c", tool: "read_file", arguments: { path: "cwd://a.md" } },
            "tool.result",
          ),
      },
      {
        name: "tool describe alone, audit sync=interval",
        fn: () =>
          interval.w.call(
            "tool.v1.describe.react-tools",
            "tool.describe.request",
            {},
            "tool.describe.response",
          ),
      },
      { name: `${TURN}, audit sync=interval`, baseline: TURN, fn: interval.turn },
      ...(tmpfs ? [{ name: `${TURN}, audit on tmpfs`, baseline: TURN, fn: tmpfs.turn }] : []),
      {
        name: `${TURN}, react alone in QuickJS (instant host)`,
        baseline: TURN,
        fn: () => {
          instant.calls.length = 0;
          return reactJs.invoke("prompt", { text: "read a.md three times" }, ctx("react"), instant);
        },
      },
    ]);
    const guest = p50(rows, `${TURN}, react alone in QuickJS (instant host)`) / STEPS;
    const overheadOf = (label: string, turnRow: string, suffix: string) => {
      const turnUs = p50(rows, turnRow);
      const model = p50(rows, `replay provider call alone${suffix}`);
      const tool = p50(rows, `read_file tool call alone${suffix}`);
      const describe = p50(rows, `tool describe alone${suffix}`);
      const overhead = (turnUs - STEPS * model - (STEPS - 1) * tool - describe) / STEPS;
      console.log(
        `ReAct overhead per step, ${label} (p50): (${turnUs.toFixed(0)} turn − ${STEPS}×${model.toFixed(0)} model − ${STEPS - 1}×${tool.toFixed(0)} tool − ${describe.toFixed(0)} describe) / ${STEPS} = ${overhead.toFixed(0)} µs, of which react's own work in QuickJS ${guest.toFixed(0)} µs (goal < 2000 µs)`,
      );
    };
    console.log("");
    overheadOf("audit sync=always", TURN, " (bus + sidecar)");
    overheadOf("audit sync=interval", `${TURN}, audit sync=interval`, ", audit sync=interval");
    console.log("");
  } finally {
    await reactJs.stop();
    for (const x of worlds) await x.w.close();
    for (const r of roots) rmSync(r, { recursive: true, force: true });
  }
}

export async function main(): Promise<void> {
  const only = process.env.BENCH_CAPSULES;
  if (!only || only.includes("router")) await routerSuite();
  if (!only || only.includes("cache")) await cacheSuite();
  if (!only || only.includes("react")) await reactSuite();
}
