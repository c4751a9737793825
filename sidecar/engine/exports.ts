/**
 * What a capsule serves on the bus, whatever its engine: a list of exports, each a subject and
 * a function from a decoded request to a reply body. The sidecar puts every call through the
 * layers before calling one, so engines know nothing of security.
 */

import type { z } from "zod";
import type { Envelope } from "../../core/protocol/envelope.js";
import type * as m from "../../core/protocol/messages.js";
import type {
  ContextRequest,
  ToolExecuteRequest,
  ToolResult,
} from "../../core/protocol/messages.js";
import { subjects } from "../../core/protocol/topics.js";
import type { CallContext, HostApi } from "../abi/host.js";
import type { McpEngine } from "./mcp/mcp-engine.js";
import type { StaticEngine } from "./static/static-engine.js";
import type { GuestEngine } from "./wasm/guest-engine.js";

export type Reply =
  | { readonly kind: "tool.result"; readonly body: ToolResult }
  | {
      readonly kind: "tool.describe.response";
      readonly body: z.infer<typeof m.ToolDescribeResponse>;
    }
  | { readonly kind: "llm.chat.response"; readonly body: z.infer<typeof m.LlmChatResponse> }
  | { readonly kind: "context.bundle"; readonly body: z.infer<typeof m.ContextBundle> }
  | { readonly kind: "session.response"; readonly body: z.infer<typeof m.SessionResponse> };

export type ExportKind = "tool" | "describe" | "llm" | "context" | "session";

export interface CapsuleExport {
  readonly subject: string;
  readonly kind: ExportKind;
  /** The request kind this export accepts. */
  readonly accepts:
    | "tool.execute.request"
    | "tool.describe.request"
    | "llm.chat.request"
    | "context.request"
    | "session.prompt";
  call(req: Envelope, ctx: CallContext, host: HostApi): Promise<Reply>;
}

function remaining(ctx: CallContext): number {
  return Math.max(1, ctx.deadline - Date.now());
}

export function mcpExports(engine: McpEngine, capsule: string): CapsuleExport[] {
  const out: CapsuleExport[] = [
    {
      subject: subjects.toolDescribe(capsule),
      kind: "describe",
      accepts: "tool.describe.request",
      call: async () => ({ kind: "tool.describe.response", body: { tools: engine.tools() } }),
    },
  ];
  for (const tool of engine.tools()) {
    out.push({
      subject: subjects.toolExecute(tool.name),
      kind: "tool",
      accepts: "tool.execute.request",
      async call(req, ctx) {
        const body = req.body as ToolExecuteRequest;
        const r = await engine.callTool(tool.name, body.arguments, { timeoutMs: remaining(ctx) });
        return {
          kind: "tool.result",
          body: { callId: body.callId, content: r.content, isError: r.isError },
        };
      },
    });
  }
  return out;
}

export function staticExports(engine: StaticEngine, capsule: string): CapsuleExport[] {
  return [
    {
      subject: subjects.contextGet(capsule),
      kind: "context",
      accepts: "context.request",
      async call(req) {
        const body = req.body as z.infer<typeof ContextRequest>;
        return { kind: "context.bundle", body: engine.bundle(body.names) };
      },
    },
  ];
}

const REPLY_OF = {
  "tool.execute.request": "tool.result",
  "tool.describe.request": "tool.describe.response",
  "llm.chat.request": "llm.chat.response",
  "context.request": "context.bundle",
  "session.prompt": "session.response",
} as const;

const KIND_OF = {
  "tool.execute.request": "tool",
  "tool.describe.request": "describe",
  "llm.chat.request": "llm",
  "context.request": "context",
  "session.prompt": "session",
} as const;

/** Which request a handler's topic receives, from the protocol's subject families. */
function acceptsOf(topic: string): CapsuleExport["accepts"] {
  if (topic.startsWith("tool.v1.execute.")) return "tool.execute.request";
  if (topic.startsWith("tool.v1.describe.")) return "tool.describe.request";
  if (topic.startsWith("llm.v1.chat.")) return "llm.chat.request";
  if (topic.startsWith("context.v1.get.")) return "context.request";
  if (topic.startsWith("session.v1.prompt.")) return "session.prompt";
  throw new Error(
    `[[handler]] topic "${topic}" is not a request family a capsule can serve (tool.v1.execute.*, tool.v1.describe.*, llm.v1.chat.*, context.v1.get.*, session.v1.prompt.*)`,
  );
}

/**
 * A WASM capsule serves what its manifest's [[handler]] entries name: the guest function gets
 * the request body and returns the reply body, which the sidecar validates against the protocol
 * before it leaves (a guest cannot send a malformed reply).
 */
export function wasmExports(
  engine: GuestEngine,
  handlers: readonly { readonly topic: string; readonly function: string }[],
): CapsuleExport[] {
  return handlers.map((h) => {
    const accepts = acceptsOf(h.topic);
    const kind = REPLY_OF[accepts];
    return {
      subject: h.topic,
      kind: KIND_OF[accepts],
      accepts,
      async call(req, ctx, host) {
        const body = await engine.invoke(h.function, req.body, ctx, host);
        return { kind, body } as Reply;
      },
    };
  });
}
