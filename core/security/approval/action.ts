/**
 * What an approval is about. The same shape is used by the mode table (does this kind of
 * action ask?), the approval broker (what the person is shown) and the grant store (what a
 * grant matches), so a grant can never be about something other than what was shown.
 */
import { z } from "zod";
import { canonicalHash } from "../../canonical-json.js";

export const ACTION_KINDS = [
  "fs_read",
  "fs_write",
  "net",
  "process",
  "tool",
  "capsule_install",
] as const;

export type ActionKind = (typeof ACTION_KINDS)[number];

export const approvalActionSchema = z.strictObject({
  kind: z.enum(ACTION_KINDS),
  /** tool name, absolute path, host:port, command, or capsule id — by kind. */
  target: z.string().min(1).max(4096),
  /** sha256 (hex) of the canonical JSON of the call's arguments: see argsHash(). */
  argsHash: z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex characters (sha256)"),
});

export type ApprovalAction = z.output<typeof approvalActionSchema>;

/** sha256 of the canonical JSON of a call's arguments. */
export function argsHash(args: unknown): string {
  return canonicalHash(args);
}
