/**
 * The router's decision and fallback, run in the real QuickJS engine (the file the sidecar
 * loads): decideRoute is a pure function exported as a handler, so the rule language is tested
 * directly, table by table; chat runs against the RecordingHost test double with providers that
 * fail as the test says. The session path is covered in test/cache-router.test.ts.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type CallContext,
  type CallReply,
  HostError,
  type HostErrorCode,
} from "../../sidecar/abi/host.js";
import { QuickJsEngine } from "../../sidecar/engine/wasm/quickjs-engine.js";
import { RecordingHost } from "../../test/fixtures/wasm/recording-host.js";

const SOURCE = readFileSync(path.resolve("capsules/router/main.js"), "utf8");
const ctx: CallContext = {
  callId: "c1",
  session: "s",
  principal: "user:a",
  capsule: "router",
  token: undefined,
  deadline: Date.now() + 60_000,
};
const RULES = JSON.stringify([
  { when: { modelHint: "Opus" }, use: "big" },
  { when: { maxCostMicroUsd: 100 }, use: "cheap" },
  { when: { hasTools: true, minComplexity: 2000 }, use: "big" },
  { when: { maxInputChars: 10, maxComplexity: 10 }, use: "cheap" },
]);

/** Providers answer with their name, or fail with the code the test gives them. */
class RouterHost extends RecordingHost {
  readonly asked: string[] = [];
  constructor(
    private readonly failures: Record<string, HostErrorCode> = {},
    settings: Record<string, string> = { ROUTER_PROVIDERS: "cheap, mid,big", ROUTER_RULES: RULES },
  ) {
    super();
    for (const [k, v] of Object.entries(settings)) this.config_.set(k, v);
  }
  override async ipcCall(subject: string): Promise<CallReply> {
    const name = subject.slice("llm.v1.chat.".length);
    this.asked.push(name);
    const code = this.failures[name];
    if (code) throw new HostError(code, `${name} is ${code}`);
    return {
      kind: "llm.chat.response",
      body: {
        provider: name,
        model: "m",
        content: [{ type: "text", text: name }],
        stopReason: "end_turn",
        usage: { inputTokens: 1, outputTokens: 1 },
        metadata: { from: name },
      },
    };
  }
}

let engine: QuickJsEngine;

beforeAll(async () => {
  engine = await QuickJsEngine.create({
    source: SOURCE,
    memoryMb: 32,
    stackKb: 256,
    timeoutMs: 10_000,
    name: "router",
  });
});

afterAll(async () => {
  await engine.stop();
});

const user = (content: string) => [{ role: "user", content }];
const decide = (request: unknown, rules: string | null = RULES, providers = "cheap,mid,big") =>
  engine.invoke(
    "decideRoute",
    { request, providers, ...(rules === null ? {} : { rules }) },
    ctx,
    new RecordingHost(),
  );

