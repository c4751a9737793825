import { describe, expect, it } from "vitest";
import { parseCommand, UsageError } from "./args.js";

const base = {
  session: undefined,
  printSession: false,
  format: "text",
  mode: undefined,
  yes: false,
};

describe("parseCommand", () => {
  it.each([
    [["-p", "Summarize"], { kind: "prompt", text: "Summarize", ...base }],
    [
      ["-p", "Fix tests", "--yes", "--mode", "safe", "--format", "stream-json"],
      {
        kind: "prompt",
        text: "Fix tests",
        ...base,
        yes: true,
        mode: "safe",
        format: "stream-json",
      },
    ],
    [
      ["-p", "Continue", "--session", "s-1", "--print-session"],
      { kind: "prompt", text: "Continue", ...base, session: "s-1", printSession: true },
    ],
    [["chat", "-y"], { kind: "chat", ...base, yes: true }],
    [["init"], { kind: "init", force: false }],
    [["session", "list"], { kind: "session.list" }],
    [["session", "show", "abc"], { kind: "session.show", id: "abc" }],
    [["capsule", "install", "./caps/x"], { kind: "capsule.install", source: "./caps/x" }],
    [
      ["capsule", "remove", "cache@1.0.0"],
      { kind: "capsule.remove", name: "cache", version: "1.0.0" },
    ],
    [["capsule", "tree"], { kind: "capsule.tree" }],
    [["audit", "verify"], { kind: "audit.verify", path: undefined }],
    [["audit", "verify", "/x"], { kind: "audit.verify", path: "/x" }],
    [["status"], { kind: "status" }],
    [[], { kind: "help", topic: undefined }],
    [["capsule", "--help"], { kind: "help", topic: "capsule" }],
  ])("%j", (argv, want) => {
    expect(parseCommand(argv)).toEqual(want);
  });

  it.each([
    [
      ["-p", "x", "--format", "xml"],
      '--format: expected one of text, json, stream-json, got "xml"',
    ],
    [
      ["-p", "x", "--mode", "fast"],
      '--mode: expected one of safe, guided, autonomous, yolo, got "fast"',
    ],
    [
      ["-p", "x", "--session", "a b"],
      '--session: expected a session id of [A-Za-z0-9_-], got "a b"',
    ],
    [["-p", " "], "-p needs a prompt"],
    [["-p", "x", "extra"], '-p takes the prompt as its value; unexpected argument "extra"'],
    [["frobnicate"], 'unknown command "frobnicate"; see astrid --help'],
    [["session", "show"], "astrid session show needs a session id"],
    [["capsule", "zap"], 'astrid capsule: expected install, list, remove or tree, got "zap"'],
    [["audit"], 'astrid audit: expected verify, got ""'],
    [["status", "now"], 'unexpected argument "now" for status'],
  ])("refuses %j", (argv, message) => {
    expect(() => parseCommand(argv)).toThrow(new UsageError(message));
  });

  it("refuses unknown flags with node's message and a pointer to --help", () => {
    expect(() => parseCommand(["-p", "x", "--yess"])).toThrow(
      /Unknown option '--yess'.*; see astrid --help/,
    );
  });
});
