import { copyFileSync, mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadManifest, parseManifest } from "../core/manifest/index.js";
import { decode, encode } from "../core/protocol/envelope.js";
import type { LlmChatRequest, LlmDelta } from "../core/protocol/messages.js";
import {
  type AnthropicFake,
  PLAIN_TEXT,
  startAnthropicFake,
  TOOL_JSON,
  USAGE,
} from "./fixtures/providers/anthropic-server.js";
import { type ProviderRig, startProviderRig } from "./fixtures/providers/provider-rig.js";

const REPLAY_DIR = path.resolve("capsules/replay");
const ANTHROPIC_DIR = path.resolve("capsules/anthropic");
const TEST_MANIFEST = path.resolve("test/fixtures/providers/anthropic.Capsule.toml");
const API_KEY = "sk-ant-test-key";
/** µUSD per million tokens; chosen so the cost needs rounding up. */
const PRICES = {
  "fake-plain": { inputPerMTok: 3_000_000, outputPerMTok: 15_000_000 },
  "fake-tool": { inputPerMTok: 3_000_000, outputPerMTok: 15_000_000 },
  "fake-rate-limited": { inputPerMTok: 1_000_001, outputPerMTok: 5_000_003 },
  "fake-overloaded": { inputPerMTok: 1, outputPerMTok: 1 },
  "fake-invalid": { inputPerMTok: 1, outputPerMTok: 1 },
  "fake-malformed": { inputPerMTok: 1, outputPerMTok: 1 },
  "fake-cut": { inputPerMTok: 1, outputPerMTok: 1 },
  "fake-split": { inputPerMTok: 1, outputPerMTok: 1 },
  "fake-gated": { inputPerMTok: 1, outputPerMTok: 1 },
  "fake-stream-error": { inputPerMTok: 1, outputPerMTok: 1 },
};

let fake: AnthropicFake;
let rig: ProviderRig;
const chat = (
  provider: string,
  body: Omit<LlmChatRequest, "stream">,
  opts?: { stream?: boolean; onDelta?: (d: LlmDelta) => void },
) => rig.chat(provider, body, opts);

const user = (text: string) => ({ role: "user" as const, content: text });

function textOfDeltas(deltas: LlmDelta[]): string {
  return deltas.map((d) => d.text ?? "").join("");
}

beforeAll(async () => {
  fake = await startAnthropicFake(API_KEY);
  rig = await startProviderRig({
    tmpPrefix: "astrid-providers-",
    prepareWorkspace: (workspace) => {
      mkdirSync(path.join(workspace, ".astrid", "replay"), { recursive: true });
      copyFileSync(
        path.join(REPLAY_DIR, "transcript.jsonl"),
        path.join(workspace, ".astrid", "replay", "transcript.jsonl"),
      );
    },
    providers: [
      { name: "replay", dir: REPLAY_DIR, manifest: await loadManifest(REPLAY_DIR), env: {} },
      {
        name: "anthropic",
        dir: ANTHROPIC_DIR,
        manifest: parseManifest(readFileSync(TEST_MANIFEST, "utf8"), TEST_MANIFEST),
        env: {
          ANTHROPIC_API_KEY: API_KEY,
          ANTHROPIC_BASE_URL: fake.url,
          ANTHROPIC_PRICES: JSON.stringify(PRICES),
          ANTHROPIC_MAX_ATTEMPTS: "3",
          ANTHROPIC_RETRY_BASE_MS: "5",
        },
      },
    ],
  });
}, 60_000);

afterAll(async () => {
  await rig?.close();
  await fake?.close();
});

