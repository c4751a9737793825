/**
 * Message bodies of the wire protocol, one zod schema per message kind. The schemas are the
 * single source of truth: TypeScript types are inferred from them, the codec validates with
 * them, and docs/protocol.md is generated from them.
 *
 * Bodies are strict: an unknown field is an error, because a field the reader silently drops
 * is a field a newer writer believes was honoured (a budget hint, a deadline, a token).
 */
import { z } from "zod";

const nonEmpty = z.string().min(1);
const count = z.number().int().nonnegative();
/** Money on the wire is integer micro-USD (1 USD = 1,000,000), never a float. */
const microUsd = z.number().int().nonnegative().describe("integer micro-USD");
const jsonObject = z.record(z.string(), z.unknown());

// ── LLM ─────────────────────────────────────────────────────────────────────────────────────

export const TextPart = z.strictObject({ type: z.literal("text"), text: z.string() });
export const ToolUsePart = z.strictObject({
  type: z.literal("tool_use"),
  id: nonEmpty,
  name: nonEmpty,
  input: jsonObject,
});
export const ToolResultPart = z.strictObject({
  type: z.literal("tool_result"),
  toolUseId: nonEmpty,
  content: z.string(),
  isError: z.boolean().default(false),
});
export const ContentPart = z.discriminatedUnion("type", [TextPart, ToolUsePart, ToolResultPart]);
export type ContentPart = z.infer<typeof ContentPart>;

export const ChatMessage = z.strictObject({
  role: z.enum(["system", "user", "assistant", "tool"]),
  content: z.union([z.string(), z.array(ContentPart)]),
});
export type ChatMessage = z.infer<typeof ChatMessage>;

export const ToolSpec = z.strictObject({
  name: nonEmpty,
  description: z.string(),
  inputSchema: jsonObject.describe("JSON Schema of the arguments"),
});
export type ToolSpec = z.infer<typeof ToolSpec>;

export const Usage = z.strictObject({
  inputTokens: count,
  outputTokens: count,
  costMicroUsd: microUsd.optional(),
});
export type Usage = z.infer<typeof Usage>;

export const LlmChatRequest = z.strictObject({
  model: z.string().optional().describe("model hint; a router may override it"),
  messages: z.array(ChatMessage).min(1),
  tools: z.array(ToolSpec).optional(),
  maxTokens: z.number().int().positive().optional(),
  temperature: z.number().min(0).max(2).optional(),
  stopSequences: z.array(z.string()).optional(),
  stream: z
    .string()
    .optional()
    .describe(
      "stream inbox `_INBOX.<caller>.stream.<id>` where the provider publishes llm.delta messages while it works",
    ),
  metadata: jsonObject.optional(),
});
export type LlmChatRequest = z.infer<typeof LlmChatRequest>;

export const StopReason = z.enum(["end_turn", "tool_use", "max_tokens", "stop_sequence", "error"]);

export const LlmChatResponse = z.strictObject({
  provider: nonEmpty,
  model: nonEmpty,
  content: z.array(ContentPart),
  stopReason: StopReason,
  usage: Usage,
  metadata: jsonObject
    .optional()
    .describe("who answered and why: cache hit, router choice, replay notice"),
});
export type LlmChatResponse = z.infer<typeof LlmChatResponse>;

export const LlmDelta = z.strictObject({
  seq: count.describe("0, 1, 2 … per request, so a reader can detect loss or reordering"),
  text: z.string().optional(),
  toolUse: z
    .strictObject({ id: nonEmpty, name: z.string().optional(), inputJson: z.string() })
    .optional()
    .describe("a fragment of a tool call's JSON arguments"),
  done: z.boolean().optional(),
});
export type LlmDelta = z.infer<typeof LlmDelta>;

// ── Tools ───────────────────────────────────────────────────────────────────────────────────

export const ToolDescribeRequest = z.strictObject({});
export const ToolDescribeResponse = z.strictObject({ tools: z.array(ToolSpec) });

export const ToolExecuteRequest = z.strictObject({
  callId: nonEmpty,
  tool: nonEmpty,
  arguments: jsonObject,
  token: z.string().optional().describe("capability token (compact JWS) presented for this call"),
});
export type ToolExecuteRequest = z.infer<typeof ToolExecuteRequest>;

