import { describe, expect, it } from "vitest";
import { budgetLimitsOf } from "./limits.js";
import { parseConfigText } from "./load.js";

describe("budgetLimitsOf", () => {
  it("turns the config's budget into the ledger's limits, USD as integer micro-dollars", () => {
    const c = parseConfigText(
      `[budget]\nsession_usd = "12.345678"\ncall_usd = "0.5"\nsession_tokens = 900\ncall_tokens = 90\nwarn_at_percent = 60\n`,
      "c",
    ).config;
    expect(budgetLimitsOf(c)).toEqual({
      tokens: { perCall: 90, session: 900 },
      microUsd: { perCall: 500_000, session: 12_345_678 },
      warnPercent: 60,
      yolo: false,
    });
  });

  it("warns instead of denying only in yolo mode", () => {
    const c = parseConfigText(`[defaults]\nmode = "yolo"\n`, "c").config;
    expect(budgetLimitsOf(c).yolo).toBe(true);
    expect(budgetLimitsOf(c, "autonomous").yolo).toBe(false);
    expect(budgetLimitsOf(parseConfigText("", "c").config).yolo).toBe(false);
  });
});
