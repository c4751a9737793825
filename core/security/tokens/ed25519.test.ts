import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { verifyWithNoble, verifyWithNode } from "./ed25519.js";
import { generateIssuerKey } from "./keys.js";
import { mintToken } from "./mint.js";

const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const issuer = generateIssuerKey();

function parts(token: string): { data: Buffer; sig: Buffer } {
  const i = token.lastIndexOf(".");
  return {
    data: Buffer.from(token.slice(0, i), "ascii"),
    sig: Buffer.from(token.slice(i + 1), "base64url"),
  };
}

function both(sig: Uint8Array, data: Uint8Array): [boolean, boolean] {
  return [
    verifyWithNode(sig, data, issuer.publicKey),
    verifyWithNoble(sig, data, issuer.publicKeyRaw),
  ];
}

const corpus = Array.from({ length: 8 }, (_, i) =>
  mintToken({ sub: `p${i}`, res: [`fs:/w${i}/**`], perm: ["read"], exp: 2_000_000_000 }, issuer),
);

describe("node:crypto and @noble/ed25519 agree", () => {
  it("on valid tokens", () => {
    for (const t of corpus) {
      const { data, sig } = parts(t);
      expect(both(sig, data)).toEqual([true, true]);
    }
  });

  it("on any single bit flipped in the signature or the signed bytes", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: corpus.length - 1 }),
        fc.boolean(),
        fc.nat(),
        fc.integer({ min: 0, max: 7 }),
        (which, inSig, pos, bit) => {
          const { data, sig } = parts(corpus[which]!);
          const target = inSig ? sig : data;
          target[pos % target.length]! ^= 1 << bit;
          expect(both(sig, data)).toEqual([false, false]);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("on a malleated signature (S + L): both refuse the non-canonical S", () => {
    const { data, sig } = parts(corpus[0]!);
    let s = 0n;
    for (let i = 63; i >= 32; i--) s = (s << 8n) | BigInt(sig[i]!);
    let t = s + L;
    for (let i = 32; i < 64; i++) {
      sig[i] = Number(t & 0xffn);
      t >>= 8n;
    }
    expect(both(sig, data)).toEqual([false, false]);
  });

  it("on a non-canonical R (y >= p) and on wrong lengths", () => {
    const { data, sig } = parts(corpus[1]!);
    sig.fill(0xff, 0, 31);
    sig[31] = 0x7f;
    expect(both(sig, data)).toEqual([false, false]);
    expect(both(sig.subarray(0, 63), data)).toEqual([false, false]);
  });
});
