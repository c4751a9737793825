import { describe, expect, it } from "vitest";
import { backoffDelay, ReconnectBackoff } from "./backoff.js";

const opts = { initialMs: 100, maxMs: 1000, jitter: 0.5 };

describe("backoffDelay", () => {
  it("doubles per attempt up to the cap when jitter draws zero", () => {
    expect([0, 1, 2, 3, 4, 5, 60].map((a) => backoffDelay(a, opts, () => 0))).toEqual([
      100, 200, 400, 800, 1000, 1000, 1000,
    ]);
  });

  it("removes at most the jitter fraction of the delay", () => {
    expect(backoffDelay(2, opts, () => 1)).toBe(200);
    expect(backoffDelay(2, opts, () => 0.5)).toBe(300);
  });
});

describe("ReconnectBackoff", () => {
  it("draws one delay per attempt however often the client asks, and resets on reconnect", () => {
    const draws = [0.2, 0.8, 0.4, 0.6];
    const b = new ReconnectBackoff(opts, () => draws.shift()!);
    expect([b.delay(), b.delay()]).toEqual([90, 90]);
    b.attempted();
    expect([b.delay(), b.delay()]).toEqual([120, 120]);
    b.reset();
    expect(b.delay()).toBe(80);
  });
});
