/**
 * Splits a byte stream into lines without ever holding more than `maxLineBytes` of one line.
 * A child process decides how much it writes; the sidecar decides how much it keeps, so a
 * server that prints a gigabyte without a newline costs us `maxLineBytes`, not a gigabyte.
 */

export interface OversizedLine {
  /** Bytes the whole line had (without the newline). */
  readonly bytes: number;
  /** The first and last `keepBytes` of the line, for reporting and for finding a JSON-RPC id. */
  readonly head: string;
  readonly tail: string;
}

export interface LineSink {
  line(text: string): void;
  oversized(info: OversizedLine): void;
}

export class BoundedLineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  /** Set once the current line passed the cap: we count and keep only head and tail. */
  private overflow: { bytes: number; head: Buffer; tail: Buffer } | undefined;

  constructor(
    private readonly maxLineBytes: number,
    private readonly sink: LineSink,
    private readonly keepBytes = 256,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const piece = chunk.subarray(start, nl === -1 ? chunk.length : nl);
      this.append(piece);
      if (nl === -1) return;
      this.finishLine();
      start = nl + 1;
    }
  }

  /** The stream ended: a last line without a newline still counts. */
  end(): void {
    if (this.size > 0 || this.overflow) this.finishLine();
  }

  private append(piece: Buffer): void {
    if (piece.length === 0) return;
    if (this.overflow) {
      this.overflow.bytes += piece.length;
      this.overflow.tail = lastBytes(Buffer.concat([this.overflow.tail, piece]), this.keepBytes);
      return;
    }
    if (this.size + piece.length <= this.maxLineBytes) {
      this.parts.push(piece);
      this.size += piece.length;
      return;
    }
    const all = Buffer.concat([...this.parts, piece]);
    this.overflow = {
      bytes: all.length,
      head: all.subarray(0, this.keepBytes),
      tail: lastBytes(all, this.keepBytes),
    };
    this.parts = [];
    this.size = 0;
  }

  private finishLine(): void {
    const over = this.overflow;
    if (over) {
      this.overflow = undefined;
      this.sink.oversized({
        bytes: over.bytes,
        head: over.head.toString("utf8"),
        tail: over.tail.toString("utf8"),
      });
      return;
    }
    const text = Buffer.concat(this.parts).toString("utf8").replace(/\r$/, "");
    this.parts = [];
    this.size = 0;
    this.sink.line(text);
  }
}

function lastBytes(buf: Buffer, n: number): Buffer {
  return Buffer.from(buf.subarray(Math.max(0, buf.length - n)));
}
