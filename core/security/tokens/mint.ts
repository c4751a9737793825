/** Minting: claims in, compact JWS out, signed by an issuer key. */
import { randomBytes, sign } from "node:crypto";
import { type CapabilityClaims, capabilityClaimsSchema, describeIssues } from "./claims.js";
import { b64url, encodeHeader } from "./jws.js";
import type { IssuerKey } from "./keys.js";

export class TokenMintError extends Error {
  override readonly name = "TokenMintError";
}

/** Claims a caller gives; iss, iat and jti are filled in when left out. */
export type MintClaims = Omit<CapabilityClaims, "iss" | "iat" | "jti"> &
  Partial<Pick<CapabilityClaims, "iss" | "iat" | "jti">>;

export function newJti(): string {
  return b64url(randomBytes(16));
}

export function mintToken(
  claims: MintClaims,
  issuer: Pick<IssuerKey, "kid" | "privateKey">,
): string {
  const full = {
    ...claims,
    iss: claims.iss ?? issuer.kid,
    iat: claims.iat ?? Math.floor(Date.now() / 1000),
    jti: claims.jti ?? newJti(),
  };
  const parsed = capabilityClaimsSchema.safeParse(full);
  if (!parsed.success) throw new TokenMintError(`invalid claims: ${describeIssues(parsed.error)}`);
  if (parsed.data.iss !== issuer.kid) {
    throw new TokenMintError(
      `iss "${parsed.data.iss}" is not the signing key's id "${issuer.kid}"`,
    );
  }
  const signingInput = `${encodeHeader(issuer.kid)}.${b64url(JSON.stringify(parsed.data))}`;
  const signature = sign(null, Buffer.from(signingInput, "ascii"), issuer.privateKey);
  return `${signingInput}.${b64url(signature)}`;
}
