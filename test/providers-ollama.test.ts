import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadManifest, parseManifest } from "../core/manifest/index.js";
import type { LlmChatRequest, LlmDelta } from "../core/protocol/messages.js";
import {
  OLLAMA_TEXT,
  OLLAMA_USAGE,
  type OllamaFake,
  startOllamaFake,
} from "./fixtures/providers/ollama-server.js";
import { type ProviderRig, startProviderRig } from "./fixtures/providers/provider-rig.js";

const DIR = path.resolve("capsules/ollama");
const NAME = "ollama";
const TEST_MANIFEST = path.resolve("test/fixtures/providers/ollama.Capsule.toml");
let fake: OllamaFake;
let rig: ProviderRig;
const chat = (body: Omit<LlmChatRequest, "stream">) => rig.chat(NAME, body);

const user = (text: string) => ({ role: "user" as const, content: text });
const textOfDeltas = (deltas: LlmDelta[]) => deltas.map((d) => d.text ?? "").join("");

beforeAll(async () => {
  fake = await startOllamaFake();
  rig = await startProviderRig({
    tmpPrefix: "astrid-ollama-",
    providers: [
      {
        name: NAME,
        dir: DIR,
        manifest: parseManifest(readFileSync(TEST_MANIFEST, "utf8"), TEST_MANIFEST),
        env: {
          OLLAMA_BASE_URL: fake.url,
          OLLAMA_MODEL: "fake-plain",
          OLLAMA_MAX_ATTEMPTS: "3",
          OLLAMA_RETRY_BASE_MS: "5",
        },
      },
    ],
  });
}, 60_000);

afterAll(async () => {
  await rig?.close();
  await fake?.close();
});

