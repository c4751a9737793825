import { generateKeyPairSync, sign } from "node:crypto";
import { beforeEach, describe, expect, it } from "vitest";
import { b64url } from "./jws.js";
import { generateIssuerKey, type IssuerKey, TrustedKeys } from "./keys.js";
import { type MintClaims, mintToken } from "./mint.js";
import { MemoryRevocationSet } from "./revocation/memory-revocation-set.js";
import { type TokenRequest, TokenVerifier } from "./verifier.js";

const T0 = Date.parse("2026-11-26T01:00:00Z");
const S0 = T0 / 1000;

let now = T0;
let issuer: IssuerKey;
let keys: TrustedKeys;
let revocations: MemoryRevocationSet;
let verifier: TokenVerifier;

const base: MintClaims = {
  sub: "alice",
  res: ["fs:/work/**", "tool:git/*", "topic:tool.v1.execute.fs", "net:*.example.com:443"],
  perm: ["read", "execute", "publish"],
  iat: S0,
  exp: S0 + 3600,
};
const readWork: TokenRequest = {
  principal: "alice",
  resource: "fs:/work/src/a.ts",
  permission: "read",
};

function mint(over: Partial<MintClaims> = {}, key: IssuerKey = issuer): string {
  return mintToken({ ...base, ...over }, key);
}

beforeEach(() => {
  now = T0;
  issuer = generateIssuerKey();
  keys = new TrustedKeys([issuer.publicKey]);
  revocations = new MemoryRevocationSet();
  verifier = new TokenVerifier({ keys, revocations, clock: () => now });
});

/** Re-signs arbitrary header and payload objects with a key, for forgeries a minter refuses. */
function craft(header: object, payload: object, key = issuer.privateKey): string {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
  return `${input}.${b64url(sign(null, Buffer.from(input), key))}`;
}

function claimsOf(token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split(".")[1]!, "base64url").toString());
}

describe("TokenVerifier: a good token", () => {
  it("allows and names the token and the glob", async () => {
    const token = mint({ jti: "AAAAAAAAAAAAAAAAAAAAAA" });
    expect(await verifier.verify(token, readWork)).toEqual({
      allowed: true,
      layer: "token",
      rule: `token AAAAAAAAAAAAAAAAAAAAAA (issuer ${issuer.kid}) grants read on "fs:/work/**"`,
    });
    expect(verifier.check(token, readWork).allowed).toBe(true);
  });

  it("verifies with noble as with node", async () => {
    const noble = new TokenVerifier({
      keys,
      revocations,
      clock: () => now,
      engine: "noble",
      cache: false,
    });
    expect((await noble.verify(mint(), readWork)).allowed).toBe(true);
  });
});

