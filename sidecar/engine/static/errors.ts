/** The static engine's error; `code` is one of the wire's ErrorReply codes. */
import type { ErrorReply } from "../../../core/protocol/messages.js";

export class StaticEngineError extends Error {
  override readonly name = "StaticEngineError";
  constructor(
    readonly code: Extract<ErrorReply["code"], "denied" | "invalid" | "not_found" | "too_large">,
    message: string,
  ) {
    super(message);
  }
}