describe("replay capsule", () => {
  it("plays turn N from line N, streams it word by word, and says it is a replay", async () => {
    const lines = readFileSync(path.join(REPLAY_DIR, "transcript.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    const first = await chat("replay", { messages: [user("What is in the README?")] });
    expect(first.kind).toBe("llm.chat.response");
    expect(first.body).toEqual({
      provider: "replay",
      model: lines[0].model,
      content: lines[0].content,
      stopReason: "tool_use",
      usage: { ...lines[0].usage, costMicroUsd: 0 },
      metadata: {
        replay: true,
        transcript: "cwd://.astrid/replay/transcript.jsonl",
        line: 1,
        recordedProvider: "anthropic",
      },
    });
    // Word by word, in seq order, the tool call as one fragment, `done` last — all before the reply.
    expect(first.deltas.map((d) => d.seq)).toEqual(first.deltas.map((_, i) => i));
    expect(first.deltasBeforeReply).toBe(first.deltas.length);
    expect(first.deltas.slice(0, 3).map((d) => d.text)).toEqual(["I", " will", " look"]);
    expect(textOfDeltas(first.deltas)).toBe(lines[0].content[0].text);
    expect(first.deltas.at(-2)).toEqual({
      seq: first.deltas.length - 2,
      toolUse: { id: "toolu_01", name: "read_file", inputJson: '{"path":"README.md"}' },
    });
    expect(first.deltas.at(-1)).toEqual({ seq: first.deltas.length - 1, done: true });

    const second = await chat("replay", {
      messages: [
        user("What is in the README?"),
        { role: "assistant", content: lines[0].content },
        {
          role: "tool",
          content: [
            { type: "tool_result", toolUseId: "toolu_01", content: "# Astrid", isError: false },
          ],
        },
      ],
    });
    expect(second.body.content).toEqual(lines[1].content);
    expect(second.body.metadata).toMatchObject({ replay: true, line: 2 });
    expect(textOfDeltas(second.deltas)).toBe(lines[1].content[0].text);
  });

  it("refuses to stream to a subject that is not an inbox", async () => {
    const wire = encode(
      "llm.chat.request",
      { messages: [user("hi")], stream: "llm.v1.chat.anthropic" },
      { session: "s1", principal: "user:alice", capsule: "orchestrator" },
      { timeoutMs: 20_000 },
    );
    const before = fake.requests.length;
    const reply = await rig.caller.request("llm.v1.chat.replay", wire, {
      timeoutMs: 20_000,
      headers: { "astrid-token": rig.callerToken() },
    });
    expect(decode(reply.data, { checkDeadline: false }).body).toEqual({
      code: "denied",
      message:
        'replay.chat: HostError: acl: stream subject "llm.v1.chat.anthropic" is not a stream inbox (_INBOX.*.stream.>); deltas go to inboxes only',
    });
    expect(fake.requests.length).toBe(before);
  });

  it("answers without streaming when the request names no stream inbox", async () => {
    const r = await chat("replay", { messages: [user("hi")] }, { stream: false });
    expect(r.body).toMatchObject({ provider: "replay", metadata: { replay: true, line: 1 } });
    expect(r.deltas).toEqual([]);
  });
});

describe("anthropic capsule", () => {
  // react sends temperature 0 so the cache may store its steps: a falsy 0 must reach the wire,
  // not be dropped (the server's default temperature is not deterministic).
  it("passes temperature 0 through to the wire", async () => {
    const before = fake.requests.length;
    const r = await chat("anthropic", {
      model: "fake-plain",
      messages: [user("hi")],
      temperature: 0,
    });
    expect(r.kind, JSON.stringify(r.body)).toBe("llm.chat.response");
    expect(fake.requests[before]!.body.temperature).toBe(0);
  });

  it("maps the request to the Messages API and streams the text back in order", async () => {
    const before = fake.requests.length;
    const r = await chat("anthropic", {
      model: "fake-plain",
      messages: [
        { role: "system", content: "Be brief." },
        user("Say hello."),
        {
          role: "assistant",
          content: [{ type: "tool_use", id: "toolu_0", name: "add", input: { a: 1 } }],
        },
        {
          role: "tool",
          content: [{ type: "tool_result", toolUseId: "toolu_0", content: "2", isError: false }],
        },
        user("Thanks."),
      ],
      tools: [
        {
          name: "add",
          description: "adds",
          inputSchema: { type: "object", properties: { a: { type: "number" } } },
        },
      ],
      temperature: 0.5,
      stopSequences: ["END"],
    });
    expect(r.kind, JSON.stringify(r.body)).toBe("llm.chat.response");
    const sent = fake.requests[before]!;
    expect(sent.headers["x-api-key"]).toBe(API_KEY);
    expect(sent.headers["anthropic-version"]).toBe("2023-06-01");
    expect(sent.body).toEqual({
      model: "fake-plain",
      max_tokens: 4096,
      system: "Be brief.",
      messages: [
        { role: "user", content: [{ type: "text", text: "Say hello." }] },
        {
          role: "assistant",
          content: [{ type: "tool_use", id: "toolu_0", name: "add", input: { a: 1 } }],
        },
        {
          role: "user",
          content: [
            { type: "tool_result", tool_use_id: "toolu_0", content: "2" },
            { type: "text", text: "Thanks." },
          ],
        },
      ],
      tools: [
        {
          name: "add",
          description: "adds",
          input_schema: { type: "object", properties: { a: { type: "number" } } },
        },
      ],
      temperature: 0.5,
      stop_sequences: ["END"],
      stream: true,
    });
    // (1234 × 3,000,000 + 56 × 15,000,000) / 1,000,000 = 3702 + 840 µUSD.
    expect(r.body).toEqual({
      provider: "anthropic",
      model: "fake-plain",
      content: [{ type: "text", text: PLAIN_TEXT.join("") }],
      stopReason: "end_turn",
      usage: { inputTokens: USAGE.input, outputTokens: USAGE.output, costMicroUsd: 4542 },
      metadata: { anthropicStopReason: "end_turn" },
    });
    // What one read brings is sent at once, adjacent fragments merged; `done` comes last.
    expect(textOfDeltas(r.deltas)).toBe(PLAIN_TEXT.join(""));
    expect(r.deltas.map((d) => d.seq)).toEqual(r.deltas.map((_, i) => i));
    expect(r.deltas.at(-1)).toEqual({ seq: r.deltas.length - 1, done: true });
    expect(r.deltasBeforeReply).toBe(r.deltas.length);
  });

  it("passes each delta to the caller while the model is still producing", async () => {
    const seen: ((n: number) => void)[] = [];
    let count = 0;
    // The fake sends text delta i only once the caller holds delta i-1: deltas held back until
    // the end of the call would leave this waiting until the request timed out.
    fake.beforeGatedDelta = (i) =>
      new Promise<void>((resolve) => {
        if (count >= i) resolve();
        else seen.push((n) => n >= i && resolve());
      });
    const r = await chat(
      "anthropic",
      { model: "fake-gated", messages: [user("hi")] },
      {
        onDelta: () => {
          count++;
          for (const f of seen) f(count);
        },
      },
    );
    expect(r.kind).toBe("llm.chat.response");
    // Each gated fragment had to reach the caller alone before the next one was sent.
    expect(r.deltas.slice(0, PLAIN_TEXT.length).map((d) => d.text)).toEqual(PLAIN_TEXT);
  });

  it("parses a tool call from input_json_delta fragments and streams the fragments", async () => {
    const r = await chat("anthropic", { model: "fake-tool", messages: [user("add 2 and 3")] });
    expect(r.body).toMatchObject({
      content: [
        { type: "text", text: "Let me add those." },
        { type: "tool_use", id: "toolu_01A", name: "add", input: { a: 2, b: 3 } },
      ],
      stopReason: "tool_use",
    });
    const tool = r.deltas.flatMap((d) => (d.toolUse ? [d.toolUse] : []));
    // The first fragment names the tool; later ones carry only the id. Together they are the
    // arguments exactly as the API streamed them.
    expect(tool[0]).toMatchObject({ id: "toolu_01A", name: "add" });
    expect(tool.slice(1).every((t) => t.id === "toolu_01A" && t.name === undefined)).toBe(true);
    expect(tool.map((t) => t.inputJson).join("")).toBe(TOOL_JSON.join(""));
    expect(r.deltas.map((d) => d.seq)).toEqual(r.deltas.map((_, i) => i));
  });

  it("retries a 429 after its retry-after and prices the answer, rounding up", async () => {
    const before = fake.hits("rate-limited");
    const r = await chat("anthropic", { model: "fake-rate-limited", messages: [user("hi")] });
    expect(fake.hits("rate-limited") - before).toBe(2);
    // 1234 × 1,000,001 + 56 × 5,000,003 = 1,514,001,402 → 1515 µUSD (rounded up from 1514.0014).
    expect(r.body.usage).toEqual({ inputTokens: 1234, outputTokens: 56, costMicroUsd: 1515 });
    expect(r.body.content).toEqual([{ type: "text", text: PLAIN_TEXT.join("") }]);
  });

  it("gives up on 529 after the configured attempts with the API's error", async () => {
    const before = fake.hits("overloaded");
    const r = await chat("anthropic", { model: "fake-overloaded", messages: [user("hi")] });
    expect(fake.hits("overloaded") - before).toBe(3);
    expect(r.kind).toBe("error");
    expect(r.body).toEqual({
      code: "unavailable",
      message:
        "anthropic.chat: Error: anthropic: overloaded_error: Overloaded (HTTP 529); gave up after 3 attempts",
    });
  });

  it("turns a 400 into an invalid error carrying the API's type and message", async () => {
    const r = await chat("anthropic", { model: "fake-invalid", messages: [user("hi")] });
    expect(r.body).toEqual({
      code: "invalid",
      message:
        "anthropic.chat: Error: anthropic: invalid_request_error: messages.0.content: Field required (HTTP 400)",
    });
  });

  it("fails on a malformed data line instead of answering with what came before", async () => {
    const r = await chat("anthropic", { model: "fake-malformed", messages: [user("hi")] });
    expect(r.kind).toBe("error");
    expect(String(r.body.message)).toMatch(
      /^anthropic\.chat: Error: anthropic: malformed stream event "content_block_delta": data is not JSON \(.+\): \{"type":"content_block_delta","index":0,$/,
    );
  });

  it("fails when the connection drops mid-stream, even after text was streamed", async () => {
    const r = await chat("anthropic", { model: "fake-cut", messages: [user("hi")] });
    expect(r.kind).toBe("error");
    expect(r.body.code).toBe("unavailable");
    expect(String(r.body.message)).toMatch(
      /^anthropic\.chat: Error: anthropic: the stream broke after \d+ bytes, before message_stop: http stream from 127\.0\.0\.1:\d+ (closed before the body ended|broke: aborted); the answer is incomplete$/,
    );
    expect(r.deltas.some((d) => d.done)).toBe(false);
  });

  it("turns an error event inside the stream into an error reply", async () => {
    const r = await chat("anthropic", { model: "fake-stream-error", messages: [user("hi")] });
    expect(r.body).toEqual({
      code: "unavailable",
      message: "anthropic.chat: Error: anthropic: overloaded_error: Overloaded (in the stream)",
    });
  });

  it("reads a stream cut at arbitrary byte boundaries, through UTF-8 characters", async () => {
    const r = await chat("anthropic", { model: "fake-split", messages: [user("hi")] });
    expect(r.body.content).toEqual([{ type: "text", text: PLAIN_TEXT.join("") }]);
    expect(textOfDeltas(r.deltas)).toBe("Hello there, wörld €10.");
  });

  it("refuses a model missing from the price table before calling the API", async () => {
    const before = fake.requests.length;
    const r = await chat("anthropic", { model: "claude-unpriced", messages: [user("hi")] });
    expect(r.body.code).toBe("invalid");
    expect(String(r.body.message)).toContain(
      'anthropic: no price for model "claude-unpriced" in ANTHROPIC_PRICES',
    );
    expect(fake.requests.length).toBe(before);
  });

  it("ships the same manifest as the test copy, except the network grant", async () => {
    const shipped = await loadManifest(ANTHROPIC_DIR);
    const copy = parseManifest(readFileSync(TEST_MANIFEST, "utf8"), TEST_MANIFEST);
    expect(shipped.capabilities.net.map((r) => r.source)).toEqual(["https://api.anthropic.com"]);
    expect({
      ...copy,
      capabilities: { ...copy.capabilities, net: shipped.capabilities.net },
    }).toEqual(shipped);
  });

  it("left audit chains that verify, with each stream inbox and http stream recorded", async () => {
    for (const name of ["replay", "anthropic"]) {
      const actions = await rig.auditActions(name);
      expect(actions).toContain("llm.stream allow");
      if (name === "anthropic") expect(actions).toContain("net.http-open allow");
    }
  });
});
