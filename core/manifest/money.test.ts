import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { usdToMicro } from "./money.js";

describe("usdToMicro", () => {
  it.each([
    ["0", 0],
    ["5", 5_000_000],
    ["5.00", 5_000_000],
    ["0.1", 100_000],
    ["0.000001", 1],
    ["123.456789", 123_456_789],
    ["9007199254.740991", Number.MAX_SAFE_INTEGER],
  ])("%s → %i micro-dollars", (text, micro) => {
    expect(usdToMicro(text)).toEqual({ ok: true, micro });
  });

  it.each(["", "-1", "1.", ".5", "01", "1e3", "1.0000001", " 1", "1,00", "0x10"])(
    "refuses %j",
    (text) => {
      expect(usdToMicro(text)).toEqual({
        ok: false,
        error: `expected a decimal USD amount with at most 6 decimals like "5.00", got ${JSON.stringify(text)}`,
      });
    },
  );

  it("refuses amounts beyond a safe integer", () => {
    expect(usdToMicro("9007199254.740992")).toEqual({
      ok: false,
      error: 'expected an amount below 9007199254.740991 USD, got "9007199254.740992"',
    });
  });

  it("property: exact for every whole-micro amount (no float rounding)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (micro) => {
        const whole = Math.floor(micro / 1_000_000);
        const frac = String(micro % 1_000_000).padStart(6, "0");
        expect(usdToMicro(`${whole}.${frac}`)).toEqual({ ok: true, micro });
      }),
    );
  });
});
