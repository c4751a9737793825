/**
 * Typed errors of the Bus. Both implementations throw exactly these, so a caller (the
 * sidecar, a capsule host function) handles "nobody answers" or "too big" the same way
 * whether it runs on the embedded bus or on NATS.
 */
export { SubjectError } from "./subject.js";

/** Base class: `err instanceof BusError` tells bus failures from handler bugs. */
export class BusError extends Error {}

export class NoRespondersError extends BusError {
  override readonly name = "NoRespondersError";
  constructor(readonly subject: string) {
    super(`no responders for "${subject}"`);
  }
}

export class RequestTimeoutError extends BusError {
  override readonly name = "RequestTimeoutError";
  constructor(
    readonly subject: string,
    readonly timeoutMs: number,
  ) {
    super(`request to "${subject}" timed out after ${timeoutMs} ms`);
  }
}

export class PayloadTooLargeError extends BusError {
  override readonly name = "PayloadTooLargeError";
  constructor(
    readonly size: number,
    readonly max: number,
  ) {
    super(`payload of ${size} bytes exceeds the bus limit of ${max} bytes`);
  }
}

export class BusClosedError extends BusError {
  override readonly name = "BusClosedError";
  constructor() {
    super("the bus is closed");
  }
}

export class NoReplySubjectError extends BusError {
  override readonly name = "NoReplySubjectError";
  constructor(readonly subject: string) {
    super(`cannot respond to the message on "${subject}": it has no reply subject`);
  }
}

/** A header name or value that cannot travel as a NATS header line. */
export class HeaderError extends BusError {
  override readonly name = "HeaderError";
}

/** A queue group name the NATS protocol cannot carry. */
export class QueueNameError extends BusError {
  override readonly name = "QueueNameError";
}

/** A subscriber's handler threw or rejected; reported through `onError`, never thrown. */
export class HandlerError extends BusError {
  override readonly name = "HandlerError";
  constructor(
    readonly pattern: string,
    readonly subject: string,
    override readonly cause: unknown,
  ) {
    super(
      `handler for "${pattern}" failed on "${subject}": ${
        cause instanceof Error ? cause.message : String(cause)
      }`,
    );
  }
}

/**
 * The NATS server refused an operation outside the connection's permissions: the second,
 * server-side enforcement of the IPC ACL. Publishes are refused asynchronously, so this
 * arrives through `onError`; requests and subscriptions report it directly.
 */
export class PermissionError extends BusError {
  override readonly name = "PermissionError";
  constructor(
    readonly operation: "publish" | "subscribe",
    readonly subject: string,
  ) {
    super(`the NATS server refused to ${operation} "${subject}": permissions violation`);
  }
}

export class BusConnectError extends BusError {
  override readonly name = "BusConnectError";
  constructor(
    servers: string,
    override readonly cause: unknown,
  ) {
    super(
      `cannot connect to NATS at ${servers}: ${cause instanceof Error ? cause.message : String(cause)}`,
    );
  }
}
