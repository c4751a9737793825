/**
 * Issuer keys and the set of keys a verifier trusts. Several keys may be trusted at once so an
 * issuer can rotate: add the new key, mint with it, remove the old one when its tokens expire
 * (or at once, to cut them all off).
 */
import { createHash, createPublicKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import { assertStrongPublicKey } from "./ed25519.js";
import { b64url } from "./jws.js";

export interface IssuerKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
  readonly publicKey: KeyObject;
  readonly publicKeyRaw: Uint8Array;
}

export interface TrustedKey {
  readonly kid: string;
  readonly keyObject: KeyObject;
  readonly raw: Uint8Array;
}

/** First 16 base64url characters (96 bits) of sha256 over the raw 32-byte public key. */
export function keyIdOf(rawPublicKey: Uint8Array): string {
  return createHash("sha256").update(rawPublicKey).digest("base64url").slice(0, 16);
}

export function rawPublicKey(key: KeyObject): Uint8Array {
  if (key.asymmetricKeyType !== "ed25519") {
    throw new Error(`expected an ed25519 key, got ${key.asymmetricKeyType ?? key.type}`);
  }
  const jwk = key.export({ format: "jwk" });
  return new Uint8Array(Buffer.from(jwk.x ?? "", "base64url"));
}

export function generateIssuerKey(): IssuerKey {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const raw = rawPublicKey(publicKey);
  return { kid: keyIdOf(raw), privateKey, publicKey, publicKeyRaw: raw };
}

export class TrustedKeys {
  private readonly byKid = new Map<string, TrustedKey>();

  constructor(keys: ReadonlyArray<KeyObject | Uint8Array> = []) {
    for (const k of keys) this.add(k);
  }

  /** Trusts a public key (KeyObject or raw 32 bytes) and returns its key id. */
  add(key: KeyObject | Uint8Array): string {
    const raw = key instanceof Uint8Array ? key : rawPublicKey(key);
    assertStrongPublicKey(raw);
    const kid = keyIdOf(raw);
    const keyObject = createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: b64url(raw) },
      format: "jwk",
    });
    this.byKid.set(kid, { kid, keyObject, raw: new Uint8Array(raw) });
    return kid;
  }

  remove(kid: string): boolean {
    return this.byKid.delete(kid);
  }

  get(kid: string): TrustedKey | undefined {
    return this.byKid.get(kid);
  }

  get size(): number {
    return this.byKid.size;
  }
}
