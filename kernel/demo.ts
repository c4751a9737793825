/**
 * `make demo`: the local shape on its embedded defaults, as far as it is built today.
 *
 * Three capsules — an orchestrator, a cache and the offline replay provider — are declared by
 * Capsule.toml, wired by configuration (orchestrator → cache → provider), started in dependency
 * order on the embedded bus, and every bus operation passes the IPC ACL and lands in a signed,
 * hash-linked audit chain that is verified at the end. The `astrid` CLI and daemon (issue 5)
 * and the real capsule distribution (issue 6) will replace the hand-written handlers below.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { AuditChain, AuditKeyring, verifyChain } from "../core/audit/index.js";
import type { Bus, BusMessage } from "../core/bus/bus.js";
import { EmbeddedBus } from "../core/bus/embedded.js";
import { canonicalHash } from "../core/canonical-json.js";
import { type Manifest, parseManifest, resolveGraph } from "../core/manifest/index.js";
import { decode, encode, expectKind } from "../core/protocol/envelope.js";
import type { LlmChatRequest, LlmChatResponse } from "../core/protocol/messages.js";
import { subjects } from "../core/protocol/topics.js";
import { IpcAcl } from "../core/security/acl/ipc-acl.js";

const SESSION = "demo";
const PRINCIPAL = "user:demo";

const manifests: Record<string, string> = {
  replay: `
[package]
name = "replay"
version = "0.1.0"
description = "Offline provider: plays back a recorded answer"
[exports.astrid]
llm = "1.0.0"
[capabilities]
ipc_subscribe = ["llm.v1.chat.replay"]
[static]
prompts = [{ name = "answer", text = "(replay provider: recorded answer, no model was called) Capsules are swapped by configuration." }]
`,
  cache: `
[package]
name = "cache"
version = "0.1.0"
description = "Answers repeated LLM requests from memory"
[imports.astrid]
llm = "^1.0"
[exports.astrid]
llm = "1.0.0"
[capabilities]
ipc_subscribe = ["llm.v1.chat.cache"]
ipc_publish = ["llm.v1.chat.*"]
[static]
prompts = []
`,
  react: `
[package]
name = "react"
version = "0.1.0"
description = "Orchestrator"
[imports.astrid]
llm = "^1.0"
[capabilities]
ipc_publish = ["llm.v1.chat.*"]
[static]
prompts = []
`,
};

/** A capsule's only door to the bus: the ACL decides, the audit chain records, then it acts. */
class Door {
  readonly acl: IpcAcl;
  constructor(
    readonly name: string,
    manifest: Manifest,
    private readonly bus: Bus,
    private readonly audit: AuditChain,
  ) {
    this.acl = new IpcAcl(
      {
        publish: manifest.capabilities.ipc_publish,
        subscribe: manifest.capabilities.ipc_subscribe,
      },
      { capsuleId: name },
    );
  }

  private async record(action: string, target: string, allowed: boolean, why: string) {
    await this.audit.append({
      session: SESSION,
      principal: PRINCIPAL,
      capsule: this.name,
      layer: "acl",
      action,
      target,
      decision: allowed ? "allow" : "deny",
      reason: why,
    });
  }

  async serve(subject: string, handler: (req: LlmChatRequest) => Promise<LlmChatResponse>) {
    const d = this.acl.checkSubscribe(subject);
    await this.record("ipc.subscribe", subject, d.allowed, d.allowed ? d.rule : d.reason);
    if (!d.allowed) throw new Error(`${this.name}: ${d.reason}`);
    this.bus.subscribe(subject, async (msg: BusMessage) => {
      const req = expectKind(decode(msg.data), "llm.chat.request");
      const res = await handler(req.body);
      const meta = { session: SESSION, principal: PRINCIPAL, capsule: this.name };
      msg.respond(encode("llm.chat.response", res, meta));
    });
  }

