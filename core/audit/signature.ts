/**
 * Ed25519 signatures over chain hashes, with node:crypto (measured much faster than
 * @noble/ed25519 for the same signatures). A signature over an entry's hash attests that entry
 * and, through the `prev` links, every entry before it; per-entry signatures and batch seals sign
 * the same message so the verifier treats both alike.
 */
import { createPublicKey, type KeyObject, sign, verify } from "node:crypto";

/**
 * Domain separation: a key that also signs capability tokens (or anything else) cannot have one
 * of those signatures replayed as an audit attestation, because the signed bytes differ.
 */
const DOMAIN = "astrid.audit.v1:";

export function signChainHash(privateKey: KeyObject, hash: string): string {
  return sign(null, Buffer.from(DOMAIN + hash), privateKey).toString("base64url");
}

export function verifyChainHash(publicKey: KeyObject, hash: string, sig: string): boolean {
  return verify(null, Buffer.from(DOMAIN + hash), publicKey, Buffer.from(sig, "base64url"));
}

/** The public keys a verifier trusts, by key id. An id it does not hold is never trusted. */
export class AuditKeyring {
  readonly #keys = new Map<string, KeyObject>();

  constructor(keys: Iterable<[string, KeyObject | string]> = []) {
    for (const [id, key] of keys) this.add(id, key);
  }

  /** `key`: an ed25519 public (or private: its public half is used) KeyObject, or a PEM. */
  add(keyId: string, key: KeyObject | string): this {
    const pub = typeof key === "string" || key.type === "private" ? createPublicKey(key) : key;
    if (pub.asymmetricKeyType !== "ed25519") {
      throw new TypeError(
        `audit keyring: key "${keyId}" is ${pub.asymmetricKeyType ?? "not asymmetric"}; expected ed25519`,
      );
    }
    this.#keys.set(keyId, pub);
    return this;
  }

  get(keyId: string): KeyObject | undefined {
    return this.#keys.get(keyId);
  }
}
