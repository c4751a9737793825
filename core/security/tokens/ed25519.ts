/**
 * Ed25519 signature checks through two independent implementations: `node:crypto` (OpenSSL)
 * on the hot path because it is several times faster, and `@noble/ed25519` as the reference the
 * tests and the bench hold it against.
 *
 * Both must refuse the same things. noble runs with `zip215: false` (RFC 8032 / libsodium
 * rules: canonical R and A, S < L, small-order keys refused); OpenSSL checks S < L and compares
 * the re-encoded R, so non-canonical R fails too. The remaining difference (cofactored vs
 * cofactorless equation, small-order keys) only arises for keys crafted by a signer; trusted
 * keys are screened by `assertStrongPublicKey` before they are trusted, so for every key we
 * accept both implementations answer alike.
 */
import { type KeyObject, verify as nodeVerify } from "node:crypto";
import * as ed from "@noble/ed25519";
import { sha512 } from "@noble/hashes/sha2.js";

ed.hashes.sha512 = sha512;

export type Ed25519Engine = "node" | "noble";

export function verifyWithNode(signature: Uint8Array, data: Uint8Array, key: KeyObject): boolean {
  try {
    return nodeVerify(null, data, key, signature);
  } catch {
    return false;
  }
}

export function verifyWithNoble(
  signature: Uint8Array,
  data: Uint8Array,
  rawKey: Uint8Array,
): boolean {
  try {
    return ed.verify(signature, data, rawKey, { zip215: false });
  } catch {
    return false;
  }
}

/** Throws unless `raw` is a canonical encoding of a point outside the small-order subgroup. */
export function assertStrongPublicKey(raw: Uint8Array): void {
  if (raw.length !== 32) throw new Error(`ed25519 public key is ${raw.length} bytes, expected 32`);
  let point: ed.Point;
  try {
    point = ed.Point.fromBytes(raw, false);
  } catch {
    throw new Error("ed25519 public key is not a canonical curve point");
  }
  // A small-order key lets one signature verify for many messages under some implementations.
  if (point.isSmallOrder()) throw new Error("ed25519 public key has small order");
}
