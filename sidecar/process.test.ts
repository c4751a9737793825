/**
 * runUntilSignal in a real child process: real signals, real exit codes, real HTTP probes.
 * The child is test/fixtures/sidecar-process/fake-sidecar.ts.
 */

import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";

const FIXTURE = fileURLToPath(
  new URL("../test/fixtures/sidecar-process/fake-sidecar.ts", import.meta.url),
);

type LogLine = Record<string, unknown> & { msg: string; level: string };

interface Child {
  readonly proc: ChildProcess;
  readonly lines: LogLine[];
  /** Resolves with the first line (already written or to come) that `pred` accepts. */
  waitFor(msg: string): Promise<LogLine>;
  readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill("SIGKILL");
});

function startFixture(env: Record<string, string>): Child {
  const proc = spawn(process.execPath, ["--import", "tsx", FIXTURE], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(proc);
  const lines: LogLine[] = [];
  const waiters: { msg: string; resolve: (l: LogLine) => void }[] = [];
  let buffered = "";
  let stderr = "";
  proc.stdout!.setEncoding("utf8");
  proc.stdout!.on("data", (chunk: string) => {
    buffered += chunk;
    let nl = buffered.indexOf("\n");
    while (nl >= 0) {
      const text = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      // Every line must be JSON: a non-JSON line fails the test here.
      const line = JSON.parse(text) as LogLine;
      lines.push(line);
      for (const w of waiters.filter((x) => x.msg === line.msg)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
      nl = buffered.indexOf("\n");
    }
  });
  proc.stderr!.setEncoding("utf8");
  proc.stderr!.on("data", (c: string) => {
    stderr += c;
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    proc.on("exit", (code, signal) => resolve({ code, signal }));
  });
  return {
    proc,
    lines,
    exit,
    stderr: () => stderr,
    waitFor: (msg) => {
      const seen = lines.find((l) => l.msg === msg);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        waiters.push({ msg, resolve });
        void exit.then(() =>
          reject(new Error(`exited before logging "${msg}"; logged ${JSON.stringify(lines)}`)),
        );
      });
    },
  };
}

const msgs = (c: Child): string[] => c.lines.map((l) => l.msg);

function expectBaseFields(c: Child): void {
  expect(c.lines.length).toBeGreaterThan(0);
  for (const l of c.lines) {
    expect(l).toMatchObject({ capsule: "fake", session: "s-1", principal: "alice" });
  }
}

