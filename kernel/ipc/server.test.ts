/**
 * DaemonServer over a real Unix socket: the handshake, bad frames and requests, the one-daemon
 * lock, and the churn and stalled readers that wedged upstream's daemon (#1120).
 */
import { type ChildProcess, spawn } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { setTimeout as sleep } from "node:timers/promises";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DAEMON_PROTOCOL_VERSION } from "../protocol.js";
import { DaemonClient } from "./client.js";
import { DaemonAlreadyRunningError, processStartTime } from "./lock.js";
import { runtimePaths } from "./paths.js";
import {
  type DaemonLogger,
  DaemonServer,
  type DaemonServerOptions,
  type RequestHandler,
} from "./server.js";
import { RawPeer } from "./testing/raw-peer.js";

const ECHO_DAEMON = path.resolve("test/fixtures/daemon/echo-daemon.ts");

let home: string;
let servers: DaemonServer[];
let logs: string[];
const logger: DaemonLogger = {
  info: (_f, m) => logs.push(m),
  warn: (_f, m) => logs.push(m),
};

const answerStatus: RequestHandler = (req, conn) => {
  conn.send({ type: "result", id: req.id, data: { ok: true } });
};

async function start(opts: Partial<DaemonServerOptions> = {}): Promise<DaemonServer> {
  const server = await DaemonServer.listen({
    home,
    version: "test",
    onRequest: answerStatus,
    logger,
    ...opts,
  });
  servers.push(server);
  return server;
}

/** Waits for a condition the server reaches asynchronously (bounded, never a timed assertion). */
async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000; i++) {
    if (cond()) return;
    await sleep(10);
  }
  throw new Error(`gave up waiting for ${what}`);
}

async function collect(iter: AsyncIterable<unknown>): Promise<unknown[]> {
  const out: unknown[] = [];
  for await (const m of iter) out.push(m);
  return out;
}

beforeEach(() => {
  home = mkdtempSync(path.join(os.tmpdir(), "astrid-ipc-"));
  servers = [];
  logs = [];
});
afterEach(async () => {
  await Promise.all(servers.map((s) => s.close()));
  rmSync(home, { recursive: true, force: true });
});

describe("handshake", () => {
  it("welcomes a client with the right token and protocol, and serves requests", async () => {
    const server = await start();
    const paths = runtimePaths(home);
    expect(statSync(paths.socket).mode & 0o777).toBe(0o600);
    expect(statSync(paths.tokenFile).mode & 0o777).toBe(0o600);
    const { peer, welcome } = await RawPeer.ready(paths);
    expect(welcome).toEqual({
      type: "welcome",
      protocol: DAEMON_PROTOCOL_VERSION,
      daemonPid: process.pid,
      version: "test",
    });
    peer.send({ type: "status", id: "s1" });
    expect(await peer.next()).toEqual({ type: "result", id: "s1", data: { ok: true } });
    expect(server.connectionCount).toBe(1);
    peer.destroy();
    await until("the connection to be forgotten", () => server.connectionCount === 0);
  });

  it("refuses a wrong token with an error frame and closes", async () => {
    await start();
    const peer = await RawPeer.connect(runtimePaths(home));
    peer.send({
      type: "hello",
      protocol: DAEMON_PROTOCOL_VERSION,
      token: "x".repeat(43),
      client: "t",
    });
    expect(await peer.next()).toEqual({
      type: "error",
      code: "unauthorized",
      message: "wrong token: the daemon was restarted or the client read another home's token",
    });
    expect(await peer.next()).toBe("closed");
    expect(logs).toContain("hello with a wrong token refused");
  });

  it("refuses another protocol version, telling the user how to fix it", async () => {
    await start();
    const peer = await RawPeer.connect(runtimePaths(home));
    peer.send({ type: "hello", protocol: 2, token: "irrelevant-token-value", client: "t" });
    expect(await peer.next()).toEqual({
      type: "error",
      code: "protocol_mismatch",
      message:
        "daemon speaks protocol 1, this astrid speaks 2: restart the daemon with `astrid stop`",
    });
    expect(await peer.next()).toBe("closed");
  });

  it("closes a connection that sends no hello within the bound", async () => {
    const server = await start();
    const peer = await RawPeer.connect(runtimePaths(home));
    expect(await peer.next()).toEqual({
      type: "error",
      code: "handshake_timeout",
      message: "no hello within 2000 ms",
    });
    expect(await peer.next()).toBe("closed");
    await until("the connection to be forgotten", () => server.connectionCount === 0);
  });

  it("refuses a first frame that is not a hello, and a malformed hello", async () => {
    await start();
    const paths = runtimePaths(home);
    const a = await RawPeer.connect(paths);
    a.send({ type: "status", id: "1" });
    expect(await a.next()).toEqual({
      type: "error",
      code: "bad_hello",
      message: "the first frame must be a hello",
    });
    const b = await RawPeer.connect(paths);
    b.send({ type: "hello", protocol: DAEMON_PROTOCOL_VERSION, token: "short", client: "t" });
    expect(await b.next()).toEqual({
      type: "error",
      code: "bad_hello",
      message: "invalid hello: token: Too small: expected string to have >=16 characters",
    });
    expect(await b.next()).toBe("closed");
  });

  it("gives an unauthenticated peer only a small frame budget", async () => {
    await start();
    const peer = await RawPeer.connect(runtimePaths(home));
    const header = Buffer.alloc(4);
    header.writeUInt32BE(64 * 1024 + 1, 0);
    peer.sendRaw(header);
    expect(await peer.next()).toEqual({
      type: "error",
      code: "frame_too_large",
      message: "frame of 65537 bytes exceeds the 65536-byte limit",
    });
    expect(await peer.next()).toBe("closed");
  });
});

