import { describe, expect, it } from "vitest";
import { assertAmount, BudgetAmountError, checkedAdd, reachesPercent } from "./amount.js";
import { BudgetLimitsError, parseBudgetLimits } from "./limits.js";

const MAX = Number.MAX_SAFE_INTEGER; // 2^53 − 1

describe("budget amounts at the 2^53 boundary", () => {
  it("accepts 2^53 − 1 and refuses 2^53", () => {
    expect(() => assertAmount("x", MAX)).not.toThrow();
    expect(() => assertAmount("x", 2 ** 53)).toThrow(
      new BudgetAmountError(
        `x must be a non-negative safe integer (0 … ${MAX}), got 9007199254740992`,
      ),
    );
  });

  it.each([
    [-1, "-1"],
    [0.5, "0.5"],
    [Number.NaN, "NaN"],
    [Number.POSITIVE_INFINITY, "Infinity"],
    [10n, "bigint 10"],
    ["5", 'string "5"'],
    [null, "null"],
  ])("refuses %s", (v, shown) => {
    expect(() => assertAmount("reserve.microUsd", v)).toThrow(
      `reserve.microUsd must be a non-negative safe integer (0 … ${MAX}), got ${shown}`,
    );
  });

  it("checkedAdd refuses a sum past 2^53 − 1 instead of rounding", () => {
    expect(checkedAdd(MAX - 1, 1)).toBe(MAX);
    expect(() => checkedAdd(MAX, 1)).toThrow(
      new BudgetAmountError(`budget overflow: ${MAX} + 1 exceeds ${MAX} (2^53 − 1)`),
    );
  });

  it("reachesPercent is exact where used × 100 would overflow a double", () => {
    expect(reachesPercent(MAX - 1, MAX, 100)).toBe(false);
    expect(reachesPercent(MAX, MAX, 100)).toBe(true);
    // 80 % of MAX is 7205759403792792.8: …792 is below, …793 reaches it.
    expect(reachesPercent(7205759403792792, MAX, 80)).toBe(false);
    expect(reachesPercent(7205759403792793, MAX, 80)).toBe(true);
    expect(reachesPercent(0, 0, 80)).toBe(false);
    expect(reachesPercent(1, 0, 80)).toBe(true);
  });
});

describe("parseBudgetLimits", () => {
  const ok = { tokens: { perCall: 10, session: 100 }, microUsd: { perCall: 5, session: 50 } };

  it("defaults warnPercent to 80 and yolo to false", () => {
    expect(parseBudgetLimits(ok)).toEqual({ ...ok, warnPercent: 80, yolo: false });
  });

  it.each([
    [
      { tokens: ok.tokens },
      "invalid budget limits at microUsd: Invalid input: expected object, received undefined",
    ],
    [
      { ...ok, tokens: { perCall: 1 } },
      "invalid budget limits at tokens.session: Invalid input: expected number, received undefined",
    ],
    [
      { ...ok, microUsd: { perCall: 2 ** 53, session: 1 } },
      "invalid budget limits at microUsd.perCall: Too big: expected int to be <=9007199254740991",
    ],
    [
      { ...ok, microUsd: { perCall: 1.5, session: 1 } },
      "invalid budget limits at microUsd.perCall: Invalid input: expected int, received number",
    ],
    [
      { ...ok, warnPercent: 0 },
      "invalid budget limits at warnPercent: Too small: expected number to be >=1",
    ],
    [{ ...ok, maxUsd: 3 }, 'invalid budget limits at (root): Unrecognized key: "maxUsd"'],
  ])("refuses %j", (input, msg) => {
    expect(() => parseBudgetLimits(input)).toThrow(new BudgetLimitsError(msg));
  });
});