export const ToolOutput = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("text"), text: z.string() }),
  z.strictObject({ type: z.literal("json"), value: z.unknown() }),
]);

export const ToolResult = z.strictObject({
  callId: nonEmpty,
  content: z.array(ToolOutput),
  isError: z.boolean(),
  usage: Usage.optional(),
});
export type ToolResult = z.infer<typeof ToolResult>;

export const ToolCancel = z.strictObject({ callId: nonEmpty, reason: z.string() });

// ── Context (static capsules) ───────────────────────────────────────────────────────────────

export const ContextRequest = z.strictObject({
  names: z.array(nonEmpty).optional().describe("prompt names or file paths; all when absent"),
});
export const ContextBundle = z.strictObject({
  prompts: z.array(z.strictObject({ name: nonEmpty, text: z.string() })),
  files: z.array(
    z.strictObject({ path: nonEmpty, description: z.string().optional(), content: z.string() }),
  ),
});

// ── Sessions ────────────────────────────────────────────────────────────────────────────────

export const SessionPrompt = z.strictObject({
  text: nonEmpty,
  history: z
    .array(ChatMessage)
    .optional()
    .describe("earlier turns of the session (user and assistant texts), oldest first"),
  stdin: z.string().optional().describe("piped input (pipeline mode), kept apart from the prompt"),
  mode: z.enum(["safe", "guided", "autonomous", "yolo"]).optional(),
});

export const SessionEvent = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("delta"), seq: count, text: z.string() }),
  z.strictObject({
    type: z.literal("tool_call"),
    callId: nonEmpty,
    tool: nonEmpty,
    arguments: jsonObject,
  }),
  z.strictObject({
    type: z.literal("tool_result"),
    callId: nonEmpty,
    isError: z.boolean(),
    summary: z.string(),
  }),
  z.strictObject({ type: z.literal("approval_needed"), requestId: nonEmpty, summary: z.string() }),
  z.strictObject({ type: z.literal("usage"), usage: Usage }),
  z.strictObject({ type: z.literal("status"), text: z.string() }),
]);

export const SessionResponse = z.strictObject({
  text: z.string(),
  stopReason: z.enum(["done", "step_limit", "budget", "denied", "error", "cancelled"]),
  usage: Usage,
});

// ── Approvals ───────────────────────────────────────────────────────────────────────────────

export const ApprovalAction = z.strictObject({
  kind: z.enum(["tool", "fs_read", "fs_write", "net", "process", "capsule_install", "other"]),
  target: nonEmpty.describe("tool name, path, host:port or command"),
  argsHash: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .nullable()
    .describe("sha256 of the canonical JSON arguments; a decision binds to it"),
});

export const ApprovalRequest = z.strictObject({
  requestId: nonEmpty,
  action: ApprovalAction,
  reason: z.string(),
  summary: z.string().describe("what a person is asked, in one line"),
});

export const ApprovalDecisionKind = z.enum([
  "allow_once",
  "allow_session",
  "allow_workspace",
  "allow_always",
  "deny",
]);

export const ApprovalDecision = z.strictObject({
  requestId: nonEmpty,
  decision: ApprovalDecisionKind,
  decidedBy: nonEmpty,
  note: z.string().optional(),
});

// ── Audit, capsules, errors ─────────────────────────────────────────────────────────────────

export const AuditEntryNotice = z.strictObject({
  seq: count,
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  layer: nonEmpty,
  action: nonEmpty,
  decision: z.enum(["allow", "deny", "info"]),
  target: z.string(),
  reason: z.string(),
});

export const CapsuleLifecycle = z.strictObject({
  state: z.enum(["starting", "ready", "draining", "stopped", "crashed"]),
  version: nonEmpty,
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  reason: z.string().optional(),
});

export const CapsuleHealthRequest = z.strictObject({});
export const CapsuleHealth = z.strictObject({
  ready: z.boolean(),
  uptimeMs: count,
  inFlight: count,
});

export const ErrorReply = z.strictObject({
  code: z.enum([
    "denied",
    "invalid",
    "not_found",
    "timeout",
    "budget",
    "unavailable",
    "too_large",
    "internal",
  ]),
  message: nonEmpty,
  layer: z.string().optional().describe("the security layer that denied, when code is denied"),
});
export type ErrorReply = z.infer<typeof ErrorReply>;