describe("frames and requests after the handshake", () => {
  it("answers malformed JSON with an error and keeps the connection", async () => {
    await start();
    const { peer } = await RawPeer.ready(runtimePaths(home));
    const body = Buffer.from("{oops");
    const header = Buffer.alloc(4);
    header.writeUInt32BE(body.length, 0);
    peer.sendRaw(Buffer.concat([header, body]));
    const error = (await peer.next()) as { code: string; message: string };
    expect(error.code).toBe("malformed_frame");
    expect(error.message).toMatch(/^frame is not valid JSON \(/);
    peer.send({ type: "status", id: "after" });
    expect(await peer.next()).toEqual({ type: "result", id: "after", data: { ok: true } });
  });

  it("closes the connection on an oversized frame", async () => {
    const server = await start();
    const { peer } = await RawPeer.ready(runtimePaths(home));
    const header = Buffer.alloc(4);
    header.writeUInt32BE(4 * 1024 * 1024 + 1, 0);
    peer.sendRaw(header);
    expect(await peer.next()).toEqual({
      type: "error",
      code: "frame_too_large",
      message: "frame of 4194305 bytes exceeds the 4194304-byte limit",
    });
    expect(await peer.next()).toBe("closed");
    await until("the connection to be forgotten", () => server.connectionCount === 0);
  });

  it("answers invalid and unknown requests with an error naming the problem, and stays open", async () => {
    await start();
    const { peer } = await RawPeer.ready(runtimePaths(home));
    peer.send({ type: "prompt", id: "p1", text: "hi" });
    expect(await peer.next()).toEqual({
      type: "error",
      id: "p1",
      code: "invalid_request",
      message:
        "invalid prompt request: workspace: Invalid input: expected string, received undefined",
    });
    peer.send({ type: "dance", id: "d1" });
    expect(await peer.next()).toEqual({
      type: "error",
      id: "d1",
      code: "invalid_request",
      message:
        'unknown request type "dance"; expected one of prompt, approval.answer, session.list, session.show, session.delete, capsule.list, status, stop',
    });
    peer.send({ type: "status", id: "s1", extra: true });
    expect(await peer.next()).toEqual({
      type: "error",
      id: "s1",
      code: "invalid_request",
      message: 'invalid status request: Unrecognized key: "extra"',
    });
    peer.send({ type: "status", id: "s2" });
    expect(await peer.next()).toEqual({ type: "result", id: "s2", data: { ok: true } });
  });

  it("answers a request whose handler fails or forgets to answer, so no client waits forever", async () => {
    await start({
      onRequest: (req) => {
        if (req.type === "session.list") throw new Error("sessions dir unreadable");
      },
    });
    const { peer } = await RawPeer.ready(runtimePaths(home));
    peer.send({ type: "session.list", id: "l1" });
    expect(await peer.next()).toEqual({
      type: "error",
      id: "l1",
      code: "internal",
      message: "sessions dir unreadable",
    });
    peer.send({ type: "status", id: "s1" });
    expect(await peer.next()).toEqual({
      type: "error",
      id: "s1",
      code: "internal",
      message: "the daemon finished request s1 without an answer",
    });
    // Fire-and-forget requests get no answer: the next frame is the status answer.
    peer.send({ type: "approval.answer", id: "a1", requestId: "r1", decision: "deny" });
    peer.send({ type: "capsule.list", id: "c1" });
    expect(await peer.next()).toMatchObject({ id: "c1", code: "internal" });
  });

  it("refuses a second running request with the same id", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    await start({
      onRequest: async (req, conn) => {
        await held;
        conn.send({ type: "result", id: req.id, data: null });
      },
    });
    const { peer } = await RawPeer.ready(runtimePaths(home));
    peer.send({ type: "status", id: "same" });
    peer.send({ type: "status", id: "same" });
    expect(await peer.next()).toEqual({
      type: "error",
      id: "same",
      code: "duplicate_id",
      message: "request same is already running",
    });
    release();
    expect(await peer.next()).toEqual({ type: "result", id: "same", data: null });
  });

  it("validates what the daemon sends", async () => {
    let thrown: unknown;
    await start({
      onRequest: (req, conn) => {
        try {
          conn.send({ type: "delta", id: req.id } as never);
        } catch (err) {
          thrown = err;
        }
        conn.send({ type: "result", id: req.id, data: null });
      },
    });
    const { peer } = await RawPeer.ready(runtimePaths(home));
    peer.send({ type: "status", id: "v" });
    expect(await peer.next()).toEqual({ type: "result", id: "v", data: null });
    expect((thrown as Error).message).toBe(
      "invalid daemon message: text: Invalid input: expected string, received undefined",
    );
  });
});

