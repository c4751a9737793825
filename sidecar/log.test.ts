import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createLogger, REDACTED } from "./log.js";

/** A real stream the logger writes to; each line is parsed as the log pipeline would. */
function sink(): { stream: Writable; lines: () => Record<string, unknown>[]; raw: () => string } {
  let raw = "";
  const stream = new Writable({
    write(chunk, _enc, done) {
      raw += String(chunk);
      done();
    },
  });
  return {
    stream,
    raw: () => raw,
    lines: () =>
      raw
        .split("\n")
        .filter((l) => l !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
}

describe("createLogger", () => {
  it("writes one JSON object per line carrying capsule, session and principal", () => {
    const out = sink();
    const log = createLogger({
      level: "info",
      capsule: "github",
      session: "s-42",
      principal: "alice",
      destination: out.stream,
    });
    log.info("started");
    log.warn({ call: "tool.v1.execute.search" }, "slow call");
    log.debug("not written at info");
    const lines = out.lines();
    expect(lines).toHaveLength(2);
    for (const l of lines) {
      expect(l).toMatchObject({ capsule: "github", session: "s-42", principal: "alice" });
      expect(l.pid).toBe(process.pid);
      expect(typeof l.time).toBe("string");
    }
    expect(lines[0]).toMatchObject({ level: "info", msg: "started" });
    expect(lines[1]).toMatchObject({
      level: "warn",
      msg: "slow call",
      call: "tool.v1.execute.search",
    });
  });

  it("writes null, not nothing, for a session or principal it is not bound to", () => {
    const out = sink();
    createLogger({ level: "info", capsule: "fs", destination: out.stream }).info("x");
    expect(out.lines()[0]).toMatchObject({ capsule: "fs", session: null, principal: null });
  });

  it("keeps the base fields on child loggers, beside the child's own", () => {
    const out = sink();
    const log = createLogger({
      level: "info",
      capsule: "github",
      session: "s-1",
      principal: "bob",
      destination: out.stream,
    });
    log.child({ component: "engine" }).child({ engine: "mcp" }).error("crashed");
    expect(out.lines()[0]).toMatchObject({
      capsule: "github",
      session: "s-1",
      principal: "bob",
      component: "engine",
      engine: "mcp",
      level: "error",
      msg: "crashed",
    });
  });

  it("never writes a secret under a redacted key, top level or one level down", () => {
    const out = sink();
    const log = createLogger({ level: "info", capsule: "c", destination: out.stream });
    const secret = "s3cr3t-value-do-not-log";
    log.info({ password: secret, token: secret }, "top level");
    log.info({ bus: { password: secret, user: "u" } }, "nested");
    log.info({ headers: { authorization: `Bearer ${secret}`, accept: "*/*" } }, "headers");
    log.info({ req: { headers: { authorization: secret } } }, "request");
    log.info({ provider: { apiKey: secret, api_key: secret, secret } }, "provider");
    log
      .child({ credentials: secret })
      .info({ llm: { privateKey: secret, cookie: secret } }, "child");
    expect(out.raw()).not.toContain(secret);
    const lines = out.lines();
    expect(lines[0]).toMatchObject({ password: REDACTED, token: REDACTED });
    expect(lines[1]).toMatchObject({ bus: { password: REDACTED, user: "u" } });
    expect(lines[2]).toMatchObject({ headers: { authorization: REDACTED, accept: "*/*" } });
    expect(lines[4]).toMatchObject({ provider: { apiKey: REDACTED, api_key: REDACTED } });
    expect(lines).toHaveLength(6);
  });

  it("serialises errors with message and stack", () => {
    const out = sink();
    createLogger({ level: "info", capsule: "c", destination: out.stream }).error(
      { err: new Error("disk full") },
      "audit write failed",
    );
    const err = out.lines()[0]!.err as Record<string, unknown>;
    expect(err.message).toBe("disk full");
    expect(err.type).toBe("Error");
    expect(String(err.stack)).toContain("disk full");
  });
});
