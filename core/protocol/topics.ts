/**
 * The topic protocol: every subject family Astrid routes, in one table.
 *
 * Scheme: `<domain>.v1.<verb>[.<target>]`. The last token names the capsule (or session, or
 * request) that serves or receives the message. A caller never chooses its peer in code: a
 * session binds each import to an exporter, and the caller publishes to the exporter's name —
 * so "orchestrator → cache → router → provider" is wiring in configuration, not code.
 * Streams (LLM deltas, session events) go to an inbox the caller names, so a capsule needs no
 * subscribe permission on anybody else's traffic.
 */

import { randomBytes } from "node:crypto";
import type { z } from "zod";
import { assertPublishSubject, subjectMatches } from "../bus/subject.js";
import * as m from "./messages.js";

export type Pattern = "request" | "reply" | "publish" | "stream";

export interface MessageKind {
  /** Wire name carried in the envelope's `kind`, e.g. "llm.chat.request". */
  readonly kind: string;
  readonly schema: z.ZodType;
  readonly description: string;
  /** Requests carry a deadline; the receiver drops work whose deadline has passed. */
  readonly needsDeadline: boolean;
}

export interface TopicFamily {
  readonly family: string;
  /** Subject template; `{name}` is one token filled by the builder. */
  readonly subject: string;
  readonly pattern: Pattern;
  readonly sends: string;
  readonly replies?: string;
  readonly from: string;
  readonly to: string;
  readonly description: string;
}

const kinds = [
  {
    kind: "llm.chat.request",
    schema: m.LlmChatRequest,
    description: "ask a model for the next turn",
    needsDeadline: true,
  },
  {
    kind: "llm.chat.response",
    schema: m.LlmChatResponse,
    description: "the whole turn with usage",
    needsDeadline: false,
  },
  {
    kind: "llm.delta",
    schema: m.LlmDelta,
    description: "a streamed fragment of the turn",
    needsDeadline: false,
  },
  {
    kind: "tool.describe.request",
    schema: m.ToolDescribeRequest,
    description: "list the tools a capsule serves",
    needsDeadline: true,
  },
  {
    kind: "tool.describe.response",
    schema: m.ToolDescribeResponse,
    description: "tool names, descriptions, argument schemas",
    needsDeadline: false,
  },
  {
    kind: "tool.execute.request",
    schema: m.ToolExecuteRequest,
    description: "call one tool",
    needsDeadline: true,
  },
  {
    kind: "tool.result",
    schema: m.ToolResult,
    description: "a tool's output or its error",
    needsDeadline: false,
  },
  {
    kind: "tool.cancel",
    schema: m.ToolCancel,
    description: "stop a call in flight",
    needsDeadline: false,
  },
  {
    kind: "context.request",
    schema: m.ContextRequest,
    description: "fetch static context",
    needsDeadline: true,
  },
  {
    kind: "context.bundle",
    schema: m.ContextBundle,
    description: "prompts and files of a static capsule",
    needsDeadline: false,
  },
  {
    kind: "session.prompt",
    schema: m.SessionPrompt,
    description: "a user turn for the orchestrator",
    needsDeadline: true,
  },
  {
    kind: "session.event",
    schema: m.SessionEvent,
    description: "progress: deltas, tool calls, approvals, usage",
    needsDeadline: false,
  },
  {
    kind: "session.response",
    schema: m.SessionResponse,
    description: "the final answer of a turn",
    needsDeadline: false,
  },
  {
    kind: "approval.request",
    schema: m.ApprovalRequest,
    description: "a privileged action waits for a person",
    needsDeadline: true,
  },
  {
    kind: "approval.decision",
    schema: m.ApprovalDecision,
    description: "allow once / session / workspace / always, or deny",
    needsDeadline: false,
  },
  {
    kind: "audit.entry",
    schema: m.AuditEntryNotice,
    description: "a decision written to a capsule's audit chain",
    needsDeadline: false,
  },
  {
    kind: "capsule.lifecycle",
    schema: m.CapsuleLifecycle,
    description: "starting, ready, draining, stopped, crashed",
    needsDeadline: false,
  },
  {
    kind: "capsule.health.request",
    schema: m.CapsuleHealthRequest,
    description: "probe a capsule",
    needsDeadline: true,
  },
  {
    kind: "capsule.health",
    schema: m.CapsuleHealth,
    description: "readiness, uptime, calls in flight",
    needsDeadline: false,
  },
  {
    kind: "error",
    schema: m.ErrorReply,
    description: "the reply to any request that failed or was denied",
    needsDeadline: false,
  },
] as const satisfies readonly MessageKind[];

export type KindName = (typeof kinds)[number]["kind"];
export type BodyOf<K extends KindName> = z.infer<
  Extract<(typeof kinds)[number], { kind: K }>["schema"]
>;

export const MESSAGE_KINDS: ReadonlyMap<string, MessageKind> = new Map(
  kinds.map((k) => [k.kind, k]),
);

