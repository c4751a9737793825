import { describe, expect, it } from "vitest";
import { generateIssuerKey, keyIdOf } from "./keys.js";
import { mintToken } from "./mint.js";

const issuer = generateIssuerKey();
const ok = { sub: "alice", res: ["tool:git/*"], perm: ["execute" as const], exp: 2_000_000_000 };

function decode(token: string, part: 0 | 1): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[part]!, "base64url").toString());
}

describe("mintToken", () => {
  it("writes the fixed header and fills iss, iat and a 128-bit jti", () => {
    const t = mintToken(ok, issuer);
    expect(decode(t, 0)).toEqual({ alg: "EdDSA", typ: "astrid-cap+jwt", kid: issuer.kid });
    const claims = decode(t, 1);
    expect(claims.iss).toBe(issuer.kid);
    expect(claims.jti).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(Buffer.from(claims.jti as string, "base64url")).toHaveLength(16);
    expect(mintToken(ok, issuer)).not.toBe(t);
  });

  it("derives the key id from sha256 of the raw public key", () => {
    expect(issuer.kid).toBe(keyIdOf(issuer.publicKeyRaw));
    expect(issuer.kid).toMatch(/^[A-Za-z0-9_-]{16}$/);
  });

  it("refuses .. in fs globs, unknown prefixes and bad net resources", () => {
    expect(() => mintToken({ ...ok, res: ["fs:/work/../etc/**"] }, issuer)).toThrow(
      'invalid claims: res.0: resource "fs:/work/../etc/**": "." and ".." path segments are refused',
    );
    expect(() => mintToken({ ...ok, res: ["file:///etc/passwd"] }, issuer)).toThrow(
      'invalid claims: res.0: resource "file:///etc/passwd": expected a tool:, fs:, net:, topic: or process: prefix',
    );
    expect(() => mintToken({ ...ok, res: ["fs:relative/**"] }, issuer)).toThrow(
      'invalid claims: res.0: resource "fs:relative/**": fs paths must be absolute',
    );
    expect(() => mintToken({ ...ok, res: ["net:api.example.com"] }, issuer)).toThrow(
      'invalid claims: res.0: resource "net:api.example.com": expected net:<host>:<port 1-65535>',
    );
    expect(() => mintToken({ ...ok, res: ["topic:a.>.b"] }, issuer)).toThrow(
      'invalid claims: res.0: resource "topic:a.>.b": pattern "a.>.b": ">" is only allowed as the last token',
    );
  });

  it("refuses exp before iat, unknown claims, and an iss that is not the signer", () => {
    expect(() => mintToken({ ...ok, iat: 100, exp: 50 }, issuer)).toThrow(
      "invalid claims: exp: exp must be after iat",
    );
    expect(() => mintToken({ ...ok, admin: true } as typeof ok, issuer)).toThrow(
      'invalid claims: Unrecognized key: "admin"',
    );
    const other = generateIssuerKey();
    expect(() => mintToken({ ...ok, iss: other.kid }, issuer)).toThrow(
      `iss "${other.kid}" is not the signing key's id "${issuer.kid}"`,
    );
  });
});
