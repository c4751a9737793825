/**
 * The one error the MCP engine throws. `code` uses the wire's ErrorReply codes (plus
 * "cancelled" for a caller's own abort) so the sidecar can answer a tool request without
 * re-classifying SDK, socket and process errors itself.
 */
import type { ErrorReply } from "../../../core/protocol/messages.js";

export type McpErrorCode = ErrorReply["code"] | "cancelled";

export class McpEngineError extends Error {
  override readonly name = "McpEngineError";
  constructor(
    readonly code: McpErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * JSON-RPC error code our transports put in place of a response they refused for its size,
 * so that only the call it answered fails (in the server-defined range -32000..-32099).
 */
export const RESULT_TOO_LARGE = -32_099;
