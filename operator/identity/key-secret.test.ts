import { createPublicKey, generateKeyPairSync, sign, verify } from "node:crypto";
import { describe, expect, it } from "vitest";
import { newEd25519Pem, parseEd25519Pem } from "./key-secret.js";

const WHERE = 'Secret ns/x: data["key.pem"]';
const EXPECTED = "expected a PKCS#8 PEM Ed25519 private key (-----BEGIN PRIVATE KEY-----)";

describe("Ed25519 key PEM", () => {
  it("makes a fresh PKCS#8 key each time that parses back and signs", () => {
    const pem = newEd25519Pem();
    expect(pem.startsWith("-----BEGIN PRIVATE KEY-----\n")).toBe(true);
    expect(newEd25519Pem()).not.toBe(pem);
    const key = parseEd25519Pem(pem, WHERE);
    const sig = sign(null, Buffer.from("entry"), key);
    expect(verify(null, Buffer.from("entry"), createPublicKey(key), sig)).toBe(true);
  });

  it("refuses text without a PKCS#8 block, e.g. a public key or a bare string", () => {
    expect(() => parseEd25519Pem("not a key", WHERE)).toThrow(
      `${WHERE}: ${EXPECTED}, got no PKCS#8 PEM block`,
    );
    const pub = createPublicKey(newEd25519Pem()).export({ type: "spki", format: "pem" }).toString();
    expect(() => parseEd25519Pem(pub, WHERE)).toThrow(
      `${WHERE}: ${EXPECTED}, got no PKCS#8 PEM block`,
    );
  });

  it("refuses a garbled PKCS#8 block with OpenSSL's reason", () => {
    const garbled = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    expect(() => parseEd25519Pem(garbled, WHERE)).toThrow(`${WHERE}: ${EXPECTED}: `);
  });

  it("refuses a PKCS#8 key of another algorithm", () => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const pem = privateKey.export({ type: "pkcs8", format: "pem" }).toString();
    expect(() => parseEd25519Pem(pem, WHERE)).toThrow(`${WHERE}: ${EXPECTED}, got a ec key`);
  });
});