export const TOPICS: readonly TopicFamily[] = [
  {
    family: "llm.v1",
    subject: "llm.v1.chat.{provider}",
    pattern: "request",
    sends: "llm.chat.request",
    replies: "llm.chat.response",
    from: "orchestrator, cache, router",
    to: "provider (or whatever the session binds)",
    description: "one model turn; deltas stream to the request's `stream` inbox",
  },
  {
    family: "llm.v1",
    subject: "<inbox from the request>",
    pattern: "stream",
    sends: "llm.delta",
    from: "provider",
    to: "the caller",
    description: "streamed text and tool-call fragments, in `seq` order",
  },
  {
    family: "tool.v1",
    subject: "tool.v1.describe.{capsule}",
    pattern: "request",
    sends: "tool.describe.request",
    replies: "tool.describe.response",
    from: "orchestrator",
    to: "tool capsule",
    description: "discover the tools a capsule serves",
  },
  {
    family: "tool.v1",
    subject: "tool.v1.execute.{tool}",
    pattern: "request",
    sends: "tool.execute.request",
    replies: "tool.result",
    from: "orchestrator",
    to: "tool capsule",
    description: "run one tool under the callee's five layers",
  },
  {
    family: "tool.v1",
    subject: "tool.v1.cancel.{tool}",
    pattern: "publish",
    sends: "tool.cancel",
    from: "orchestrator",
    to: "tool capsule",
    description: "abandon a call (deadline passed, user interrupt)",
  },
  {
    family: "context.v1",
    subject: "context.v1.get.{capsule}",
    pattern: "request",
    sends: "context.request",
    replies: "context.bundle",
    from: "orchestrator",
    to: "static capsule",
    description: "prompts and project files to inject",
  },
  {
    family: "session.v1",
    subject: "session.v1.prompt.{session}",
    pattern: "request",
    sends: "session.prompt",
    replies: "session.response",
    from: "CLI, operator",
    to: "the session's orchestrator",
    description: "one user turn",
  },
  {
    family: "session.v1",
    subject: "session.v1.events.{session}",
    pattern: "publish",
    sends: "session.event",
    from: "orchestrator, sidecars",
    to: "CLI, operator",
    description: "progress of the turn, for streaming output",
  },
  {
    family: "approval.v1",
    subject: "approval.v1.request.{session}",
    pattern: "request",
    sends: "approval.request",
    replies: "approval.decision",
    from: "sidecar",
    to: "CLI prompt, operator (Approval object)",
    description: "a call that needs a person waits, bounded, for a decision",
  },
  {
    family: "approval.v1",
    subject: "approval.v1.decision.{session}",
    pattern: "publish",
    sends: "approval.decision",
    from: "CLI, operator",
    to: "sidecars",
    description: "broadcast of a decision so every sidecar of the session learns session grants",
  },
  {
    family: "audit.v1",
    subject: "audit.v1.entry.{capsule}",
    pattern: "publish",
    sends: "audit.entry",
    from: "sidecar",
    to: "collectors, metrics",
    description: "notice of an entry appended to the capsule's chain (the chain is the record)",
  },
  {
    family: "capsule.v1",
    subject: "capsule.v1.lifecycle.{capsule}",
    pattern: "publish",
    sends: "capsule.lifecycle",
    from: "sidecar",
    to: "daemon, operator",
    description: "state changes of a capsule instance",
  },
  {
    family: "capsule.v1",
    subject: "capsule.v1.health.{capsule}",
    pattern: "request",
    sends: "capsule.health.request",
    replies: "capsule.health",
    from: "daemon, operator",
    to: "sidecar",
    description: "liveness and readiness over the bus",
  },
];

/**
 * Names of capsules, sessions and tools become one subject token. Capsule and session names are
 * already token-safe by their own grammar; tool names come from MCP servers, which allow "." —
 * that would split the token — so anything outside [A-Za-z0-9_-] is percent-encoded.
 */
export function subjectToken(name: string): string {
  if (name.length === 0) throw new Error("subject token is empty");
  return name.replace(/[^A-Za-z0-9_-]/g, (c) =>
    [...Buffer.from(c, "utf8")]
      .map((b) => `%${b.toString(16).toUpperCase().padStart(2, "0")}`)
      .join(""),
  );
}

export function fromSubjectToken(token: string): string {
  return decodeURIComponent(token);
}

function build(prefix: string, name: string): string {
  const s = `${prefix}.${subjectToken(name)}`;
  assertPublishSubject(s);
  return s;
}

/** Subject builders: the only place a subject string is assembled. */
export const subjects = {
  llmChat: (provider: string) => build("llm.v1.chat", provider),
  toolDescribe: (capsule: string) => build("tool.v1.describe", capsule),
  toolExecute: (tool: string) => build("tool.v1.execute", tool),
  toolCancel: (tool: string) => build("tool.v1.cancel", tool),
  contextGet: (capsule: string) => build("context.v1.get", capsule),
  sessionPrompt: (session: string) => build("session.v1.prompt", session),
  sessionEvents: (session: string) => build("session.v1.events", session),
  approvalRequest: (session: string) => build("approval.v1.request", session),
  approvalDecision: (session: string) => build("approval.v1.decision", session),
  auditEntry: (capsule: string) => build("audit.v1.entry", capsule),
  capsuleLifecycle: (capsule: string) => build("capsule.v1.lifecycle", capsule),
  capsuleHealth: (capsule: string) => build("capsule.v1.health", capsule),
} as const;

/**
 * Stream inboxes (where a provider sends `llm.delta` messages) have one fixed form,
 * `_INBOX.<caller>.stream.<id>`, so the NATS permission that lets sidecars publish deltas
 * (`_INBOX.*.stream.>`) can never match a request's reply subject (`_INBOX.<caller>.<id>`):
 * a provider can stream to the inbox it was handed but never forge anybody's reply.
 */
export const STREAM_INBOX_PATTERN = "_INBOX.*.stream.>";

export function streamInbox(inboxPrefix: string): string {
  const s = `${inboxPrefix}.stream.${randomBytes(12).toString("base64url").replace(/[-_]/g, "x")}`;
  if (!isStreamInbox(s)) {
    throw new Error(`inbox prefix "${inboxPrefix}" must be _INBOX.<one token>`);
  }
  return s;
}

export function isStreamInbox(subject: string): boolean {
  try {
    assertPublishSubject(subject);
  } catch {
    return false;
  }
  return subjectMatches(STREAM_INBOX_PATTERN, subject);
}
