import { describe, expect, it } from "vitest";
import { BoundedLineSplitter, type OversizedLine } from "./bounded-lines.js";

function split(chunks: string[], max: number, keep = 4) {
  const lines: string[] = [];
  const over: OversizedLine[] = [];
  const s = new BoundedLineSplitter(
    max,
    { line: (l) => lines.push(l), oversized: (o) => over.push(o) },
    keep,
  );
  for (const c of chunks) s.push(Buffer.from(c));
  s.end();
  return { lines, over };
}

describe("BoundedLineSplitter", () => {
  it("joins lines split across chunks and drops a trailing CR", () => {
    expect(split(["ab", "c\r\nde", "f\n", "g"], 10).lines).toEqual(["abc", "def", "g"]);
  });

  it("reports an over-long line by size, head and tail, and resumes at the next line", () => {
    const { lines, over } = split(["0123", "456789", "ABCDEF\nok\n"], 8);
    expect(over).toEqual([{ bytes: 16, head: "0123", tail: "CDEF" }]);
    expect(lines).toEqual(["ok"]);
  });

  it("accepts a line of exactly the cap", () => {
    expect(split(["12345678\n"], 8)).toEqual({ lines: ["12345678"], over: [] });
  });
});