describe("TokenVerifier: envelope attacks", () => {
  it("denies a forged signature", async () => {
    const t = mint();
    const sig = Buffer.from(t.split(".")[2]!, "base64url");
    sig[5] = sig[5]! ^ 1;
    const forged = `${t.split(".").slice(0, 2).join(".")}.${b64url(sig)}`;
    expect(await verifier.verify(forged, readWork)).toMatchObject({
      allowed: false,
      reason: `bad signature for issuer key "${issuer.kid}"`,
    });
  });

  it("denies a tampered payload (a widened scope)", async () => {
    const [h, p, s] = mint().split(".");
    const claims = JSON.parse(Buffer.from(p!, "base64url").toString());
    claims.res = ["fs:/**"];
    const tampered = `${h}.${b64url(JSON.stringify(claims))}.${s}`;
    expect(
      await verifier.verify(tampered, { ...readWork, resource: "fs:/etc/passwd" }),
    ).toMatchObject({ allowed: false, reason: `bad signature for issuer key "${issuer.kid}"` });
  });

  it("denies a token signed by an untrusted key that names a trusted kid", async () => {
    const rogue = generateIssuerKey();
    const t = mintToken(
      { ...base, iss: issuer.kid },
      { kid: issuer.kid, privateKey: rogue.privateKey },
    );
    expect(await verifier.verify(t, readWork)).toMatchObject({
      allowed: false,
      reason: `bad signature for issuer key "${issuer.kid}"`,
    });
  });

  it("denies a token from a key it does not trust", async () => {
    const other = generateIssuerKey();
    expect(await verifier.verify(mint({}, other), readWork)).toMatchObject({
      allowed: false,
      reason: `unknown issuer key "${other.kid}"`,
    });
  });

  it('refuses alg "none" with an empty signature', async () => {
    const input = `${b64url(JSON.stringify({ alg: "none", typ: "astrid-cap+jwt", kid: issuer.kid }))}.${b64url(JSON.stringify(claimsOf(mint())))}`;
    expect(await verifier.verify(`${input}.`, readWork)).toMatchObject({
      allowed: false,
      reason: "malformed token: a part is not canonical base64url",
    });
    expect(await verifier.verify(`${input}.AAAA`, readWork)).toMatchObject({
      allowed: false,
      reason: 'alg "none" refused; only EdDSA is accepted',
    });
  });

  it("refuses HS256 keyed with the public key (alg confusion)", async () => {
    const { createHmac } = await import("node:crypto");
    const input = `${b64url(JSON.stringify({ alg: "HS256", typ: "astrid-cap+jwt", kid: issuer.kid }))}.${b64url(JSON.stringify(claimsOf(mint())))}`;
    const mac = createHmac("sha256", Buffer.from(issuer.publicKeyRaw)).update(input).digest();
    expect(await verifier.verify(`${input}.${b64url(mac)}`, readWork)).toMatchObject({
      allowed: false,
      reason: 'alg "HS256" refused; only EdDSA is accepted',
    });
  });

  it("refuses an embedded jwk header and a wrong typ", async () => {
    const claims = claimsOf(mint());
    const withJwk = craft(
      { alg: "EdDSA", typ: "astrid-cap+jwt", kid: issuer.kid, jwk: {} },
      claims,
    );
    expect(await verifier.verify(withJwk, readWork)).toMatchObject({
      reason: 'header member "jwk" refused; only alg, typ and kid are allowed',
    });
    const jwt = craft({ alg: "EdDSA", typ: "JWT", kid: issuer.kid }, claims);
    expect(await verifier.verify(jwt, readWork)).toMatchObject({
      reason: 'typ "JWT" refused; expected "astrid-cap+jwt"',
    });
  });

  it("denies a truncated token and an oversized one", async () => {
    const t = mint();
    expect(await verifier.verify(t.slice(0, t.lastIndexOf(".")), readWork)).toMatchObject({
      reason: 'malformed token: expected three base64url parts joined by "."',
    });
    expect(await verifier.verify(t.slice(0, -10), readWork)).toMatchObject({
      reason: "malformed token: signature is 57 bytes, expected 64",
    });
    expect(await verifier.verify(`${t}${"A".repeat(9000)}`, readWork)).toMatchObject({
      reason: `token is ${t.length + 9000} bytes; the limit is 8192`,
    });
  });

  it("denies a signed token whose claims break the schema (iss/kid mismatch, .. in fs)", async () => {
    const claims = claimsOf(mint());
    const dotdot = craft(
      { alg: "EdDSA", typ: "astrid-cap+jwt", kid: issuer.kid },
      {
        ...claims,
        res: ["fs:/work/../etc/**"],
      },
    );
    expect(await verifier.verify(dotdot, readWork)).toMatchObject({
      reason:
        'invalid claims: res.0: resource "fs:/work/../etc/**": "." and ".." path segments are refused',
    });
    const other = generateIssuerKey();
    const wrongIss = craft(
      { alg: "EdDSA", typ: "astrid-cap+jwt", kid: issuer.kid },
      {
        ...claims,
        iss: other.kid,
      },
    );
    expect(await verifier.verify(wrongIss, readWork)).toMatchObject({
      reason: `claims iss "${other.kid}" does not match header kid "${issuer.kid}"`,
    });
  });
});

describe("TokenVerifier: time", () => {
  it("denies an expired token with a precise reason", async () => {
    const t = mint({ exp: S0 + 60 });
    now = T0 + 91_000;
    expect(await verifier.verify(t, readWork)).toMatchObject({
      allowed: false,
      reason: "token expired at 2026-11-26T01:01:00.000Z (now 2026-11-26T01:01:31.000Z, skew 30 s)",
    });
  });

  it("accepts within skew on both ends", async () => {
    now = T0 + 89_000;
    expect((await verifier.verify(mint({ exp: S0 + 60 }), readWork)).allowed).toBe(true);
    now = T0 - 29_000;
    expect((await verifier.verify(mint({ nbf: S0 }), readWork)).allowed).toBe(true);
  });

  it("denies a not-yet-valid token and one issued in the future", async () => {
    expect(await verifier.verify(mint({ nbf: S0 + 120 }), readWork)).toMatchObject({
      reason:
        "token not valid before 2026-11-26T01:02:00.000Z (now 2026-11-26T01:00:00.000Z, skew 30 s)",
    });
    expect(await verifier.verify(mint({ iat: S0 + 120, exp: S0 + 500 }), readWork)).toMatchObject({
      reason:
        "token issued in the future at 2026-11-26T01:02:00.000Z (now 2026-11-26T01:00:00.000Z, skew 30 s)",
    });
  });

  it("denies a cached token once it expires", async () => {
    const t = mint({ exp: S0 + 60 });
    expect((await verifier.verify(t, readWork)).allowed).toBe(true);
    now = T0 + 95_000;
    expect((await verifier.verify(t, readWork)).allowed).toBe(false);
  });
});