describe("one daemon per home", () => {
  it("refuses to start while a live daemon holds the lock", async () => {
    await start();
    await expect(start()).rejects.toThrow(
      new DaemonAlreadyRunningError(process.pid, path.resolve(home)),
    );
    await expect(start()).rejects.toThrow(
      `another astrid-daemon (pid ${process.pid}) is serving ${path.resolve(home)}`,
    );
  });

  it("takes over from a daemon killed with SIGKILL, removing its lock and socket", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", ECHO_DAEMON, "--home", home], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    const ready = await firstLine(child);
    expect(ready).toBe(`ready ${child.pid}`);
    const paths = runtimePaths(home);
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    // What a crash leaves behind:
    expect(existsSync(paths.socket)).toBe(true);
    expect(JSON.parse(readFileSync(paths.lockFile, "utf8")).pid).toBe(child.pid);
    const oldToken = readFileSync(paths.tokenFile, "utf8");

    await start();
    expect(logs).toContain(`removed stale lock: pid ${child.pid} is dead`);
    expect(logs).toContain("removed stale socket");
    expect(JSON.parse(readFileSync(paths.lockFile, "utf8")).pid).toBe(process.pid);
    expect(readFileSync(paths.tokenFile, "utf8")).not.toBe(oldToken);
    const client = await DaemonClient.connect({ home });
    expect(client.welcome.daemonPid).toBe(process.pid);
    await client.close();
  });

  it("treats a lock whose pid now belongs to another process as stale", async () => {
    const paths = runtimePaths(home);
    await start();
    await servers.pop()!.close();
    // Our own pid with a start time that is not ours: what pid reuse after a crash looks like.
    expect(processStartTime(process.pid)).not.toBeNull();
    writeFileSync(paths.lockFile, JSON.stringify({ pid: process.pid, startTime: "1" }));
    await start();
    expect(logs).toContain(`removed stale lock: pid ${process.pid} now belongs to another process`);
  });

  it("removes socket, token and lock on close, and ends open connections", async () => {
    const server = await start();
    const paths = runtimePaths(home);
    const { peer } = await RawPeer.ready(paths);
    await server.close();
    expect(await peer.next()).toEqual({
      type: "error",
      code: "daemon_stopping",
      message: "astrid-daemon is stopping",
    });
    expect(await peer.next()).toBe("closed");
    expect(existsSync(paths.socket)).toBe(false);
    expect(existsSync(paths.tokenFile)).toBe(false);
    expect(existsSync(paths.lockFile)).toBe(false);
  });

  it("stops when its socket file is deleted, instead of lingering as an orphan", async () => {
    const server = await start({ orphanCheckMs: 20 });
    const paths = runtimePaths(home);
    unlinkSync(paths.socket);
    await until("the orphaned daemon to release its lock", () => !existsSync(paths.lockFile));
    expect(logs).toContain("socket file removed or replaced; stopping");
    expect(server.connectionCount).toBe(0);
  });
  it("stops when a successor takes over, leaving the successor's files alone", async () => {
    const paths = runtimePaths(home);
    const first = await start({ orphanCheckMs: 20, version: "first" });
    // What a successor started by hand after someone deleted the files looks like:
    unlinkSync(paths.lockFile);
    unlinkSync(paths.socket);
    await start({ orphanCheckMs: 0, version: "second" });
    await until("the first daemon to stop", () => logs.includes("astrid-daemon stopped"));
    expect(first.connectionCount).toBe(0);
    const client = await DaemonClient.connect({ home });
    expect(client.welcome.version).toBe("second");
    await client.close();
  });

  it("stops when its lock file is taken over", async () => {
    const paths = runtimePaths(home);
    await start({ orphanCheckMs: 20 });
    writeFileSync(paths.lockFile, JSON.stringify({ pid: process.pid, startTime: null }));
    await until("the daemon to stop", () => logs.includes("astrid-daemon stopped"));
    expect(logs).toContain("lock file removed or taken over; stopping");
    expect(existsSync(paths.lockFile)).toBe(true);
    expect(existsSync(paths.socket)).toBe(false);
  });
});

