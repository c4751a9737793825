/**
 * The audit record schemas: the single source of truth for what a chain file holds. Types are
 * inferred from them; the writer validates input with them and the verifier validates every line.
 *
 * A segment file is JSON Lines, one record per line, of three kinds:
 * - `segment` — the header, first line of every segment: names the previous segment file and its
 *   last hash, so a deleted or swapped segment is named by the verifier;
 * - `entry` — one decision of one layer, linked by `prev` to the entry before it and identified by
 *   `hash` = sha256 hex of `entryHashPayload(entry)`;
 * - `seal` — a signature over the hash of the entry right before it; through the links it covers
 *   every earlier entry (used by the "seal" signing strategy, one per group-commit batch).
 * With the "entry" signing strategy an entry carries its own `signature` instead.
 */
import { hash as oneShotHash } from "node:crypto";
import { z } from "zod";
import { canonicalJson } from "../canonical-json.js";
import type { Layer } from "../security/decision.js";
import { AuditInputError } from "./errors.js";

/** `prev` of the very first entry of a chain. */
export const GENESIS_HASH = "0".repeat(64);

/** The five layers' names plus `lifecycle` (capsule start/stop, the chain's own recoveries). */
export const AUDIT_LAYERS = [
  "sandbox",
  "gate",
  "acl",
  "token",
  "budget",
  "approval",
  "lifecycle",
] as const;
export type AuditLayer = (typeof AUDIT_LAYERS)[number];
// A layer added to decision.ts without being added here would be unloggable: fail the build.
const everyLayerIsAuditable: Exclude<Layer, AuditLayer> extends never ? true : never = true;
void everyLayerIsAuditable;

export const AUDIT_DECISIONS = ["allow", "deny", "info"] as const;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, "expected 64 lowercase hex digits (sha256)");
const isoUtcMs = z
  .string()
  .regex(
    /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/,
    "expected ISO-8601 UTC with milliseconds, e.g. 2026-01-31T12:00:00.000Z",
  );
const field = z.string().max(1024, "expected at most 1024 characters");
const name = field.min(1, "expected a non-empty string");
const action = z
  .string()
  .regex(
    /^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$/,
    'expected dotted lowercase words, e.g. "fs.read" or "tool.call"',
  );
const signatureB64 = z
  .string()
  .regex(/^[A-Za-z0-9_-]{86}$/, "expected a base64url ed25519 signature (86 characters)");
const keyId = z
  .string()
  .regex(/^[A-Za-z0-9._:-]{1,128}$/, "expected a key id of 1-128 characters [A-Za-z0-9._:-]");

/** What a caller hands to `AuditChain.append`; the writer adds seq, time, links and hashes. */
export const AuditEntryInputSchema = z.strictObject({
  session: field,
  principal: name,
  capsule: field,
  layer: z.enum(AUDIT_LAYERS),
  action,
  /** Path, subject, tool or host the action was aimed at. */
  target: field,
  decision: z.enum(AUDIT_DECISIONS),
  reason: z.string().max(4096, "expected at most 4096 characters"),
  /** Hashed (never stored), so secrets in tool arguments do not end up in the log. */
  args: z.unknown().optional(),
});
export type AuditEntryInput = z.input<typeof AuditEntryInputSchema>;

export const EntrySignatureSchema = z.strictObject({ keyId, sig: signatureB64 });

/** A stored entry: the caller's fields (args replaced by their hash) plus what the writer adds. */
export const AuditEntrySchema = z.strictObject({
  type: z.literal("entry"),
  seq: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  time: isoUtcMs,
  ...AuditEntryInputSchema.omit({ args: true }).shape,
  argsHash: sha256Hex.nullable(),
  prev: sha256Hex,
  hash: sha256Hex,
  signature: EntrySignatureSchema.optional(),
});
export type AuditEntry = z.infer<typeof AuditEntrySchema>;

export const SealRecordSchema = z.strictObject({
  type: z.literal("seal"),
  /** seq and hash of the entry this seal signs: the last entry of its batch. */
  seq: z.number().int().min(0),
  hash: sha256Hex,
  keyId,
  sig: signatureB64,
});
export type SealRecord = z.infer<typeof SealRecordSchema>;

const segmentName = z.string().regex(/^segment-\d{6}\.jsonl$/, "expected segment-NNNNNN.jsonl");

export const SegmentHeaderSchema = z.strictObject({
  type: z.literal("segment"),
  segment: segmentName,
  /** Null only for segment-000001.jsonl. */
  previous: segmentName.nullable(),
  /** Hash of the last entry of `previous` (GENESIS_HASH for the first segment). */
  previousHash: sha256Hex,
  /** seq the first entry of this segment must carry. */
  firstSeq: z.number().int().min(0),
  time: isoUtcMs,
});
export type SegmentHeader = z.infer<typeof SegmentHeaderSchema>;

export const AuditRecordSchema = z.discriminatedUnion("type", [
  AuditEntrySchema,
  SealRecordSchema,
  SegmentHeaderSchema,
]);
export type AuditRecord = z.infer<typeof AuditRecordSchema>;

/** The fields covered by `hash`: every field of an entry except `type`, `hash` and `signature`. */
export type HashedFields = Omit<AuditEntry, "type" | "hash" | "signature">;

/**
 * The exact bytes hashed: canonical JSON (core/canonical-json.ts) of the twelve hashed fields. Written
 * out by hand in sorted key order because it runs once per entry on both sides; entry.test.ts
 * proves it equals `canonicalJson` of the same fields. Callers pass schema-validated fields: seq,
 * time, layer, action, decision, argsHash and prev then match patterns that need no JSON escaping,
 * so only the free-text fields go through JSON.stringify (half the cost of this function).
 */
export function entryHashPayload(e: HashedFields): string {
  const s = JSON.stringify;
  return (
    `{"action":"${e.action}","argsHash":${e.argsHash === null ? "null" : `"${e.argsHash}"`}` +
    `,"capsule":${s(e.capsule)},"decision":"${e.decision}","layer":"${e.layer}"` +
    `,"prev":"${e.prev}","principal":${s(e.principal)},"reason":${s(e.reason)}` +
    `,"seq":${e.seq},"session":${s(e.session)},"target":${s(e.target)},"time":"${e.time}"}`
  );
}

export function computeEntryHash(e: HashedFields): string {
  // One-shot crypto.hash: half the cost of createHash().update().digest() for small inputs.
  return oneShotHash("sha256", entryHashPayload(e), "hex");
}

/** sha256 hex of the canonical JSON of a tool call's (or request's) arguments. */
export function hashArgs(args: unknown): string {
  return oneShotHash("sha256", canonicalJson(args), "hex");
}

/** Validates `append` input, with one message listing every bad field. */
export function parseEntryInput(input: unknown): z.output<typeof AuditEntryInputSchema> {
  const parsed = AuditEntryInputSchema.safeParse(input);
  if (!parsed.success)
    throw new AuditInputError(`invalid audit entry: ${describeIssues(parsed.error)}`);
  return parsed.data;
}

export function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((i) => `${i.path.length > 0 ? i.path.join(".") : "(record)"}: ${i.message}`)
    .join("; ");
}
