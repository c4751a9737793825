/**
 * The replay capsule's own rules, run in the real QuickJS engine against the RecordingHost test
 * double (the enforced host and the bus are covered end to end in test/providers.test.ts):
 * which line answers which turn, and that a broken transcript fails clearly instead of
 * answering with something else.
 */
import { readFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CallContext } from "../../sidecar/abi/host.js";
import { QuickJsEngine } from "../../sidecar/engine/wasm/quickjs-engine.js";
import { RecordingHost } from "../../test/fixtures/wasm/recording-host.js";

const SOURCE = readFileSync(path.resolve("capsules/replay/main.js"), "utf8");
const FILE = "cwd://.astrid/replay/transcript.jsonl";
const line = (text: string) =>
  JSON.stringify({
    provider: "anthropic",
    model: "m",
    content: [{ type: "text", text }],
    stopReason: "end_turn",
    usage: { inputTokens: 3, outputTokens: 2 },
  });

let engine: QuickJsEngine;
const ctx: CallContext = {
  callId: "c1",
  session: "s",
  principal: "user:a",
  capsule: "replay",
  token: undefined,
  deadline: Date.now() + 60_000,
};

function hostWith(transcript: string): RecordingHost {
  const h = new RecordingHost({ [FILE]: transcript });
  h.config_.set("REPLAY_TRANSCRIPT", FILE);
  return h;
}

const turn = (assistantTurns: number) => ({
  messages: [
    { role: "user", content: "q" },
    ...Array.from({ length: assistantTurns }, () => [
      { role: "assistant", content: "a" },
      { role: "user", content: "q" },
    ]).flat(),
  ],
});

beforeAll(async () => {
  engine = await QuickJsEngine.create({
    source: SOURCE,
    memoryMb: 32,
    stackKb: 256,
    timeoutMs: 5000,
    name: "replay",
  });
});

afterAll(async () => {
  await engine.stop();
});

describe("replay capsule", () => {
  it("answers turn N with line N, wrapping around the transcript", async () => {
    const host = hostWith(`${line("first")}\n\n${line("second")}\n`);
    const texts = [];
    for (const n of [0, 1, 2]) {
      const out = (await engine.invoke("chat", turn(n), ctx, host)) as {
        content: { text: string }[];
        metadata: { line: number };
      };
      texts.push([out.content[0]!.text, out.metadata.line]);
    }
    expect(texts).toEqual([
      ["first", 1],
      ["second", 2],
      ["first", 1],
    ]);
    // Streamed word by word: "first" is one word, then `done`.
    expect(host.calls.filter((c) => c.method === "streamDelta").slice(0, 2)).toEqual([
      { method: "streamDelta", args: [{ text: "first" }] },
      { method: "streamDelta", args: [{ done: true }] },
    ]);
  });

  it("fails on a line that is not JSON, naming the file and line", async () => {
    const host = hostWith(`${line("ok")}\n{"provider": oops}\n`);
    await expect(engine.invoke("chat", turn(1), ctx, host)).rejects.toThrow(
      /^replay\.chat: Error: replay: transcript cwd:\/\/\.astrid\/replay\/transcript\.jsonl line 2 is not JSON: /,
    );
  });

  it("fails on a line that is not a response body, and on an empty transcript", async () => {
    await expect(engine.invoke("chat", turn(0), ctx, hostWith('{"text":"x"}\n'))).rejects.toThrow(
      "replay: transcript cwd://.astrid/replay/transcript.jsonl line 1 is not an llm.chat.response body (no content array)",
    );
    await expect(engine.invoke("chat", turn(0), ctx, hostWith("\n\n"))).rejects.toThrow(
      "replay: transcript cwd://.astrid/replay/transcript.jsonl has no lines",
    );
  });

  it("fails when no transcript is configured", async () => {
    await expect(engine.invoke("chat", turn(0), ctx, new RecordingHost())).rejects.toThrow(
      "replay: REPLAY_TRANSCRIPT is not set",
    );
  });
});
