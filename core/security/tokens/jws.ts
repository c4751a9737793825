/**
 * Compact JWS (RFC 7515) framing for capability tokens: `header.payload.signature`, each part
 * base64url without padding. Only the exact header we mint is accepted, so the envelope cannot
 * carry algorithm choices or embedded keys (`jwk`, `jku`, `x5u`) an attacker could steer.
 */

export const TOKEN_TYP = "astrid-cap+jwt";
export const MAX_TOKEN_BYTES = 8192;

export interface TokenHeader {
  readonly alg: "EdDSA";
  readonly typ: typeof TOKEN_TYP;
  readonly kid: string;
}

export interface SplitToken {
  readonly header: TokenHeader;
  /** The signed bytes: `header.payload` as ASCII. */
  readonly signingInput: string;
  readonly payloadPart: string;
  readonly signature: Buffer;
}

const B64URL = /^[A-Za-z0-9_-]+$/;

export function b64url(data: Buffer | Uint8Array | string): string {
  return Buffer.from(data).toString("base64url");
}

/** Strict decode: Node's decoder skips junk, so a part must re-encode to itself. */
export function fromB64url(part: string): Buffer | undefined {
  if (!B64URL.test(part)) return undefined;
  const buf = Buffer.from(part, "base64url");
  return buf.toString("base64url") === part ? buf : undefined;
}

export function encodeHeader(kid: string): string {
  return b64url(JSON.stringify({ alg: "EdDSA", typ: TOKEN_TYP, kid }));
}

/** Either the parsed token or why it is refused; the reason is a deny reason as-is. */
export function splitToken(token: string): SplitToken | string {
  if (token.length > MAX_TOKEN_BYTES) {
    return `token is ${token.length} bytes; the limit is ${MAX_TOKEN_BYTES}`;
  }
  const parts = token.split(".");
  if (parts.length !== 3) return 'malformed token: expected three base64url parts joined by "."';
  const [h, p, s] = parts as [string, string, string];
  const headerBytes = fromB64url(h);
  const payloadOk = B64URL.test(p);
  const signature = fromB64url(s);
  if (!headerBytes || !payloadOk || !signature) {
    return "malformed token: a part is not canonical base64url";
  }
  let header: unknown;
  try {
    header = JSON.parse(headerBytes.toString("utf8"));
  } catch {
    return "malformed token: header is not JSON";
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    return "malformed token: header is not a JSON object";
  }
  const { alg, typ, kid, ...rest } = header as Record<string, unknown>;
  // alg first: `none` and HMAC algorithms (keyed with the public key) are the classic JWT forgeries.
  if (alg !== "EdDSA") return `alg ${JSON.stringify(alg)} refused; only EdDSA is accepted`;
  if (typ !== TOKEN_TYP) return `typ ${JSON.stringify(typ)} refused; expected "${TOKEN_TYP}"`;
  if (typeof kid !== "string") return "malformed token: header has no kid";
  const extra = Object.keys(rest);
  if (extra.length > 0)
    return `header member "${extra[0]}" refused; only alg, typ and kid are allowed`;
  if (signature.length !== 64) {
    return `malformed token: signature is ${signature.length} bytes, expected 64`;
  }
  return { header: { alg, typ, kid }, signingInput: `${h}.${p}`, payloadPart: p, signature };
}
