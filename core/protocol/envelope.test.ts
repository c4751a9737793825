import { describe, expect, it } from "vitest";
import {
  decode,
  encode,
  expectKind,
  isKnown,
  MAX_MESSAGE_BYTES,
  ProtocolError,
} from "./envelope.js";

const meta = { session: "s-1", principal: "user:alice", capsule: "react" };
const bytes = (o: unknown) => new TextEncoder().encode(JSON.stringify(o));

describe("envelope codec", () => {
  it("round-trips a request with its deadline and a typed body", () => {
    const wire = encode(
      "tool.execute.request",
      { callId: "c1", tool: "read_file", arguments: { path: "README.md" } },
      meta,
      { timeoutMs: 5000, now: 1_000, id: "m1" },
    );
    const env = decode(wire, { now: 2_000 });
    expect(isKnown(env)).toBe(true);
    const call = expectKind(env, "tool.execute.request");
    expect(call).toEqual({
      v: 1,
      id: "m1",
      kind: "tool.execute.request",
      ...meta,
      time: 1_000,
      deadline: 6_000,
      body: { callId: "c1", tool: "read_file", arguments: { path: "README.md" } },
    });
  });

  it("refuses to encode a request without a deadline", () => {
    expect(() =>
      encode("tool.execute.request", { callId: "c", tool: "t", arguments: {} }, meta),
    ).toThrow(
      new ProtocolError(
        "invalid",
        "tool.execute.request is a request and needs a deadline (timeoutMs)",
      ),
    );
  });

  it("refuses to encode a body that does not match its schema, naming the field", () => {
    expect(() =>
      // @ts-expect-error: deliberately wrong body
      encode("tool.result", { callId: "c", content: [], isError: "no" }, meta),
    ).toThrow("tool.result body: isError: Invalid input: expected boolean, received string");
  });

  it("refuses an envelope whose session is not one subject token", () => {
    expect(() =>
      encode(
        "capsule.health",
        { ready: true, uptimeMs: 1, inFlight: 0 },
        { ...meta, session: "a.b" },
      ),
    ).toThrow("envelope: session: expected 1-128 characters of [A-Za-z0-9_-]");
  });

  it("refuses oversized messages on both sides", () => {
    const text = "x".repeat(MAX_MESSAGE_BYTES);
    expect(() => encode("session.event", { type: "delta", seq: 0, text }, meta)).toThrow(
      /^session\.event message of \d+ bytes exceeds the limit of 1048576 bytes$/,
    );
    expect(() => decode(new Uint8Array(MAX_MESSAGE_BYTES + 1))).toThrow(
      new ProtocolError("too_large", "message of 1048577 bytes exceeds the limit of 1048576 bytes"),
    );
  });

  it.each([
    [new Uint8Array([0xff, 0xfe]), "malformed", /^message is not UTF-8 JSON: /],
    [new TextEncoder().encode("{not json"), "malformed", /^message is not UTF-8 JSON: /],
    [bytes({ v: 2 }), "invalid", /^envelope: v: Invalid input: expected 1/],
    [
      bytes({
        v: 1,
        id: "x",
        kind: "k",
        session: "s",
        principal: "p",
        capsule: "c",
        time: 1,
        body: {},
        extra: 1,
      }),
      "invalid",
      /^envelope: \(root\): Unrecognized key: "extra"$/,
    ],
  ])("refuses malformed input %#", (input, code, message) => {
    try {
      decode(input);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(ProtocolError);
      expect((err as ProtocolError).code).toBe(code);
      expect((err as ProtocolError).message).toMatch(message);
    }
  });

  it("refuses a request whose deadline has passed, and one that carries none", () => {
    const wire = encode("capsule.health.request", {}, meta, { timeoutMs: 100, now: 1_000 });
    expect(() => decode(wire, { now: 1_100 })).toThrow(
      /^capsule\.health\.request .* expired 0 ms ago/,
    );
    expect(decode(wire, { now: 1_099 }).kind).toBe("capsule.health.request");
    const noDeadline = bytes({
      v: 1,
      id: "x",
      kind: "capsule.health.request",
      ...meta,
      time: 1,
      body: {},
    });
    expect(() => decode(noDeadline)).toThrow(
      "capsule.health.request is a request and carries no deadline",
    );
  });

  it("refuses a known kind with a body of the wrong shape", () => {
    const wire = bytes({ v: 1, id: "x", kind: "llm.delta", ...meta, time: 1, body: { seq: -1 } });
    expect(() => decode(wire)).toThrow("llm.delta body: seq: Too small: expected number to be >=0");
  });

  it("keeps messages of unknown kinds instead of failing (forward compatibility)", () => {
    const env = decode(
      bytes({ v: 1, id: "x", kind: "llm.v2.thing", ...meta, time: 1, body: { a: 1 } }),
    );
    expect(isKnown(env)).toBe(false);
    expect(env.body).toEqual({ a: 1 });
    expect(() => expectKind(env, "llm.delta")).toThrow(
      "expected a llm.delta message, got llm.v2.thing",
    );
  });

  it("applies schema defaults when decoding", () => {
    const wire = bytes({
      v: 1,
      id: "x",
      kind: "llm.chat.response",
      ...meta,
      time: 1,
      body: {
        provider: "p",
        model: "m",
        content: [{ type: "tool_result", toolUseId: "t", content: "ok" }],
        stopReason: "end_turn",
        usage: { inputTokens: 1, outputTokens: 2 },
      },
    });
    const env = expectKind(decode(wire), "llm.chat.response");
    expect(env.body.content[0]).toEqual({
      type: "tool_result",
      toolUseId: "t",
      content: "ok",
      isError: false,
    });
  });
});
