import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { type DecodedFrame, encodeFrame, FrameDecoder, FrameError } from "./frames.js";

function values(decoded: DecodedFrame[]): unknown[] {
  return decoded.map((d) => {
    if (!d.ok) throw d.error;
    return d.value;
  });
}

function rawFrame(body: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

describe("frames", () => {
  it("any sequence of frames cut at arbitrary points decodes to the same messages", () => {
    fc.assert(
      fc.property(
        fc.array(fc.jsonValue(), { maxLength: 20 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (messages, cutSeeds) => {
          const stream = Buffer.concat(messages.map((m) => encodeFrame(m)));
          const cuts = [...new Set(cutSeeds.map((c) => c % (stream.length + 1)))].sort(
            (a, b) => a - b,
          );
          const decoder = new FrameDecoder();
          const out: unknown[] = [];
          let from = 0;
          for (const cut of [...cuts, stream.length]) {
            out.push(...values(decoder.push(stream.subarray(from, cut))));
            from = cut;
          }
          // JSON round-trip is the reference: it is what the peer could have meant (-0 → 0).
          expect(out).toEqual(messages.map((m) => JSON.parse(JSON.stringify(m))));
          expect(decoder.pendingBytes).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("decodes a frame fed one byte at a time, including multi-byte UTF-8", () => {
    const stream = Buffer.concat([encodeFrame({ text: "naïve — 日本 🚀" }), encodeFrame([1, 2])]);
    const decoder = new FrameDecoder();
    const out: unknown[] = [];
    for (const byte of stream) out.push(...values(decoder.push(Buffer.from([byte]))));
    expect(out).toEqual([{ text: "naïve — 日本 🚀" }, [1, 2]]);
  });

  it("reports malformed JSON and keeps decoding the frames after it", () => {
    const decoder = new FrameDecoder();
    const bad = rawFrame(Buffer.from("{not json"));
    const out = decoder.push(Buffer.concat([bad, encodeFrame({ after: true })]));
    let expected = "";
    try {
      JSON.parse("{not json");
    } catch (err) {
      expected = `frame is not valid JSON (${(err as Error).message})`;
    }
    expect(out).toHaveLength(2);
    expect(out[0]).toEqual({ ok: false, error: expect.any(FrameError) });
    const error = (out[0] as { error: FrameError }).error;
    expect(error.message).toBe(expected);
    expect(error.code).toBe("malformed_frame");
    expect(error.fatal).toBe(false);
    expect(out[1]).toEqual({ ok: true, value: { after: true } });
  });

  it("rejects invalid UTF-8 instead of substituting replacement characters", () => {
    const decoder = new FrameDecoder();
    const [result] = decoder.push(rawFrame(Buffer.from([0x22, 0xff, 0x22])));
    expect(result).toEqual({ ok: false, error: expect.any(FrameError) });
    expect((result as { error: FrameError }).error.message).toBe("frame is not valid UTF-8");
  });

  it("refuses a frame over the limit from its header alone, and then everything after it", () => {
    const decoder = new FrameDecoder({ maxFrameBytes: 16 });
    const header = Buffer.alloc(4);
    header.writeUInt32BE(17, 0);
    const [result] = decoder.push(header);
    const error = (result as { error: FrameError }).error;
    expect(error.message).toBe("frame of 17 bytes exceeds the 16-byte limit");
    expect(error.code).toBe("frame_too_large");
    expect(error.fatal).toBe(true);
    expect(decoder.push(encodeFrame(1))).toEqual([{ ok: false, error }]);
    expect(decoder.pendingBytes).toBe(0);
  });

  it("accepts a frame of exactly the limit", () => {
    const decoder = new FrameDecoder({ maxFrameBytes: 7 });
    expect(values(decoder.push(encodeFrame("abcde")))).toEqual(["abcde"]);
  });

  it("refuses to encode a message over the limit", () => {
    expect(() => encodeFrame("x".repeat(20), 16)).toThrow(
      "frame of 22 bytes exceeds the 16-byte limit",
    );
  });
});
