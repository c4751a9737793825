import { describe, expect, it } from "vitest";
import {
  parseFsRule,
  parseKvBucket,
  parseNetRule,
  parseProcessRule,
  RuleSyntaxError,
} from "./capability-rules.js";

describe("parseFsRule", () => {
  it.each([
    ["cwd://src/**", "cwd", "src/**"],
    ["home://.config/app/*.json", "home", ".config/app/*.json"],
    ["/etc/hosts", "absolute", "/etc/hosts"],
    ["/var/**", "absolute", "/var/**"],
    ["cwd://**", "cwd", "**"],
    ["cwd://a..b/c", "cwd", "a..b/c"],
  ])("%s", (entry, root, glob) => {
    expect(parseFsRule(entry)).toEqual({ source: entry, root, glob });
  });

  it.each([
    ["src/**", 'expected "cwd://<glob>", "home://<glob>" or an absolute "/<glob>", got "src/**"'],
    ["", 'expected "cwd://<glob>", "home://<glob>" or an absolute "/<glob>", got an empty entry'],
    ["cwd://../etc", 'fs path "cwd://../etc" contains a ".." segment'],
    ["/a/../b", 'fs path "/a/../b" contains a ".." segment'],
    ["cwd://./a", 'fs path "cwd://./a" contains a "." segment'],
    ["cwd://a\\b", 'fs path "cwd://a\\\\b" contains a backslash; use "/" as separator'],
    ["cwd://a\u0000b", 'fs path "cwd://a\\u0000b" contains NUL'],
    ["cwd://", 'fs path "cwd://" has an empty glob; use "**" for everything'],
    ["/", 'fs path "/" has an empty glob; use "**" for everything'],
    ["cwd://a//b", 'fs path "cwd://a//b" has an empty segment (leading, trailing or "//")'],
    ["cwd://a/", 'fs path "cwd://a/" has an empty segment (leading, trailing or "//")'],
    ["cwd://a**", 'fs path "cwd://a**": "**" must be a whole path segment, got "a**"'],
    [
      "cwd://{a,b}",
      'fs path "cwd://{a,b}" uses glob syntax other than "*" and "**"; expected only those two wildcards',
    ],
    [
      "cwd://a?",
      'fs path "cwd://a?" uses glob syntax other than "*" and "**"; expected only those two wildcards',
    ],
  ])("refuses %j", (entry, message) => {
    expect(() => parseFsRule(entry)).toThrow(new RuleSyntaxError(message));
  });

  it("throws RuleSyntaxError instances", () => {
    expect(() => parseFsRule("x")).toThrow(RuleSyntaxError);
  });
});

