/**
 * The claims of a capability token: the single source of truth for their shape. Minting and
 * verification both parse through this schema, so a token that could not have been minted is
 * refused on verify too (a key holder with a buggy or hostile minter gains nothing).
 */
import { z } from "zod";
import { parseResource } from "./resource.js";

export const PERMISSIONS = ["read", "write", "execute", "publish", "subscribe", "connect"] as const;
export type Permission = (typeof PERMISSIONS)[number];

/** Issuer key ids: 16 base64url characters (96 bits of the key's sha256). */
export const KEY_ID = /^[A-Za-z0-9_-]{16}$/;
/** Token ids: 128 random bits, base64url without padding. */
export const JTI = /^[A-Za-z0-9_-]{22}$/;

const resourceGlob = z.string().superRefine((s, ctx) => {
  try {
    parseResource(s, "glob");
  } catch (err) {
    ctx.addIssue({ code: "custom", message: (err as Error).message });
  }
});

const seconds = z.int().nonnegative();

export const capabilityClaimsSchema = z
  .strictObject({
    /** Key id of the issuer key that signed the token. */
    iss: z.string().regex(KEY_ID, "expected a 16-character base64url key id"),
    /** The principal the token is bound to. */
    sub: z.string().min(1).max(256),
    /** Resource globs the token grants. */
    res: z.array(resourceGlob).min(1).max(64),
    perm: z.array(z.enum(PERMISSIONS)).min(1),
    iat: seconds,
    nbf: seconds.optional(),
    exp: seconds,
    jti: z.string().regex(JTI, "expected 22 base64url characters (128 random bits)"),
    /** Single use: the first successful verify consumes it. */
    once: z.literal(true).optional(),
    /**
     * Argument binding: sha256 (hex) of the canonical JSON of the call's arguments. An "allow
     * always" approval of one tool call or command must not turn into a grant for any arguments.
     */
    arg: z
      .string()
      .regex(/^[0-9a-f]{64}$/, "expected 64 lowercase hex digits (sha256 of the arguments)")
      .optional(),
    /** Session binding: only valid for calls made in this session. */
    ses: z.string().min(1).max(128).optional(),
  })
  .refine((c) => c.exp > c.iat, { message: "exp must be after iat", path: ["exp"] })
  .refine((c) => c.nbf === undefined || c.nbf < c.exp, {
    message: "nbf must be before exp",
    path: ["nbf"],
  });

export type CapabilityClaims = z.infer<typeof capabilityClaimsSchema>;

/** One line naming every problem, e.g. `res.0: resource "fs:/a/../b": ...; exp: ...`. */
export function describeIssues(err: z.ZodError): string {
  return err.issues
    .map((i) => (i.path.length > 0 ? `${i.path.join(".")}: ${i.message}` : i.message))
    .join("; ");
}
