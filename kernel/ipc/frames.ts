/**
 * Frames on the daemon socket: a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
 * A length prefix (not newline-delimited JSON) means a reader never scans untrusted bytes for a
 * delimiter and always knows, from 4 bytes, whether a frame is too big to accept — so a peer
 * cannot make the daemon buffer an unbounded line before it can say no.
 */

/** The largest frame either end accepts after the handshake. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
const HEADER_BYTES = 4;

export type FrameErrorCode = "frame_too_large" | "malformed_frame";

/** A frame that cannot be accepted. `fatal` ones leave the stream unreadable: close it. */
export class FrameError extends Error {
  constructor(
    readonly code: FrameErrorCode,
    message: string,
    readonly fatal: boolean,
  ) {
    super(message);
    this.name = "FrameError";
  }
}

export function frameTooLargeMessage(bytes: number, limit: number): string {
  return `frame of ${bytes} bytes exceeds the ${limit}-byte limit`;
}

/** One length-prefixed frame holding `message` as JSON; throws if it would exceed `maxBytes`. */
export function encodeFrame(message: unknown, maxBytes = MAX_FRAME_BYTES): Buffer {
  const json = JSON.stringify(message);
  if (json === undefined) throw new FrameError("malformed_frame", "message is not JSON", false);
  const body = Buffer.from(json, "utf8");
  if (body.length > maxBytes) {
    throw new FrameError("frame_too_large", frameTooLargeMessage(body.length, maxBytes), true);
  }
  const frame = Buffer.allocUnsafe(HEADER_BYTES + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, HEADER_BYTES);
  return frame;
}

export type DecodedFrame = { ok: true; value: unknown } | { ok: false; error: FrameError };

/**
 * Turns a byte stream, cut into chunks anywhere, back into messages. A malformed JSON body is
 * reported and skipped (the length prefix keeps the stream in step); a frame over the limit is
 * fatal — the decoder refuses further input, because reading past it would mean buffering what
 * the limit exists to refuse.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private failed: FrameError | undefined;

  /** Lowered before a handshake, so an unauthenticated peer cannot make us hold 4 MiB. */
  maxFrameBytes: number;

  constructor(opts: { maxFrameBytes?: number } = {}) {
    this.maxFrameBytes = opts.maxFrameBytes ?? MAX_FRAME_BYTES;
  }

  /** Bytes received but not yet part of a whole frame. */
  get pendingBytes(): number {
    return this.buffered;
  }

  push(chunk: Uint8Array): DecodedFrame[] {
    if (this.failed) return [{ ok: false, error: this.failed }];
    if (chunk.length > 0) {
      this.chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.buffered += chunk.length;
    }
    const out: DecodedFrame[] = [];
    while (this.buffered >= HEADER_BYTES) {
      const length = this.peekLength();
      if (length > this.maxFrameBytes) {
        this.failed = new FrameError(
          "frame_too_large",
          frameTooLargeMessage(length, this.maxFrameBytes),
          true,
        );
        this.chunks = [];
        this.buffered = 0;
        out.push({ ok: false, error: this.failed });
        return out;
      }
      if (this.buffered < HEADER_BYTES + length) break;
      const body = this.take(HEADER_BYTES + length).subarray(HEADER_BYTES);
      out.push(parseBody(body));
    }
    return out;
  }

  private peekLength(): number {
    const first = this.chunks[0]!;
    if (first.length >= HEADER_BYTES) return first.readUInt32BE(0);
    return this.gather(HEADER_BYTES).readUInt32BE(0);
  }

  /** Merges leading chunks until the first holds `n` bytes (n ≤ buffered). */
  private gather(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first;
    const merged = Buffer.concat(this.chunks);
    this.chunks = [merged];
    return merged;
  }

  private take(n: number): Buffer {
    const first = this.gather(n);
    const taken = first.subarray(0, n);
    const rest = first.subarray(n);
    if (rest.length > 0) this.chunks[0] = rest;
    else this.chunks.shift();
    this.buffered -= n;
    return taken;
  }
}

function parseBody(body: Buffer): DecodedFrame {
  // A fatal TextDecoder rejects invalid UTF-8 instead of silently substituting U+FFFD.
  let text: string;
  try {
    text = utf8.decode(body);
  } catch {
    return {
      ok: false,
      error: new FrameError("malformed_frame", "frame is not valid UTF-8", false),
    };
  }
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (err) {
    return {
      ok: false,
      error: new FrameError(
        "malformed_frame",
        `frame is not valid JSON (${(err as Error).message})`,
        false,
      ),
    };
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
