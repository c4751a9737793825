/**
 * The envelope every message travels in, and the codec that enforces the size limit and the
 * schemas at the boundary. Readers keep messages of kinds they do not know as "unknown"
 * instead of failing, so a newer capsule can talk to an older one (upstream Astrid's habit).
 */
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { type BodyOf, type KindName, MESSAGE_KINDS } from "./topics.js";

/** Largest encoded message; equal to nats-server's default max_payload so both buses agree. */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

const token = z
  .string()
  .regex(/^[A-Za-z0-9_-]{1,128}$/, "expected 1-128 characters of [A-Za-z0-9_-]");

export const EnvelopeSchema = z.strictObject({
  v: z.literal(1).describe("envelope version"),
  id: z.string().min(1).max(128).describe("unique message id (UUID)"),
  kind: z.string().min(1).max(64).describe("message kind, e.g. tool.execute.request"),
  session: token.describe("session the message belongs to"),
  principal: z.string().min(1).max(256).describe("who the work is done for (user or agent)"),
  capsule: token.describe("sending capsule (or `cli`, `operator`)"),
  time: z.number().int().nonnegative().describe("sent at, milliseconds since the Unix epoch"),
  deadline: z
    .number()
    .int()
    .nonnegative()
    .optional()
    .describe("requests only: drop the work after this time (ms since epoch)"),
  body: z.unknown(),
});

export interface EnvelopeMeta {
  readonly session: string;
  readonly principal: string;
  readonly capsule: string;
}

export type Envelope<K extends KindName = KindName> = {
  readonly v: 1;
  readonly id: string;
  readonly kind: K;
  readonly session: string;
  readonly principal: string;
  readonly capsule: string;
  readonly time: number;
  readonly deadline?: number;
  readonly body: BodyOf<K>;
};

export type UnknownEnvelope = Omit<Envelope, "kind" | "body"> & {
  readonly kind: string;
  readonly body: unknown;
  readonly unknownKind: true;
};

export type ProtocolErrorCode = "too_large" | "malformed" | "invalid" | "expired";

export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
  constructor(
    readonly code: ProtocolErrorCode,
    message: string,
  ) {
    super(message);
  }
}

function describeIssues(err: z.ZodError): string {
  return err.issues
    .map((i) => `${i.path.length > 0 ? i.path.join(".") : "(root)"}: ${i.message}`)
    .join("; ");
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export interface EncodeOptions {
  /** Relative deadline for requests; required for kinds that need one. */
  readonly timeoutMs?: number;
  readonly id?: string;
  readonly now?: number;
}

/** Build, validate and serialise a message. Throws ProtocolError on a bad body or size. */
export function encode<K extends KindName>(
  kind: K,
  body: BodyOf<K>,
  meta: EnvelopeMeta,
  opts: EncodeOptions = {},
): Uint8Array {
  const spec = MESSAGE_KINDS.get(kind);
  if (!spec) throw new ProtocolError("invalid", `unknown message kind "${kind}"`);
  const parsed = spec.schema.safeParse(body);
  if (!parsed.success) {
    throw new ProtocolError("invalid", `${kind} body: ${describeIssues(parsed.error)}`);
  }
  if (spec.needsDeadline && opts.timeoutMs === undefined) {
    throw new ProtocolError("invalid", `${kind} is a request and needs a deadline (timeoutMs)`);
  }
  const now = opts.now ?? Date.now();
  const env = {
    v: 1,
    id: opts.id ?? randomUUID(),
    kind,
    session: meta.session,
    principal: meta.principal,
    capsule: meta.capsule,
    time: now,
    ...(opts.timeoutMs !== undefined ? { deadline: now + opts.timeoutMs } : {}),
    body: parsed.data,
  };
  const head = EnvelopeSchema.safeParse(env);
  if (!head.success) {
    throw new ProtocolError("invalid", `envelope: ${describeIssues(head.error)}`);
  }
  const bytes = encoder.encode(JSON.stringify(env));
  if (bytes.length > MAX_MESSAGE_BYTES) {
    throw new ProtocolError(
      "too_large",
      `${kind} message of ${bytes.length} bytes exceeds the limit of ${MAX_MESSAGE_BYTES} bytes`,
    );
  }
  return bytes;
}

export interface DecodeOptions {
  /** Refuse requests whose deadline has passed (the caller has already given up). */
  readonly now?: number;
  readonly checkDeadline?: boolean;
}

/**
 * Parse and validate a message. Known kinds come back with a typed body; unknown kinds come
 * back as UnknownEnvelope with the body untouched. Every failure is a ProtocolError whose
 * message says what was wrong, so a sidecar can answer with an `error` reply instead of hanging.
 */
export function decode(bytes: Uint8Array, opts: DecodeOptions = {}): Envelope | UnknownEnvelope {
  if (bytes.length > MAX_MESSAGE_BYTES) {
    throw new ProtocolError(
      "too_large",
      `message of ${bytes.length} bytes exceeds the limit of ${MAX_MESSAGE_BYTES} bytes`,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(decoder.decode(bytes));
  } catch (err) {
    throw new ProtocolError("malformed", `message is not UTF-8 JSON: ${(err as Error).message}`);
  }
  const head = EnvelopeSchema.safeParse(raw);
  if (!head.success) {
    throw new ProtocolError("invalid", `envelope: ${describeIssues(head.error)}`);
  }
  const env = head.data;
  const spec = MESSAGE_KINDS.get(env.kind);
  if (!spec) return { ...env, unknownKind: true } as UnknownEnvelope;
  if (spec.needsDeadline && env.deadline === undefined) {
    throw new ProtocolError("invalid", `${env.kind} is a request and carries no deadline`);
  }
  if (opts.checkDeadline !== false && env.deadline !== undefined) {
    const now = opts.now ?? Date.now();
    if (env.deadline <= now) {
      throw new ProtocolError(
        "expired",
        `${env.kind} ${env.id} expired ${now - env.deadline} ms ago (deadline ${new Date(env.deadline).toISOString()})`,
      );
    }
  }
  const body = spec.schema.safeParse(env.body);
  if (!body.success) {
    throw new ProtocolError("invalid", `${env.kind} body: ${describeIssues(body.error)}`);
  }
  return { ...env, body: body.data } as Envelope;
}

export function isKnown(env: Envelope | UnknownEnvelope): env is Envelope {
  return !("unknownKind" in env);
}

/** Narrow a decoded envelope to one kind, or throw a clear error naming what arrived instead. */
export function expectKind<K extends KindName>(
  env: Envelope | UnknownEnvelope,
  kind: K,
): Envelope<K> {
  if (env.kind !== kind) {
    throw new ProtocolError("invalid", `expected a ${kind} message, got ${env.kind}`);
  }
  return env as unknown as Envelope<K>;
}
