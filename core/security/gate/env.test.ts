import { describe, expect, it } from "vitest";
import { EnvGate } from "./env.js";

const gate = new EnvGate([
  { name: "GITHUB_TOKEN", type: "secret" },
  { name: "LOG_LEVEL", type: "string" },
]);

describe("EnvGate", () => {
  it("allows declared variables and names the entry", () => {
    expect(gate.checkEnv("GITHUB_TOKEN")).toEqual({
      allowed: true,
      layer: "gate",
      rule: "env GITHUB_TOKEN (secret)",
    });
    expect(gate.checkEnv("LOG_LEVEL")).toEqual({
      allowed: true,
      layer: "gate",
      rule: "env LOG_LEVEL (string)",
    });
  });

  it.each(["HOME", "PATH", "log_level", "GITHUB_TOKEN ", ""])("denies undeclared %j", (name) => {
    expect(gate.checkEnv(name)).toEqual({
      allowed: false,
      layer: "gate",
      reason: `environment variable ${JSON.stringify(name)} is not declared in the manifest`,
    });
  });

  it("flags secrets for redaction", () => {
    expect(gate.isSecret("GITHUB_TOKEN")).toBe(true);
    expect(gate.isSecret("LOG_LEVEL")).toBe(false);
    expect(gate.isSecret("UNDECLARED")).toBe(false);
    expect(gate.secretNames()).toEqual(["GITHUB_TOKEN"]);
  });

  it("denies everything when nothing is declared", () => {
    expect(new EnvGate([]).checkEnv("HOME").allowed).toBe(false);
  });

  it.each([
    [
      [{ name: "A=B", type: "string" as const }],
      `env name must match [A-Za-z_][A-Za-z0-9_]*, got "A=B"`,
    ],
    [
      [{ name: "1X", type: "string" as const }],
      `env name must match [A-Za-z_][A-Za-z0-9_]*, got "1X"`,
    ],
    [
      [
        { name: "X", type: "secret" as const },
        { name: "X", type: "string" as const },
      ],
      `env "X" is declared twice`,
    ],
    [
      [{ name: "X", type: "password" as "secret" }],
      `env "X" has type "password"; expected "secret" or "string"`,
    ],
  ])("refuses bad declarations %#", (entries, message) => {
    expect(() => new EnvGate(entries)).toThrow(message);
  });
});
