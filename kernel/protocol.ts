/**
 * The daemon's client protocol: what `astrid` (the CLI) and `astrid-daemon` say to each other
 * over the Unix socket in ~/.astrid/run/. Frames are length-prefixed JSON (kernel/ipc/); this
 * module is the single source of truth for the messages inside them (zod), so both ends and the
 * docs agree. Unknown message types are answered with an error, never ignored.
 *
 * Written with zod/mini, the tree-shakable form of the same library: `astrid` bundles this file
 * and validates every frame with it, and the full zod API would cost the CLI ~70 ms of module
 * loading before its first request (bench/cli). The English messages are loaded explicitly,
 * so errors read the same as everywhere else ("Invalid input: expected string, …").
 */
import { en } from "zod/locales";
import * as z from "zod/mini";

z.config(en());

/** Bumped when a message changes incompatibly; the handshake refuses a mismatch. */
export const DAEMON_PROTOCOL_VERSION = 1;

export const Hello = z.strictObject({
  type: z.literal("hello"),
  protocol: z.int(),
  /** Contents of ~/.astrid/run/daemon.token: proves the client may use this daemon. */
  token: z.string().check(z.minLength(16)),
  client: z.string().check(z.maxLength(128)),
});

export const Welcome = z.strictObject({
  type: z.literal("welcome"),
  protocol: z.int(),
  daemonPid: z.int(),
  version: z.string(),
});

const Mode = z.enum(["safe", "guided", "autonomous", "yolo"]);

/** Requests a client may send after the handshake; each carries an id its answer repeats. */
export const ClientRequest = z.discriminatedUnion("type", [
  z.strictObject({
    type: z.literal("prompt"),
    id: z.string(),
    session: z.optional(
      z.string().check(z.describe("continue this session; a new one when absent")),
    ),
    text: z.string().check(z.minLength(1)),
    stdin: z.optional(z.string()),
    mode: z.optional(Mode),
    yes: z.optional(z.boolean()),
    workspace: z.string(),
  }),
  z.strictObject({
    type: z.literal("approval.answer"),
    id: z.string(),
    requestId: z.string(),
    decision: z.enum(["allow_once", "allow_session", "allow_workspace", "allow_always", "deny"]),
  }),
  z.strictObject({ type: z.literal("session.list"), id: z.string() }),
  z.strictObject({ type: z.literal("session.show"), id: z.string(), session: z.string() }),
  z.strictObject({ type: z.literal("session.delete"), id: z.string(), session: z.string() }),
  z.strictObject({ type: z.literal("capsule.list"), id: z.string() }),
  z.strictObject({ type: z.literal("status"), id: z.string() }),
  z.strictObject({ type: z.literal("stop"), id: z.string() }),
]);
export type ClientRequest = z.infer<typeof ClientRequest>;

/** What the daemon sends: answers to requests, and events of a running prompt. */
export const DaemonMessage = z.discriminatedUnion("type", [
  Welcome,
  z.strictObject({ type: z.literal("session.started"), id: z.string(), session: z.string() }),
  z.strictObject({ type: z.literal("delta"), id: z.string(), text: z.string() }),
  z.strictObject({
    type: z.literal("tool"),
    id: z.string(),
    tool: z.string(),
    phase: z.enum(["call", "result"]),
    summary: z.string(),
  }),
  z.strictObject({
    type: z.literal("approval.needed"),
    id: z.string(),
    requestId: z.string(),
    capsule: z.string(),
    kind: z.string(),
    target: z.string(),
    reason: z.string(),
  }),
  z.strictObject({
    type: z.literal("done"),
    id: z.string(),
    session: z.string(),
    text: z.string(),
    stopReason: z.string(),
    usage: z.strictObject({
      inputTokens: z.int(),
      outputTokens: z.int(),
      costMicroUsd: z.int(),
    }),
  }),
  z.strictObject({ type: z.literal("result"), id: z.string(), data: z.unknown() }),
  z.strictObject({
    type: z.literal("error"),
    id: z.optional(z.string()),
    code: z.string(),
    message: z.string(),
  }),
]);
export type DaemonMessage = z.infer<typeof DaemonMessage>;
