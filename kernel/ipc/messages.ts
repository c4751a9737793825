/**
 * Validation of what crosses the daemon socket, shared by both ends: a message is checked
 * against kernel/protocol.ts before it is acted on or sent, and a rejection names the field.
 */
import type { core } from "zod/mini";
import { ClientRequest, DaemonMessage } from "../protocol.js";

/** Message types that end a request: after one of these, nothing more comes for that id. */
export const TERMINAL_TYPES: ReadonlySet<DaemonMessage["type"]> = new Set([
  "done",
  "result",
  "error",
]);

/** Requests that expect no answer (the CLI sends them while another request streams). */
export const FIRE_AND_FORGET_TYPES: ReadonlySet<ClientRequest["type"]> = new Set([
  "approval.answer",
]);

/** Every `code` the daemon puts in an error message, and what it means for the client. */
export const DAEMON_ERROR_CODES = {
  handshake_timeout: "no hello within 2 s of connecting; the connection is closed",
  bad_hello: "the first frame was not a valid hello; the connection is closed",
  protocol_mismatch: "the client speaks another protocol version; restart the daemon",
  unauthorized: "the hello carried the wrong token; the connection is closed",
  busy: "the daemon is at its connection limit; the connection is closed",
  frame_too_large: "a frame exceeded the size limit; the connection is closed",
  malformed_frame: "a frame was not UTF-8 JSON; skipped after the handshake, fatal before it",
  invalid_request: "a request failed validation (the message names the field); connection stays",
  duplicate_id: "a request reused the id of one still running",
  internal: "the daemon failed while handling the request",
  daemon_stopping: "the daemon is shutting down; every running request ends with this",
} as const;
export type DaemonErrorCode = keyof typeof DAEMON_ERROR_CODES;

export function isTerminal(message: DaemonMessage): boolean {
  return TERMINAL_TYPES.has(message.type);
}

export function formatIssues(error: core.$ZodError): string {
  return error.issues
    .map((i) => (i.path.length > 0 ? `${i.path.join(".")}: ${i.message}` : i.message))
    .join("; ");
}

/** Every request type, in the order of the schema. */
export const REQUEST_TYPES = ClientRequest.def.options.map((o) => o.shape.type.def.values[0]!);

export type ParsedRequest =
  | { ok: true; request: ClientRequest }
  | { ok: false; id: string | undefined; message: string };

export function parseClientRequest(value: unknown): ParsedRequest {
  const parsed = ClientRequest.safeParse(value);
  if (parsed.success) return { ok: true, request: parsed.data };
  const obj = typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
  const id = typeof obj.id === "string" ? obj.id : undefined;
  const type = obj.type;
  if (typeof type === "string" && !(REQUEST_TYPES as string[]).includes(type)) {
    return {
      ok: false,
      id,
      message: `unknown request type ${JSON.stringify(type)}; expected one of ${REQUEST_TYPES.join(", ")}`,
    };
  }
  const label = typeof type === "string" ? `${type} request` : "request";
  return { ok: false, id, message: `invalid ${label}: ${formatIssues(parsed.error)}` };
}

export function parseDaemonMessage(
  value: unknown,
): { ok: true; message: DaemonMessage } | { ok: false; message: string } {
  const parsed = DaemonMessage.safeParse(value);
  if (parsed.success) return { ok: true, message: parsed.data };
  return { ok: false, message: `invalid daemon message: ${formatIssues(parsed.error)}` };
}
