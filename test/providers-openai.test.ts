import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadManifest } from "../core/manifest/index.js";
import type { LlmChatRequest, LlmDelta } from "../core/protocol/messages.js";
import {
  OPENAI_TEXT,
  OPENAI_TOOL_ARGS,
  OPENAI_USAGE,
  type OpenAiFake,
  startOpenAiFake,
} from "./fixtures/providers/openai-server.js";
import { type ProviderRig, startProviderRig } from "./fixtures/providers/provider-rig.js";

const DIR = path.resolve("capsules/openai-compatible");
const NAME = "openai-compatible";
const API_KEY = "sk-test-openai-key";
/** µUSD per million tokens; "*" prices the error scenarios, which never reach a usage chunk. */
const PRICES = {
  "fake-plain": { inputPerMTok: 150_000, outputPerMTok: 600_000 },
  "fake-rate-limited": { inputPerMTok: 1_000_001, outputPerMTok: 5_000_003 },
  "*": { inputPerMTok: 0, outputPerMTok: 0 },
};

interface Rig {
  fake: OpenAiFake;
  capsule: ProviderRig;
}
let rig: Rig;

const chat = (body: Omit<LlmChatRequest, "stream">, on: Rig = rig) => on.capsule.chat(NAME, body);

const user = (text: string) => ({ role: "user" as const, content: text });
const textOfDeltas = (deltas: LlmDelta[]) => deltas.map((d) => d.text ?? "").join("");

/** The fake API and the capsule under a sidecar with the given env. */
async function startRig(env: Record<string, string>, fakeKey: string | undefined): Promise<Rig> {
  const fake = await startOpenAiFake(fakeKey);
  try {
    const capsule = await startProviderRig({
      tmpPrefix: "astrid-openai-",
      providers: [
        {
          name: NAME,
          dir: DIR,
          manifest: await loadManifest(DIR),
          env: { OPENAI_COMPATIBLE_BASE_URL: `${fake.url}/`, ...env },
        },
      ],
    });
    return { fake, capsule };
  } catch (err) {
    await fake.close();
    throw err;
  }
}

async function stopRig(r: Rig | undefined) {
  await r?.capsule.close();
  await r?.fake.close();
}

beforeAll(async () => {
  rig = await startRig(
    {
      OPENAI_COMPATIBLE_API_KEY: API_KEY,
      OPENAI_COMPATIBLE_PRICES: JSON.stringify(PRICES),
      OPENAI_COMPATIBLE_MAX_ATTEMPTS: "3",
      OPENAI_COMPATIBLE_RETRY_BASE_MS: "5",
    },
    API_KEY,
  );
}, 60_000);

afterAll(() => stopRig(rig));