describe("decideRoute", () => {
  it("takes the first rule whose conditions all hold, then the other providers in order", async () => {
    const tool = { name: "t", description: "", inputSchema: {} };
    const table: [unknown, unknown][] = [
      [
        { messages: user("hi"), model: "claude-OPUS-4" },
        {
          order: ["big", "cheap", "mid"],
          chose: "big",
          reason: 'rule 1: model "claude-OPUS-4" asks for "Opus"',
        },
      ],
      [
        { messages: user("a long question, more than ten"), metadata: { maxCostMicroUsd: 50 } },
        {
          order: ["cheap", "mid", "big"],
          chose: "cheap",
          reason: "rule 2: cost ceiling 50 µUSD ≤ 100",
        },
      ],
      [
        { messages: user("x".repeat(1000)), tools: [tool] },
        {
          order: ["big", "cheap", "mid"],
          chose: "big",
          reason: "rule 3: 1 tools offered, complexity 2000 ≥ 2000",
        },
      ],
      [
        { messages: [{ role: "user", content: [{ type: "text", text: "short" }] }] },
        {
          order: ["cheap", "mid", "big"],
          chose: "cheap",
          reason: "rule 4: input 5 chars ≤ 10, complexity 5 ≤ 10",
        },
      ],
      [
        // Short, but one tool makes it complex: rule 4 needs both conditions.
        { messages: user("short"), tools: [tool] },
        {
          order: ["cheap", "mid", "big"],
          chose: "cheap",
          reason: "no rule matched: first provider",
        },
      ],
    ];
    for (const [request, want] of table) expect(await decide(request)).toEqual(want);
    expect(await decide({ messages: user("hi") }, null, "mid,big")).toEqual({
      order: ["mid", "big"],
      chose: "mid",
      reason: "no rules: first provider",
    });
  });

  it("counts tool calls and tool results of earlier turns as input", async () => {
    const messages = [
      { role: "user", content: "q" },
      { role: "assistant", content: [{ type: "tool_use", id: "t1", name: "f", input: { a: 1 } }] },
      {
        role: "tool",
        content: [{ type: "tool_result", toolUseId: "t1", content: "abcd", isError: false }],
      },
    ];
    expect(await engine.invoke("describeRequest", { messages }, ctx, new RecordingHost())).toEqual({
      inputChars: 1 + '{"a":1}'.length + 4,
      tools: 0,
      complexity: 12,
    });
  });

  it("refuses rules it cannot follow, naming the rule and what was expected", async () => {
    const bad: [string | null, string, string][] = [
      [null, "", "router: ROUTER_PROVIDERS names no provider"],
      [null, "cheap,Big", 'router: ROUTER_PROVIDERS: "Big" is not a capsule name'],
      [null, "cheap,cheap", "router: ROUTER_PROVIDERS names a provider twice"],
      ["{", "cheap", "router: ROUTER_RULES is not JSON: "],
      ['{"use":"cheap"}', "cheap", "router: ROUTER_RULES must be a JSON array of rules"],
      [
        '[{"use":"gpt"}]',
        "cheap,big",
        'router: ROUTER_RULES[0].use must be one of ROUTER_PROVIDERS (cheap, big), got "gpt"',
      ],
      [
        '[{"use":"cheap","if":{}}]',
        "cheap",
        'router: ROUTER_RULES[0] has unknown field "if"; expected when, use',
      ],
      [
        '[{"use":"cheap"},{"use":"cheap","when":{"maxChars":5}}]',
        "cheap",
        'router: ROUTER_RULES[1].when has unknown condition "maxChars"; known: maxInputChars, minInputChars, maxComplexity, minComplexity, modelHint, maxCostMicroUsd, hasTools',
      ],
      [
        '[{"use":"cheap","when":{"maxInputChars":"5"}}]',
        "cheap",
        'router: ROUTER_RULES[0].when.maxInputChars must be a number, got "5"',
      ],
    ];
    for (const [rules, providers, message] of bad) {
      await expect(decide({ messages: user("q") }, rules, providers)).rejects.toThrow(
        `router.decideRoute: Error: ${message}`,
      );
    }
  });
});

describe("router chat", () => {
  it("answers from the chosen provider and explains the choice", async () => {
    const host = new RouterHost();
    const out = (await engine.invoke("chat", { messages: user("hi") }, ctx, host)) as {
      metadata: unknown;
    };
    expect(out.metadata).toEqual({
      from: "cheap",
      router: {
        chose: "cheap",
        reason: "rule 4: input 2 chars ≤ 10, complexity 2 ≤ 10",
        answered: "cheap",
        tried: [{ provider: "cheap", outcome: "ok" }],
      },
    });
  });

  it("falls back on unavailable, timeout and io, in preference order", async () => {
    const host = new RouterHost({ cheap: "timeout", mid: "io" });
    const out = (await engine.invoke("chat", { messages: user("hi") }, ctx, host)) as {
      provider: string;
      metadata: { router: unknown };
    };
    expect(out.provider).toBe("big");
    expect(out.metadata.router).toEqual({
      chose: "cheap",
      reason: "rule 4: input 2 chars ≤ 10, complexity 2 ≤ 10",
      answered: "big",
      tried: [
        { provider: "cheap", outcome: "timeout", message: "cheap is timeout" },
        { provider: "mid", outcome: "io", message: "mid is io" },
        { provider: "big", outcome: "ok" },
      ],
    });
  });

  it("passes a denial or a spent budget on without trying another provider", async () => {
    for (const code of ["denied", "budget", "invalid"] as const) {
      const host = new RouterHost({ cheap: code });
      const err = await engine.invoke("chat", { messages: user("hi") }, ctx, host).catch((e) => e);
      expect(err).toMatchObject({
        code: "guest_error",
        guestCode: code,
        message: `router.chat: Error: router: cheap refused (${code}), not falling back: cheap is ${code}`,
      });
      expect(host.asked).toEqual(["cheap"]);
    }
  });

  it("fails unavailable when every provider is down, listing them", async () => {
    const host = new RouterHost({ cheap: "unavailable", mid: "unavailable", big: "timeout" });
    const err = await engine.invoke("chat", { messages: user("hi") }, ctx, host).catch((e) => e);
    expect(err).toMatchObject({
      guestCode: "unavailable",
      message:
        "router.chat: Error: router: every provider failed: cheap (unavailable), mid (unavailable), big (timeout)",
    });
  });

  it("uses the bound provider alone when ROUTER_PROVIDERS is unset", async () => {
    const host = new RouterHost({}, { "bind.astrid.llm": "anthropic" });
    const out = (await engine.invoke("chat", { messages: user("hi") }, ctx, host)) as {
      provider: string;
    };
    expect([out.provider, host.asked]).toEqual(["anthropic", ["anthropic"]]);
  });
});