describe("runUntilSignal", () => {
  it("on SIGTERM turns readyz 503, lets the in-flight call finish, closes and exits 0", async () => {
    const c = startFixture({ SCENARIO: "drain" });
    const listening = await c.waitFor("health and metrics server listening");
    await c.waitFor("started");
    const url = String(listening.url);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
    c.proc.kill("SIGTERM");
    expect(await c.exit).toEqual({ code: 0, signal: null });
    // The call read the sidecar's own readyz after the signal and before it finished.
    const completed = c.lines.find((l) => l.msg === "call completed");
    expect(completed).toMatchObject({ readyzStatus: 503, readyz: "not ready: draining\n" });
    const order = msgs(c);
    expect(order.slice(order.indexOf("draining"))).toEqual([
      "draining",
      "call completed",
      "audit flushed",
      "drained",
      "core closed",
      "closed",
      "exiting",
    ]);
    expect(c.lines.find((l) => l.msg === "draining")).toMatchObject({ signal: "SIGTERM" });
    expect(c.lines.at(-1)).toMatchObject({ msg: "exiting", exitCode: 0 });
    expectBaseFields(c);
  });

  it("treats SIGINT like SIGTERM", async () => {
    const c = startFixture({ SCENARIO: "drain" });
    await c.waitFor("started");
    c.proc.kill("SIGINT");
    expect(await c.exit).toEqual({ code: 0, signal: null });
    expect(msgs(c)).toContain("call completed");
  });

  it("exits 130 at once on a second signal while draining; readyz is 503 and healthz 200 meanwhile", async () => {
    const c = startFixture({ SCENARIO: "stuck", DRAIN_TIMEOUT_MS: "600000" });
    const url = String((await c.waitFor("health and metrics server listening")).url);
    await c.waitFor("started");
    c.proc.kill("SIGTERM");
    await c.waitFor("draining");
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.text()).toBe("not ready: draining\n");
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    c.proc.kill("SIGINT");
    expect(await c.exit).toEqual({ code: 130, signal: null });
    expect(
      c.lines.find((l) => l.msg === "second signal while draining; exiting now"),
    ).toMatchObject({ level: "warn", signal: "SIGINT" });
    expect(msgs(c)).not.toContain("drained");
    expectBaseFields(c);
  });

  it("closes after the drain bound, logging what is still in flight, and exits 0", async () => {
    const c = startFixture({ SCENARIO: "stuck", DRAIN_TIMEOUT_MS: "200" });
    await c.waitFor("started");
    c.proc.kill("SIGTERM");
    expect(await c.exit).toEqual({ code: 0, signal: null });
    expect(c.lines.find((l) => l.msg.startsWith("drain timed out"))).toMatchObject({
      level: "warn",
      msg: "drain timed out; closing with calls still in flight",
      drainTimeoutMs: 200,
      inFlight: ["tool.v1.execute.slow"],
    });
    const order = msgs(c);
    expect(order.slice(order.indexOf("draining"))).toEqual([
      "draining",
      "drain timed out; closing with calls still in flight",
      "core closed",
      "closed",
      "exiting",
    ]);
  });

  it("answers readyz 503 while starting and, on a signal during start, drains once started", async () => {
    const c = startFixture({ SCENARIO: "slow-start" });
    const url = String((await c.waitFor("health and metrics server listening")).url);
    await c.waitFor("start waiting");
    const ready = await fetch(`${url}/readyz`);
    expect(ready.status).toBe(503);
    expect(await ready.text()).toBe("not ready: starting\n");
    expect((await fetch(`${url}/healthz`)).status).toBe(200);
    c.proc.kill("SIGTERM");
    await c.waitFor("draining");
    c.proc.kill("SIGUSR2");
    expect(await c.exit).toEqual({ code: 0, signal: null });
    const order = msgs(c);
    expect(order).not.toContain("started");
    expect(order.slice(order.indexOf("draining"))).toEqual([
      "draining",
      "call started",
      "call completed",
      "audit flushed",
      "drained",
      "core closed",
      "closed",
      "exiting",
    ]);
  });

  it("exits 1 with the error logged when start fails", async () => {
    const c = startFixture({ SCENARIO: "start-fails" });
    expect(await c.exit).toEqual({ code: 1, signal: null });
    const failed = c.lines.find((l) => l.msg === "start failed");
    expect(failed).toMatchObject({ level: "error" });
    expect((failed!.err as { message: string }).message).toBe(
      "cannot connect to nats://127.0.0.1:1",
    );
    expect(c.lines.at(-1)).toMatchObject({ msg: "exiting", exitCode: 1 });
    expectBaseFields(c);
  });

  it("logs an uncaught exception, drains, and exits 70", async () => {
    const c = startFixture({ SCENARIO: "uncaught" });
    expect(await c.exit).toEqual({ code: 70, signal: null });
    const fatal = c.lines.find((l) => l.msg === "uncaught exception");
    expect(fatal).toMatchObject({ level: "fatal" });
    expect((fatal!.err as { message: string }).message).toBe("boom");
    const order = msgs(c);
    expect(order.slice(order.indexOf("uncaught exception"))).toEqual([
      "uncaught exception",
      "draining",
      "call completed",
      "audit flushed",
      "drained",
      "core closed",
      "closed",
      "exiting",
    ]);
    expect(c.lines.find((l) => l.msg === "call completed")).toMatchObject({ readyzStatus: 503 });
    expect(c.stderr()).toBe("");
    expectBaseFields(c);
  });
});