describe("openai-compatible capsule", () => {
  // react sends temperature 0 so the cache may store its steps: a falsy 0 must reach the wire,
  // not be dropped (the server's default temperature is not deterministic).
  it("passes temperature 0 through to the wire", async () => {
    const before = rig.fake.requests.length;
    const r = await chat({ model: "fake-plain", messages: [user("hi")], temperature: 0 });
    expect(r.kind, JSON.stringify(r.body)).toBe("llm.chat.response");
    expect(rig.fake.requests[before]!.body.temperature).toBe(0);
  });

  it("maps the request to Chat Completions and streams the text back in order", async () => {
    const before = rig.fake.requests.length;
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
            { type: "tool_result", toolUseId: "call_1", content: "no such file", isError: true },
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
    const sent = rig.fake.requests[before]!;
    expect(sent.headers.authorization).toBe(`Bearer ${API_KEY}`);
    expect(sent.body).toEqual({
      model: "fake-plain",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Say hello." },
        {
          role: "assistant",
          content: "Adding.",
          tool_calls: [
            { id: "call_0", type: "function", function: { name: "add", arguments: '{"a":1}' } },
          ],
        },
        { role: "tool", tool_call_id: "call_0", content: "2" },
        { role: "tool", tool_call_id: "call_1", content: "Error: no such file" },
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
      max_tokens: 100,
      temperature: 0.5,
      stop: ["END"],
      stream: true,
      stream_options: { include_usage: true },
    });
    // 1234 × 150,000 + 56 × 600,000 = 218,700,000 → 219 µUSD (rounded up from 218.7).
    expect(r.body).toEqual({
      provider: "openai-compatible",
      model: "fake-plain",
      content: [{ type: "text", text: OPENAI_TEXT.join("") }],
      stopReason: "end_turn",
      usage: {
        inputTokens: OPENAI_USAGE.prompt,
        outputTokens: OPENAI_USAGE.completion,
        costMicroUsd: 219,
      },
      metadata: { finishReason: "stop" },
    });
    expect(textOfDeltas(r.deltas)).toBe(OPENAI_TEXT.join(""));
    expect(r.deltas.map((d) => d.seq)).toEqual(r.deltas.map((_, i) => i));
    expect(r.deltas.at(-1)).toEqual({ seq: r.deltas.length - 1, done: true });
    expect(r.deltasBeforeReply).toBe(r.deltas.length);
  });

  it("assembles parallel tool calls from index-keyed fragments and streams them", async () => {
    const r = await chat({ model: "fake-tool", messages: [user("add 2 and 3, read README")] });
    expect(r.body).toMatchObject({
      content: [
        { type: "text", text: "Let me check." },
        { type: "tool_use", id: "call_0abc", name: "add", input: { a: 2, b: 3 } },
        { type: "tool_use", id: "call_1abc", name: "read_file", input: { path: "README.md" } },
      ],
      stopReason: "tool_use",
      usage: { inputTokens: 1234, outputTokens: 56, costMicroUsd: 0 },
      metadata: { finishReason: "tool_calls" },
    });
    const tool = r.deltas.flatMap((d) => (d.toolUse ? [d.toolUse] : []));
    for (const [i, name] of ["add", "read_file"].entries()) {
      const frags = tool.filter((t) => t.id === `call_${i}abc`);
      // The first fragment names the tool; later ones carry only the id.
      expect(frags[0]?.name).toBe(name);
      expect(frags.slice(1).every((t) => t.name === undefined)).toBe(true);
      expect(frags.map((t) => t.inputJson).join("")).toBe(OPENAI_TOOL_ARGS[i]!.join(""));
    }
    expect(r.deltas.map((d) => d.seq)).toEqual(r.deltas.map((_, i) => i));
    expect(r.deltasBeforeReply).toBe(r.deltas.length);
  });

  it("retries a 429 after its retry-after and prices the answer, rounding up", async () => {
    const before = rig.fake.hits("rate-limited");
    const r = await chat({ model: "fake-rate-limited", messages: [user("hi")] });
    expect(rig.fake.hits("rate-limited") - before).toBe(2);
    // 1234 × 1,000,001 + 56 × 5,000,003 = 1,514,001,402 → 1515 µUSD.
    expect(r.body.usage).toEqual({ inputTokens: 1234, outputTokens: 56, costMicroUsd: 1515 });
    expect(r.body.content).toEqual([{ type: "text", text: OPENAI_TEXT.join("") }]);
  });

  it("gives up on 503 after the configured attempts with the server's error", async () => {
    const before = rig.fake.hits("unavailable");
    const r = await chat({ model: "fake-unavailable", messages: [user("hi")] });
    expect(rig.fake.hits("unavailable") - before).toBe(3);
    expect(r.body).toEqual({
      code: "unavailable",
      message:
        "openai-compatible.chat: Error: openai-compatible: server_error: The server is overloaded or not ready yet. (HTTP 503); gave up after 3 attempts",
    });
  });

  it("turns a 400 into an invalid error carrying the API's type and message", async () => {
    const before = rig.fake.hits("invalid");
    const r = await chat({ model: "fake-invalid", messages: [user("hi")] });
    expect(rig.fake.hits("invalid") - before).toBe(1);
    expect(r.body).toEqual({
      code: "invalid",
      message:
        "openai-compatible.chat: Error: openai-compatible: invalid_request_error: Invalid type for 'messages[0].content': expected a string. (HTTP 400)",
    });
  });

  it("turns an unknown model (404) into not_found", async () => {
    const r = await chat({ model: "gpt-nonexistent", messages: [user("hi")] });
    expect(r.body).toEqual({
      code: "not_found",
      message:
        "openai-compatible.chat: Error: openai-compatible: invalid_request_error: The model `gpt-nonexistent` does not exist or you do not have access to it. (HTTP 404)",
    });
  });

  it("fails on a malformed data line instead of answering with what came before", async () => {
    const r = await chat({ model: "fake-malformed", messages: [user("hi")] });
    expect(r.kind).toBe("error");
    expect(String(r.body.message)).toMatch(
      /^openai-compatible\.chat: Error: openai-compatible: malformed stream chunk: data is not JSON \(.+\): \{"id":"chatcmpl-9xFakeD0ub1e","choices":\[\{"index":0,$/,
    );
    expect(r.deltas.some((d) => d.done)).toBe(false);
  });

  it("fails when the connection drops mid-stream, even after text was streamed", async () => {
    const r = await chat({ model: "fake-cut", messages: [user("hi")] });
    expect(r.body.code).toBe("unavailable");
    expect(String(r.body.message)).toMatch(
      /^openai-compatible\.chat: Error: openai-compatible: the stream broke after \d+ bytes, before \[DONE\]: http stream from 127\.0\.0\.1:\d+ (closed before the body ended|broke: aborted); the answer is incomplete$/,
    );
    expect(textOfDeltas(r.deltas)).toBe("Hello there,");
    expect(r.deltas.some((d) => d.done)).toBe(false);
  });

  it("turns an error chunk inside the stream into an error reply", async () => {
    const r = await chat({ model: "fake-stream-error", messages: [user("hi")] });
    expect(r.body).toEqual({
      message:
        "openai-compatible.chat: Error: openai-compatible: server_error: The model produced invalid content. (in the stream)",
      code: "unavailable",
    });
  });

  it("refuses a turn whose stream carried no usage: the ledger could not count it", async () => {
    const r = await chat({ model: "fake-no-usage", messages: [user("hi")] });
    expect(r.body.message).toBe(
      "openai-compatible.chat: Error: openai-compatible: the stream carried no usage; expected a final chunk with usage (stream_options.include_usage)",
    );
  });

  it("reads a stream cut at arbitrary byte boundaries, through UTF-8 characters", async () => {
    const r = await chat({ model: "fake-split", messages: [user("hi")] });
    expect(r.body.content).toEqual([{ type: "text", text: OPENAI_TEXT.join("") }]);
    expect(textOfDeltas(r.deltas)).toBe("Hello there, wörld €10.");
  });

  it("ships a manifest that grants loopback only and makes the key optional", async () => {
    const m = await loadManifest(DIR);
    expect(m.capabilities.net.map((r) => r.source)).toEqual([
      "http://127.0.0.1:*",
      "http://localhost:*",
    ]);
    expect(m.env.OPENAI_COMPATIBLE_API_KEY).toMatchObject({ type: "secret", required: false });
  });

  it("left an audit chain that verifies, with the stream inbox and http stream recorded", async () => {
    const actions = await rig.capsule.auditActions(NAME);
    expect(actions).toContain("llm.stream allow");
    expect(actions).toContain("net.http-open allow");
  });
});

describe("openai-compatible capsule without a key, as a local server runs", () => {
  let keyless: Rig | undefined;
  beforeAll(async () => {
    keyless = await startRig({ OPENAI_COMPATIBLE_MODEL: "fake-plain" }, undefined);
  }, 60_000);
  afterAll(() => stopRig(keyless));

  it("sends no Authorization header, uses OPENAI_COMPATIBLE_MODEL and the free default price", async () => {
    const r = await chat({ messages: [user("hi")] }, keyless);
    expect(r.kind, JSON.stringify(r.body)).toBe("llm.chat.response");
    const sent = keyless!.fake.requests[0]!;
    expect(sent.headers.authorization).toBeUndefined();
    expect(sent.body.model).toBe("fake-plain");
    expect(r.body.usage).toEqual({ inputTokens: 1234, outputTokens: 56, costMicroUsd: 0 });
  });
});