describe("TokenVerifier: binding and scope", () => {
  it("denies another principal", async () => {
    expect(await verifier.verify(mint(), { ...readWork, principal: "mallory" })).toMatchObject({
      reason: 'token is for principal "alice", not "mallory"',
    });
  });

  it("refuses fs escapes through ..", async () => {
    expect(
      await verifier.verify(mint(), { ...readWork, resource: "fs:/work/../etc/passwd" }),
    ).toMatchObject({
      reason: 'requested resource "fs:/work/../etc/passwd": "." and ".." path segments are refused',
    });
    expect(
      await verifier.verify(mint(), { ...readWork, resource: "fs:/etc/passwd" }),
    ).toMatchObject({
      reason:
        'resource "fs:/etc/passwd" is outside the token\'s scope [fs:/work/**, tool:git/*, topic:tool.v1.execute.fs, net:*.example.com:443]',
    });
  });

  it("keeps tool globs inside their segment", async () => {
    const exec = (resource: string) =>
      verifier.check(mint(), { ...readWork, resource, permission: "execute" });
    expect(exec("tool:git/status").allowed).toBe(true);
    expect(exec("tool:github").allowed).toBe(false);
    expect(exec("tool:github/create_issue").allowed).toBe(false);
    expect(exec("tool:git/a/b").allowed).toBe(false);
    // A glob is a glob: `git*` does grant `github`, so tokens should scope tools by segment.
    const wide = mint({ res: ["tool:git*"] });
    expect(
      verifier.check(wide, { ...readWork, resource: "tool:github", permission: "execute" }).allowed,
    ).toBe(true);
  });

  it("refuses topic wildcard escapes", async () => {
    const pub = (resource: string) =>
      verifier.check(mint(), { ...readWork, resource, permission: "publish" });
    expect(pub("topic:tool.v1.execute.fs").allowed).toBe(true);
    expect(pub("topic:tool.v1.execute.*")).toMatchObject({
      allowed: false,
      reason:
        'resource "topic:tool.v1.execute.*" is outside the token\'s scope [fs:/work/**, tool:git/*, topic:tool.v1.execute.fs, net:*.example.com:443]',
    });
    expect(pub("topic:>").allowed).toBe(false);
  });

  it("matches net by exact port and one wildcard label", async () => {
    const conn = (resource: string) =>
      verifier.check(mint({ perm: ["connect"] }), { ...readWork, resource, permission: "connect" });
    expect(conn("net:api.example.com:443").allowed).toBe(true);
    expect(conn("net:API.example.com:443").allowed).toBe(true);
    expect(conn("net:api.example.com:80").allowed).toBe(false);
    expect(conn("net:example.com:443").allowed).toBe(false);
    expect(conn("net:a.b.example.com:443").allowed).toBe(false);
    expect(conn("net:evil-example.com:443").allowed).toBe(false);
  });

  it("denies a permission the token does not grant", async () => {
    expect(await verifier.verify(mint(), { ...readWork, permission: "write" })).toMatchObject({
      reason: 'permission "write" not granted; the token grants [read, execute, publish]',
    });
  });

  it("binds a session-bound token to its session", async () => {
    const t = mint({ ses: "s1" });
    expect((await verifier.verify(t, { ...readWork, session: "s1" })).allowed).toBe(true);
    expect(await verifier.verify(t, { ...readWork, session: "s2" })).toMatchObject({
      reason: 'token is bound to session "s1", not "s2"',
    });
    expect(await verifier.verify(t, readWork)).toMatchObject({
      reason: 'token is bound to session "s1", not a call without a session',
    });
  });

  it("binds an argument-bound token to exactly those arguments", async () => {
    const h1 = "a".repeat(64);
    const h2 = "b".repeat(64);
    const t = mint({ res: ["process:git"], perm: ["execute"], arg: h1 });
    const run = { principal: "alice", resource: "process:git", permission: "execute" } as const;
    expect((await verifier.verify(t, { ...run, argsHash: h1 })).allowed).toBe(true);
    expect(await verifier.verify(t, { ...run, argsHash: h2 })).toMatchObject({
      reason: "token is bound to arguments aaaaaaaaaaaa…, not bbbbbbbbbbbb…",
    });
    expect(await verifier.verify(t, run)).toMatchObject({
      reason: "token is bound to arguments aaaaaaaaaaaa…, not a call without arguments",
    });
    expect(
      await verifier.verify(t, { ...run, resource: "process:/usr/bin/git", argsHash: h1 }),
    ).toMatchObject({
      reason: 'resource "process:/usr/bin/git" is outside the token\'s scope [process:git]',
    });
  });

  it("refuses process resources that climb out with ..", () => {
    expect(() => mint({ res: ["process:/usr/bin/../../tmp/x"] })).toThrow(
      "expected process:<command glob>, a bare name or an absolute path",
    );
  });
});

