/** Segment file naming and listing, shared by the writer and the verifier. */
import { readdir } from "node:fs/promises";

const SEGMENT_RE = /^segment-(\d{6})\.jsonl$/;

export function segmentFileName(index: number): string {
  return `segment-${String(index).padStart(6, "0")}.jsonl`;
}

export interface SegmentFile {
  index: number;
  name: string;
}

/** Segment files of `dir` in chain order (by number); other files are ignored. */
export async function listSegments(dir: string): Promise<SegmentFile[]> {
  const names = await readdir(dir);
  const out: SegmentFile[] = [];
  for (const name of names) {
    const m = SEGMENT_RE.exec(name);
    if (m) out.push({ index: Number(m[1]), name });
  }
  return out.sort((a, b) => a.index - b.index);
}

/**
 * Splits a segment's text into complete lines and the bytes after the last newline. Every record
 * is written with its newline in the same write, so a non-empty tail is a record cut short.
 */
export function splitLines(text: string): { lines: string[]; tail: string } {
  const end = text.lastIndexOf("\n");
  if (end === -1) return { lines: [], tail: text };
  return { lines: text.slice(0, end).split("\n"), tail: text.slice(end + 1) };
}