describe("churn and stalled readers", () => {
  it("stays responsive through 200 clients, half vanishing mid-request, and leaks nothing", async () => {
    let aborted = 0;
    let started = 0;
    const server = await start({
      // Not what this test is about: a loaded CI machine must not turn slow hellos into failures.
      helloTimeoutMs: 30_000,
      onRequest: async (req, conn, signal) => {
        if (req.type === "status") {
          conn.send({ type: "result", id: req.id, data: { connections: server.connectionCount } });
          return;
        }
        if (req.type !== "prompt") return;
        started++;
        conn.send({ type: "session.started", id: req.id, session: `s-${req.id}` });
        if (req.text === "hang") {
          // Work that only ends when its client goes away.
          await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve()));
          aborted++;
          return;
        }
        await sleep(5);
        conn.send({
          type: "done",
          id: req.id,
          session: `s-${req.id}`,
          text: "ok",
          stopReason: "end_turn",
          usage: { inputTokens: 1, outputTokens: 1, costMicroUsd: 0 },
        });
      },
    });

    // A client that keeps asking for status throughout the churn.
    const watcher = await DaemonClient.connect({ home });
    let churning = true;
    let statusAnswers = 0;
    const watching = (async () => {
      let n = 0;
      while (churning) {
        const [answer] = await collect(watcher.request({ type: "status", id: `w${n++}` }));
        expect(answer).toMatchObject({ type: "result" });
        statusAnswers++;
      }
    })();

    const paths = runtimePaths(home);
    const one = async (i: number) => {
      const id = `p${i}`;
      if (i % 2 === 0) {
        // Vanishes without a word once its request is running.
        const { peer } = await RawPeer.ready(paths);
        peer.send({ type: "prompt", id, text: "hang", workspace: "/w" });
        expect(await peer.next()).toEqual({ type: "session.started", id, session: `s-${id}` });
        peer.destroy();
        return;
      }
      const client = await DaemonClient.connect({ home, timeoutMs: 20_000 });
      const seen = await collect(
        client.request({ type: "prompt", id, text: "go", workspace: "/w" }),
      );
      expect(seen.map((m) => (m as { type: string }).type)).toEqual(["session.started", "done"]);
      await client.close();
    };
    await Promise.all(Array.from({ length: 200 }, (_, i) => one(i)));
    churning = false;
    await watching;

    expect(started).toBe(200);
    expect(statusAnswers).toBeGreaterThan(0);
    await until("every abandoned request to be aborted", () => aborted === 100);
    await until("only the watcher to remain connected", () => server.connectionCount === 1);
    const [status] = await collect(watcher.request({ type: "status", id: "final" }));
    expect(status).toEqual({ type: "result", id: "final", data: { connections: 1 } });
    expect(server.inFlightCount).toBe(0);
    await watcher.close();
    await until("no connections left", () => server.connectionCount === 0);
  });

  it("closes a client that never reads, while other clients keep being served", async () => {
    let floodSignal: AbortSignal | undefined;
    const server = await start({
      maxWriteBufferBytes: 1024 * 1024,
      onRequest: async (req, conn, signal) => {
        if (req.type === "status") {
          conn.send({ type: "result", id: req.id, data: null });
          return;
        }
        floodSignal = signal;
        const chunk = "x".repeat(64 * 1024);
        while (!signal.aborted && conn.send({ type: "delta", id: req.id, text: chunk })) {
          await new Promise((r) => setImmediate(r));
        }
      },
    });
    const paths = runtimePaths(home);
    const { peer: stalled } = await RawPeer.ready(paths);
    stalled.socket.pause(); // reads nothing from here on
    stalled.send({ type: "prompt", id: "flood", text: "go", workspace: "/w" });
    const other = await DaemonClient.connect({ home });
    const answers = [];
    for (let i = 0; i < 5; i++)
      answers.push(...(await collect(other.request({ type: "status", id: `o${i}` }))));
    expect(answers).toHaveLength(5);
    await until("the stalled reader to be cut off", () => floodSignal?.aborted === true);
    expect(logs).toContain("client is not reading: more than 1048576 bytes unsent");
    await until("only the healthy client to remain", () => server.connectionCount === 1);
    expect(await collect(other.request({ type: "status", id: "after" }))).toEqual([
      { type: "result", id: "after", data: null },
    ]);
    await other.close();
  });
});

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let stderr = "";
    child.stderr!.on("data", (d) => {
      stderr += d;
    });
    const rl = createInterface({ input: child.stdout! });
    rl.once("line", (line) => resolve(line));
    child.once("exit", (code) => reject(new Error(`daemon exited ${code}: ${stderr}`)));
  });
}