describe("TokenVerifier: revocation, single use, rotation", () => {
  it("denies at once a token revoked while cached", async () => {
    const t = mint({ jti: "BBBBBBBBBBBBBBBBBBBBBB" });
    expect((await verifier.verify(t, readWork)).allowed).toBe(true);
    await revocations.revoke("BBBBBBBBBBBBBBBBBBBBBB", S0 + 3600);
    expect(await verifier.verify(t, readWork)).toMatchObject({
      allowed: false,
      reason: "token BBBBBBBBBBBBBBBBBBBBBB is revoked",
    });
  });

  it("lets a single-use token through once", async () => {
    const t = mint({ once: true, jti: "CCCCCCCCCCCCCCCCCCCCCC" });
    expect(verifier.check(t, readWork)).toMatchObject({
      allowed: false,
      reason: "single-use token CCCCCCCCCCCCCCCCCCCCCC must be redeemed through verify()",
    });
    const both = await Promise.all([verifier.verify(t, readWork), verifier.verify(t, readWork)]);
    expect(both.map((d) => d.allowed).sort()).toEqual([false, true]);
    expect(await verifier.verify(t, readWork)).toMatchObject({
      reason: "single-use token CCCCCCCCCCCCCCCCCCCCCC already used",
    });
  });

  it("cuts off a removed key's tokens, cached ones included, and accepts the new key's", async () => {
    const old = mint();
    expect((await verifier.verify(old, readWork)).allowed).toBe(true);
    const next = generateIssuerKey();
    keys.add(next.publicKey);
    keys.remove(issuer.kid);
    expect(await verifier.verify(old, readWork)).toMatchObject({
      reason: `unknown issuer key "${issuer.kid}"`,
    });
    expect((await verifier.verify(mint({}, next), readWork)).allowed).toBe(true);
  });

  it("refuses to trust a small-order public key", () => {
    const identity = new Uint8Array(32);
    identity[0] = 1; // the neutral point
    expect(() => keys.add(identity)).toThrow("ed25519 public key has small order");
    const ec = generateKeyPairSync("x25519").publicKey;
    expect(() => keys.add(ec)).toThrow("expected an ed25519 key, got x25519");
  });
});

describe("TokenVerifier.applies", () => {
  it("says whether an authentic token speaks about a request, without judging validity", () => {
    const t = mint();
    expect(verifier.applies(t, readWork)).toBe(true);
    expect(verifier.applies(t, { ...readWork, resource: "fs:/etc/passwd" })).toBe(false);
    expect(verifier.applies(t, { ...readWork, permission: "write" })).toBe(false);
    const sig = t.split(".")[2]!;
    const flipped = `${sig.slice(0, 10)}${sig[10] === "A" ? "B" : "A"}${sig.slice(11)}`;
    expect(verifier.applies(`${t.split(".").slice(0, 2).join(".")}.${flipped}`, readWork)).toBe(
      false,
    );
    revocations.revoke(
      JSON.parse(Buffer.from(t.split(".")[1]!, "base64url").toString()).jti,
      S0 + 3600,
    );
    // Revocation is verify()'s business: applies() only answers "is this token about that?".
    expect(verifier.applies(t, readWork)).toBe(true);
  });
});