describe("parseNetRule", () => {
  it.each([
    [
      "api.example.com",
      { scheme: "https", host: { kind: "name", name: "api.example.com" }, port: 443 },
    ],
    [
      "API.Example.com",
      { scheme: "https", host: { kind: "name", name: "api.example.com" }, port: 443 },
    ],
    [
      "example.com:8080",
      { scheme: undefined, host: { kind: "name", name: "example.com" }, port: 8080 },
    ],
    [
      "example.com:*",
      { scheme: undefined, host: { kind: "name", name: "example.com" }, port: "any" },
    ],
    [
      "http://example.com",
      { scheme: "http", host: { kind: "name", name: "example.com" }, port: 80 },
    ],
    ["wss://x.io", { scheme: "wss", host: { kind: "name", name: "x.io" }, port: 443 }],
    [
      "tcp://db.local:5432",
      { scheme: "tcp", host: { kind: "name", name: "db.local" }, port: 5432 },
    ],
    [
      "*.example.com",
      { scheme: "https", host: { kind: "wildcard", suffix: ".example.com" }, port: 443 },
    ],
    [
      "*.example.com:80",
      { scheme: undefined, host: { kind: "wildcard", suffix: ".example.com" }, port: 80 },
    ],
    ["10.0.0.5:8080", { scheme: undefined, host: { kind: "ip", address: "10.0.0.5" }, port: 8080 }],
    ["[::1]:9000", { scheme: undefined, host: { kind: "ip", address: "::1" }, port: 9000 }],
    [
      "[0:0:0:0:0:0:0:1]:9000",
      { scheme: undefined, host: { kind: "ip", address: "::1" }, port: 9000 },
    ],
    ["[FD00::AB]:1", { scheme: undefined, host: { kind: "ip", address: "fd00::ab" }, port: 1 }],
    ["::1", { scheme: "https", host: { kind: "ip", address: "::1" }, port: 443 }],
    ["http://[::1]", { scheme: "http", host: { kind: "ip", address: "::1" }, port: 80 }],
    [
      "10.0.0.0/8:5432",
      { scheme: undefined, host: { kind: "cidr", network: "10.0.0.0", prefix: 8 }, port: 5432 },
    ],
    [
      "0.0.0.0/0:*",
      { scheme: undefined, host: { kind: "cidr", network: "0.0.0.0", prefix: 0 }, port: "any" },
    ],
    [
      "[fd00::]/8:443",
      { scheme: undefined, host: { kind: "cidr", network: "fd00::", prefix: 8 }, port: 443 },
    ],
    [
      "fd00::/16",
      { scheme: "https", host: { kind: "cidr", network: "fd00::", prefix: 16 }, port: 443 },
    ],
    [
      "localhost:65535",
      { scheme: undefined, host: { kind: "name", name: "localhost" }, port: 65535 },
    ],
  ])("%s", (entry, rule) => {
    expect(parseNetRule(entry)).toEqual({ source: entry, ...rule });
  });

  const E = 'expected "host", "host:port", "scheme://host[:port]" or a CIDR';
  it.each([
    ["http//x", `${E}, got "http//x"`],
    ["", `${E}, got an empty entry`],
    ["example.com:0", 'port must be 1-65535 or "*", got "0" in "example.com:0"'],
    ["example.com:65536", 'port must be 1-65535 or "*", got "65536" in "example.com:65536"'],
    ["example.com:080", 'port must be 1-65535 or "*", got "080" in "example.com:080"'],
    ["example.com:", 'port must be 1-65535 or "*", got "" in "example.com:"'],
    ["ftp://x.com", 'scheme must be one of http, https, tcp, ws, wss, got "ftp" in "ftp://x.com"'],
    ["tcp://db", 'scheme "tcp" has no default port; write "tcp://host:port" in "tcp://db"'],
    ["https://x.com/path", `${E}, got "https://x.com/path"`],
    ["user@x.com", `${E}, got "user@x.com"`],
    ["a b", `${E}, got "a b" (contains whitespace or a control character)`],
    ["exa_mple.com", `${E}, got "exa_mple.com" ("exa_mple.com" is not a valid host name)`],
    ["-x.com", `${E}, got "-x.com" ("-x.com" is not a valid host name)`],
    ["10.1", `${E}, got "10.1" ("10.1" is not a valid host name)`],
    ["010.0.0.1", `${E}, got "010.0.0.1" ("010.0.0.1" is not a valid host name)`],
    ["*", `${E}, got "*" ("*" is not a valid host name)`],
    ["*.", `${E}, got "*." ("" is not a valid host name)`],
    ["10.0.0.1/8:80", 'CIDR "10.0.0.1/8" has host bits set beyond /8 in "10.0.0.1/8:80"'],
    ["10.0.0.0/33", 'CIDR prefix must be 0-32, got "33" in "10.0.0.0/33"'],
    ["[fd00::1]/8:1", 'CIDR "[fd00::1]/8" has host bits set beyond /8 in "[fd00::1]/8:1"'],
    ["[::1:9000", `${E}, got "[::1:9000" (unclosed "[")`],
    ["[x]:1", `${E}, got "[x]:1" ("x" is not an IPv6 address)`],
    ["::1:99999:1", `${E}, got "::1:99999:1"`],
    ["[fe80::1%eth0]:1", `${E}, got "[fe80::1%eth0]:1" ("fe80::1%eth0" is not an IPv6 address)`],
  ])("refuses %j", (entry, message) => {
    expect(() => parseNetRule(entry)).toThrow(new RuleSyntaxError(message));
  });
});

describe("parseProcessRule", () => {
  it("parses literals, one and rest", () => {
    expect(parseProcessRule("git log **")).toEqual({
      source: "git log **",
      command: "git",
      args: [{ kind: "literal", value: "log" }, { kind: "rest" }],
    });
    expect(parseProcessRule("/usr/bin/rg * src")).toEqual({
      source: "/usr/bin/rg * src",
      command: "/usr/bin/rg",
      args: [{ kind: "one" }, { kind: "literal", value: "src" }],
    });
    expect(parseProcessRule("ls")).toEqual({ source: "ls", command: "ls", args: [] });
  });

  const E = 'expected "<command> <arg pattern> ..." with a bare command name or absolute path';
  it.each([
    ["", `${E}, got an empty entry`],
    ["git ** log", 'process rule "git ** log": "**" is only allowed as the last token'],
    ["./run.sh", `${E}, got command "./run.sh" in "./run.sh"`],
    ["bin/run", `${E}, got command "bin/run" in "bin/run"`],
    ["/usr/../bin/sh", `${E}, got command "/usr/../bin/sh" in "/usr/../bin/sh"`],
    ["g* x", `${E}, got command "g*" in "g* x"`],
    ["-rf x", `${E}, got command "-rf" in "-rf x"`],
    [
      "rm *.txt",
      'process rule "rm *.txt": wildcard inside argument "*.txt"; "*" and "**" must stand alone',
    ],
    ["git  status", 'process rule "git  status" must separate tokens with single spaces'],
    [" git", 'process rule " git" must separate tokens with single spaces'],
    ["git\tstatus", 'process rule "git\\tstatus" contains a control character'],
  ])("refuses %j", (entry, message) => {
    expect(() => parseProcessRule(entry)).toThrow(new RuleSyntaxError(message));
  });
});

describe("parseKvBucket", () => {
  it("accepts [a-z0-9_-]", () => {
    expect(parseKvBucket("cache_v1-a")).toBe("cache_v1-a");
  });
  it.each(["", "Cache", "a.b", "a/b", "x".repeat(65)])("refuses %j", (entry) => {
    expect(() => parseKvBucket(entry)).toThrow(
      new RuleSyntaxError(
        `expected a bucket name of 1-64 characters [a-z0-9_-], got ${JSON.stringify(entry)}`,
      ),
    );
  });
});