  async ask(subject: string, req: LlmChatRequest): Promise<LlmChatResponse> {
    const d = this.acl.checkPublish(subject);
    await this.record("ipc.publish", subject, d.allowed, d.allowed ? d.rule : d.reason);
    if (!d.allowed) throw new Error(`denied by IPC ACL: ${d.reason}`);
    const meta = { session: SESSION, principal: PRINCIPAL, capsule: this.name };
    const wire = encode("llm.chat.request", req, meta, { timeoutMs: 5000 });
    const reply = await this.bus.request(subject, wire, { timeoutMs: 5000 });
    return expectKind(decode(reply.data), "llm.chat.response").body;
  }
}

async function main() {
  const home = mkdtempSync(path.join(os.tmpdir(), "astrid-demo-"));
  const parsed = Object.fromEntries(
    Object.entries(manifests).map(([n, src]) => [n, parseManifest(src, `${n}/Capsule.toml`)]),
  );
  // Interposing the cache is this one line of configuration; no capsule knows about it.
  const plan = resolveGraph(Object.values(parsed), {
    react: { "astrid.llm": "cache" },
    cache: { "astrid.llm": "replay" },
  });
  console.log(`start order: ${plan.order.join(" → ")}`);
  for (const b of plan.bindings) {
    console.log(
      `  ${b.importer} imports ${b.interface} ${b.range} from ${b.exporter}@${b.version}`,
    );
  }
  const target = (importer: string) =>
    plan.bindings.find((b) => b.importer === importer && b.interface === "astrid.llm")!.exporter;

  const { privateKey } = generateKeyPairSync("ed25519");
  const audit = await AuditChain.open(path.join(home, "audit"), { key: privateKey, keyId: "demo" });
  const bus = new EmbeddedBus();
  const doors = Object.fromEntries(
    Object.entries(parsed).map(([n, m]) => [n, new Door(n, m, bus, audit)]),
  ) as Record<string, Door>;

  const replayEngine = parsed.replay!.engine;
  const recorded = replayEngine.type === "static" ? replayEngine.prompts[0] : undefined;
  const answer = recorded?.text ?? "(replay provider)";
  let providerCalls = 0;
  for (const name of plan.order) {
    if (name === "replay") {
      await doors.replay!.serve(subjects.llmChat("replay"), async () => {
        providerCalls++;
        return {
          provider: "replay",
          model: "recorded",
          content: [{ type: "text", text: answer }],
          stopReason: "end_turn",
          usage: { inputTokens: 12, outputTokens: 9, costMicroUsd: 0 },
        };
      });
    } else if (name === "cache") {
      const memo = new Map<string, LlmChatResponse>();
      await doors.cache!.serve(subjects.llmChat("cache"), async (req) => {
        const key = canonicalHash(req);
        const hit = memo.get(key);
        if (hit) return { ...hit, metadata: { ...hit.metadata, cache: "hit" } };
        const res = await doors.cache!.ask(subjects.llmChat(target("cache")), req);
        memo.set(key, res);
        return { ...res, metadata: { ...res.metadata, cache: "miss" } };
      });
    }
    console.log(`started ${name}`);
  }

  const prompt: LlmChatRequest = {
    messages: [{ role: "user", content: "Why are capsules swapped by configuration?" }],
  };
  for (const turn of [1, 2]) {
    const res = await doors.react!.ask(subjects.llmChat(target("react")), prompt);
    const text = res.content.map((c) => (c.type === "text" ? c.text : "")).join("");
    console.log(`turn ${turn} [cache ${String(res.metadata?.cache)}]: ${text}`);
  }
  console.log(`provider saw ${providerCalls} request(s) for 2 identical turns`);

  // A capsule reaching outside its manifest is refused before the bus sees it, and audited.
  try {
    await doors.cache!.ask("tool.v1.execute.shell", prompt);
  } catch (err) {
    console.log(`cache → tool.v1.execute.shell: ${(err as Error).message}`);
  }

  await bus.close();
  await audit.close();
  const keyring = new AuditKeyring([["demo", privateKey]]);
  const verdict = await verifyChain(path.join(home, "audit"), keyring);
  console.log(
    verdict.ok
      ? `audit chain verified: ${verdict.entries} entries, last hash ${verdict.lastHash.slice(0, 16)}…`
      : `audit chain BROKEN: ${verdict.error.message}`,
  );
  rmSync(home, { recursive: true, force: true });
  if (!verdict.ok) process.exit(1);
}

await main();