describe("ollama capsule", () => {
  // react sends temperature 0 so the cache may store its steps: a falsy 0 must reach the wire,
  // not be dropped (the server's default temperature is not deterministic).
  it("passes temperature 0 through to the wire", async () => {
    const before = fake.requests.length;
    const r = await chat({ model: "fake-plain", messages: [user("hi")], temperature: 0 });
    expect(r.kind, JSON.stringify(r.body)).toBe("llm.chat.response");
    expect((fake.requests[before]!.body.options as { temperature?: unknown }).temperature).toBe(0);
  });

  it("maps the request to /api/chat and streams the text back in order", async () => {
    const before = fake.requests.length;
    const r = await chat({
      model: "fake-plain",
      messages: [
        { role: "system", content: "Be brief." },
        user("Say hello."),
        {
          role: "assistant",
          content: [
            { type: "text", text: "Adding." },
            { type: "tool_use", id: "call_0", name: "add", input: { a: 1 } },
          ],
        },
        {
          role: "tool",
          content: [
            { type: "tool_result", toolUseId: "call_0", content: "2", isError: false },
            { type: "tool_result", toolUseId: "call_9", content: "no such file", isError: true },
          ],
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
      maxTokens: 100,
      temperature: 0.5,
      stopSequences: ["END"],
    });
    expect(r.kind, JSON.stringify(r.body)).toBe("llm.chat.response");
    expect(fake.requests[before]!.body).toEqual({
      model: "fake-plain",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Say hello." },
        {
          role: "assistant",
          content: "Adding.",
          tool_calls: [{ function: { name: "add", arguments: { a: 1 } } }],
        },
        // A result is named after the call it answers; one whose call is unknown goes unnamed.
        { role: "tool", content: "2", tool_name: "add" },
        { role: "tool", content: "Error: no such file" },
        { role: "user", content: "Thanks." },
      ],
      tools: [
        {
          type: "function",
          function: {
            name: "add",
            description: "adds",
            parameters: { type: "object", properties: { a: { type: "number" } } },
          },
        },
      ],
      options: { temperature: 0.5, num_predict: 100, stop: ["END"] },
      stream: true,
    });
    expect(r.body).toEqual({
      provider: "ollama",
      model: "fake-plain",
      content: [{ type: "text", text: OLLAMA_TEXT.join("") }],
      stopReason: "end_turn",
      usage: { inputTokens: OLLAMA_USAGE.prompt, outputTokens: OLLAMA_USAGE.eval, costMicroUsd: 0 },
      metadata: { doneReason: "stop" },
    });
    expect(textOfDeltas(r.deltas)).toBe(OLLAMA_TEXT.join(""));
    expect(r.deltas.map((d) => d.seq)).toEqual(r.deltas.map((_, i) => i));
    expect(r.deltas.at(-1)).toEqual({ seq: r.deltas.length - 1, done: true });
    expect(r.deltasBeforeReply).toBe(r.deltas.length);
  });

  it("uses OLLAMA_MODEL when the request names no model", async () => {
    const before = fake.requests.length;
    const r = await chat({ messages: [user("hi")] });
    expect(fake.requests[before]!.body.model).toBe("fake-plain");
    expect(r.body.model).toBe("fake-plain");
  });

  it("streams whole tool calls, giving an id to those Ollama sent without one", async () => {
    const r = await chat({ model: "fake-tool", messages: [user("add 2 and 3, read README")] });
    expect(r.kind, JSON.stringify(r.body)).toBe("llm.chat.response");
    const content = r.body.content as { type: string; id?: string }[];
    const generated = content[1]?.id;
    expect(generated).toMatch(/^call_[0-9a-f]{16}$/);
    expect(r.body).toMatchObject({
      content: [
        { type: "text", text: "Let me check." },
        { type: "tool_use", id: generated, name: "add", input: { a: 2, b: 3 } },
        { type: "tool_use", id: "call_ollama1", name: "read_file", input: { path: "README.md" } },
      ],
      // Ollama says "stop" after tool calls too; the calls decide.
      stopReason: "tool_use",
      usage: { inputTokens: 26, outputTokens: 282, costMicroUsd: 0 },
    });
    expect(r.deltas.flatMap((d) => (d.toolUse ? [d.toolUse] : []))).toEqual([
      { id: generated, name: "add", inputJson: '{"a":2,"b":3}' },
      { id: "call_ollama1", name: "read_file", inputJson: '{"path":"README.md"}' },
    ]);
    expect(r.deltas.map((d) => d.seq)).toEqual(r.deltas.map((_, i) => i));
    expect(r.deltasBeforeReply).toBe(r.deltas.length);
  });

  it("maps done_reason length to max_tokens", async () => {
    const r = await chat({ model: "fake-length", messages: [user("hi")] });
    expect(r.body).toMatchObject({ stopReason: "max_tokens", metadata: { doneReason: "length" } });
  });

  it("retries a 429 after its retry-after, then answers", async () => {
    const before = fake.hits("rate-limited");
    const r = await chat({ model: "fake-rate-limited", messages: [user("hi")] });
    expect(fake.hits("rate-limited") - before).toBe(2);
    expect(r.body.content).toEqual([{ type: "text", text: OLLAMA_TEXT.join("") }]);
  });

  it("gives up on 503 after the configured attempts with the server's error", async () => {
    const before = fake.hits("unavailable");
    const r = await chat({ model: "fake-unavailable", messages: [user("hi")] });
    expect(fake.hits("unavailable") - before).toBe(3);
    expect(r.body).toEqual({
      code: "unavailable",
      message:
        "ollama.chat: Error: ollama: server busy, please try again.  maximum pending requests exceeded (HTTP 503); gave up after 3 attempts",
    });
  });

  it("turns a 400 into an invalid error carrying the server's message", async () => {
    const r = await chat({ model: "fake-invalid", messages: [user("hi")] });
    expect(r.body).toEqual({
      code: "invalid",
      message: "ollama.chat: Error: ollama: invalid message format (HTTP 400)",
    });
  });

  it("turns a model that is not pulled (404) into not_found", async () => {
    const r = await chat({ model: "llama-unpulled", messages: [user("hi")] });
    expect(r.body).toEqual({
      code: "not_found",
      message:
        'ollama.chat: Error: ollama: model "llama-unpulled" not found, try pulling it first (HTTP 404)',
    });
  });

  it("fails on a malformed line instead of answering with what came before", async () => {
    const r = await chat({ model: "fake-malformed", messages: [user("hi")] });
    expect(r.kind).toBe("error");
    expect(String(r.body.message)).toMatch(
      /^ollama\.chat: Error: ollama: malformed stream line: not JSON \(.+\): \{"model":"fake-malformed","message":\{"role":"assistant",$/,
    );
    expect(r.deltas.some((d) => d.done)).toBe(false);
  });

  it("fails when the connection drops mid-stream, even after text was streamed", async () => {
    const r = await chat({ model: "fake-cut", messages: [user("hi")] });
    expect(r.body.code).toBe("unavailable");
    expect(String(r.body.message)).toMatch(
      /^ollama\.chat: Error: ollama: the stream broke after \d+ bytes, before "done": true: http stream from 127\.0\.0\.1:\d+ (closed before the body ended|broke: aborted); the answer is incomplete$/,
    );
    expect(textOfDeltas(r.deltas)).toBe("Hello there,");
    expect(r.deltas.some((d) => d.done)).toBe(false);
  });

  it("turns an error line inside the stream into an error reply", async () => {
    const r = await chat({ model: "fake-stream-error", messages: [user("hi")] });
    expect(r.body).toEqual({
      code: "unavailable",
      message:
        "ollama.chat: Error: ollama: an error was encountered while running the model: unexpected EOF (in the stream)",
    });
  });

  it("reads a stream cut at arbitrary byte boundaries, through UTF-8 characters", async () => {
    const r = await chat({ model: "fake-split", messages: [user("hi")] });
    expect(r.body.content).toEqual([{ type: "text", text: OLLAMA_TEXT.join("") }]);
    expect(textOfDeltas(r.deltas)).toBe("Hello there, wörld €10.");
  });

  it("ships the same manifest as the test copy, except the network grant", async () => {
    const shipped = await loadManifest(DIR);
    const copy = parseManifest(readFileSync(TEST_MANIFEST, "utf8"), TEST_MANIFEST);
    expect(shipped.capabilities.net.map((r) => r.source)).toEqual(["http://127.0.0.1:11434"]);
    expect({
      ...copy,
      capabilities: { ...copy.capabilities, net: shipped.capabilities.net },
    }).toEqual(shipped);
  });

  it("left an audit chain that verifies, with the stream inbox and http stream recorded", async () => {
    const actions = await rig.auditActions(NAME);
    expect(actions).toContain("llm.stream allow");
    expect(actions).toContain("net.http-open allow");
  });
});
