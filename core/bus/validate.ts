/**
 * What may travel on the bus besides subjects: header names and values, queue group names.
 * Checked identically by both implementations so a message accepted by the embedded bus is
 * accepted by NATS, and a header can never smuggle a CR/LF into the NATS wire protocol.
 */
import type { Headers } from "./bus.js";
import { HeaderError, QueueNameError } from "./errors.js";

export const EMPTY_HEADERS: Headers = Object.freeze({});

// RFC 822 field names: printable ASCII without ":" (what NATS headers accept).
const HEADER_NAME = /^[!-9;-~]+$/;
const LINE_BREAK = /[\r\n]/;

/**
 * Returns a frozen copy (so a publisher cannot change headers after publishing), values
 * trimmed as the NATS wire format does; names keep their case.
 */
export function normalizeHeaders(h: Record<string, string>): Headers {
  const out: Record<string, string> = {};
  let any = false;
  for (const name of Object.keys(h)) {
    const value = h[name];
    if (!HEADER_NAME.test(name)) {
      throw new HeaderError(
        `header name ${JSON.stringify(name)} is invalid: expected printable ASCII without ":" or spaces`,
      );
    }
    if (typeof value !== "string") {
      throw new HeaderError(`header "${name}" must be a string, got ${typeof value}`);
    }
    if (LINE_BREAK.test(value)) {
      throw new HeaderError(`header "${name}" contains a line break`);
    }
    out[name] = value.trim();
    any = true;
  }
  return any ? Object.freeze(out) : EMPTY_HEADERS;
}

const QUEUE_NAME = /^[^\s\u0000-\u001f\u007f*>]+$/;

export function assertQueueName(q: string): void {
  if (!QUEUE_NAME.test(q)) {
    throw new QueueNameError(
      `queue group ${JSON.stringify(q)} is invalid: expected a non-empty name without whitespace, "*" or ">"`,
    );
  }
}

export function assertMax(max: number): void {
  if (!Number.isSafeInteger(max) || max < 1) {
    throw new RangeError(`max must be a positive integer, got ${max}`);
  }
}

export function assertTimeout(ms: number): void {
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new RangeError(`timeoutMs must be a positive number, got ${ms}`);
  }
}
