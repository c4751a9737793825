/**
 * DaemonClient against a real DaemonServer (and, for a misbehaving daemon, a raw socket server):
 * each way of not reaching a working daemon gives its own error and message.
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { DaemonMessage } from "../protocol.js";
import {
  DaemonAuthError,
  DaemonClient,
  DaemonConnectionClosedError,
  DaemonHandshakeError,
  DaemonNotRunningError,
  DaemonProtocolMismatchError,
  StaleSocketError,
} from "./client.js";
import { encodeFrame } from "./frames.js";
import { ensureRunDir, runtimePaths } from "./paths.js";
import { DaemonServer, type DaemonServerOptions } from "./server.js";

const ECHO_DAEMON = path.resolve("test/fixtures/daemon/echo-daemon.ts");

let home: string;
let cleanups: (() => Promise<void> | void)[];

beforeEach(() => {
  home = mkdtempSync(path.join(os.tmpdir(), "astrid-cli-"));
  cleanups = [];
});
afterEach(async () => {
  for (const c of cleanups.reverse()) await c();
  rmSync(home, { recursive: true, force: true });
});

async function start(opts: Partial<DaemonServerOptions> = {}): Promise<DaemonServer> {
  const server = await DaemonServer.listen({
    home,
    version: "test",
    onRequest: (req, conn) => {
      conn.send({ type: "result", id: req.id, data: null });
    },
    ...opts,
  });
  cleanups.push(() => server.close());
  return server;
}

async function connect(): Promise<DaemonClient> {
  const client = await DaemonClient.connect({ home });
  cleanups.push(() => client.close());
  return client;
}

async function collect(iter: AsyncIterable<DaemonMessage>): Promise<DaemonMessage[]> {
  const out: DaemonMessage[] = [];
  for await (const m of iter) out.push(m);
  return out;
}

/** A socket server on the daemon's path that does whatever the test says, for bad daemons. */
async function rawDaemon(onConnection: (socket: net.Socket) => void): Promise<void> {
  const paths = runtimePaths(home);
  ensureRunDir(paths);
  writeFileSync(paths.tokenFile, "t".repeat(43));
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    onConnection(socket);
  });
  await new Promise<void>((resolve) => server.listen(paths.socket, resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  );
}

describe("reaching the daemon", () => {
  it("says no daemon is running when there is no run dir or no socket", async () => {
    const paths = runtimePaths(home);
    const expected = `no astrid-daemon is running for ${paths.home} (no socket at ${paths.socket}): start it with \`astrid start\``;
    await expect(DaemonClient.connect({ home })).rejects.toThrow(new DaemonNotRunningError(paths));
    await expect(DaemonClient.connect({ home })).rejects.toThrow(expected);
    mkdirSync(paths.runDir, { mode: 0o700 });
    await expect(DaemonClient.connect({ home })).rejects.toThrow(expected);
  });

  it("recognises a stale socket left by a killed daemon", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", ECHO_DAEMON, "--home", home], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    await new Promise((resolve) => createInterface({ input: child.stdout! }).once("line", resolve));
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await exited;
    const paths = runtimePaths(home);
    const err = await DaemonClient.connect({ home }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StaleSocketError);
    expect(err).toBeInstanceOf(DaemonNotRunningError);
    expect((err as Error).message).toBe(
      `stale socket at ${paths.socket}: the daemon that made it is gone; \`astrid start\` replaces it`,
    );
  });

  it("refuses to use a run dir other users can enter", async () => {
    await start();
    const { runDir } = runtimePaths(home);
    const { chmodSync } = await import("node:fs");
    chmodSync(runDir, 0o711);
    await expect(DaemonClient.connect({ home })).rejects.toThrow(
      `${runDir} has mode 0711; it must be 0700 so no other user can reach the daemon: run \`chmod 700 ${runDir}\``,
    );
    chmodSync(runDir, 0o700);
  });

  it("reports a wrong token", async () => {
    await start();
    const paths = runtimePaths(home);
    writeFileSync(paths.tokenFile, "another-daemons-token-value");
    const err = await DaemonClient.connect({ home }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DaemonAuthError);
    expect((err as Error).message).toBe(
      `astrid-daemon refused the token in ${paths.tokenFile}: wrong token: the daemon was restarted or the client read another home's token`,
    );
  });

  it("reports a protocol mismatch with the fix", async () => {
    await start({ protocol: 2 });
    const err = await DaemonClient.connect({ home }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DaemonProtocolMismatchError);
    expect((err as Error).message).toBe(
      "daemon speaks protocol 2, this astrid speaks 1: restart the daemon with `astrid stop`",
    );
  });

  it("gives up on a daemon that never answers the hello", async () => {
    await rawDaemon(() => {});
    await expect(DaemonClient.connect({ home, timeoutMs: 200 })).rejects.toThrow(
      new DaemonHandshakeError("no welcome from the daemon within 200 ms"),
    );
  });
});

describe("requests", () => {
  it("yields each request's own messages, in order, up to its terminal message", async () => {
    await start({
      onRequest: async (req, conn) => {
        if (req.type !== "prompt") {
          conn.send({ type: "result", id: req.id, data: req.type });
          return;
        }
        for (const word of req.text.split(" ")) {
          conn.send({ type: "delta", id: req.id, text: word });
          await new Promise((r) => setImmediate(r));
        }
        conn.send({
          type: "done",
          id: req.id,
          session: "s",
          text: req.text,
          stopReason: "end_turn",
          usage: { inputTokens: 1, outputTokens: 2, costMicroUsd: 3 },
        });
        conn.send({ type: "delta", id: req.id, text: "after the end" });
      },
    });
    const client = await connect();
    const [a, b, c] = await Promise.all([
      collect(client.request({ type: "prompt", id: "a", text: "one two three", workspace: "/w" })),
      collect(client.request({ type: "prompt", id: "b", text: "four five", workspace: "/w" })),
      collect(client.request({ type: "status", id: "c" })),
    ]);
    expect(a.map((m) => (m.type === "delta" ? m.text : m.type))).toEqual([
      "one",
      "two",
      "three",
      "done",
    ]);
    expect(b.map((m) => (m.type === "delta" ? m.text : m.type))).toEqual(["four", "five", "done"]);
    expect(c).toEqual([{ type: "result", id: "c", data: "status" }]);
  });

  it("sends fire-and-forget requests, and hands unsolicited answers to onUnsolicited", async () => {
    const answers: unknown[] = [];
    await start({
      onRequest: (req, conn) => {
        if (req.type === "approval.answer") {
          answers.push(req.decision);
          if (req.decision === "deny") throw new Error(`no pending approval ${req.requestId}`);
          return;
        }
        conn.send({ type: "result", id: req.id, data: answers });
      },
    });
    const unsolicited: DaemonMessage[] = [];
    const client = await DaemonClient.connect({ home, onUnsolicited: (m) => unsolicited.push(m) });
    cleanups.push(() => client.close());
    client.send({ type: "approval.answer", id: "x1", requestId: "r1", decision: "allow_once" });
    client.send({ type: "approval.answer", id: "x2", requestId: "r9", decision: "deny" });
    expect(await collect(client.request({ type: "status", id: "s" }))).toEqual([
      { type: "result", id: "s", data: ["allow_once", "deny"] },
    ]);
    expect(unsolicited).toEqual([
      { type: "error", id: "x2", code: "internal", message: "no pending approval r9" },
    ]);
  });

  it("refuses an invalid request before sending it", async () => {
    await start();
    const client = await connect();
    expect(() => client.request({ type: "session.show", id: "q" } as never)).toThrow(
      "invalid request: session: Invalid input: expected string, received undefined",
    );
  });

  it("ends a running request with the daemon's reason when the daemon stops", async () => {
    const server = await start({ onRequest: () => new Promise(() => {}) });
    const client = await connect();
    const running = collect(client.request({ type: "session.list", id: "l" }));
    await server.close();
    expect(await running).toEqual([
      { type: "error", code: "daemon_stopping", message: "astrid-daemon is stopping" },
    ]);
    const later = collect(client.request({ type: "status", id: "s" }));
    await expect(later).rejects.toThrow(
      new DaemonConnectionClosedError("astrid-daemon is stopping"),
    );
  });

  it("fails running requests when the daemon breaks the protocol", async () => {
    await rawDaemon((socket) => {
      socket.once("data", () => {
        socket.write(encodeFrame({ type: "welcome", protocol: 1, daemonPid: 1, version: "raw" }));
        socket.once("data", () => socket.write(encodeFrame({ type: "delta", id: "r" })));
      });
    });
    const client = await connect();
    await expect(collect(client.request({ type: "status", id: "r" }))).rejects.toThrow(
      new DaemonConnectionClosedError(
        "the daemon broke the protocol: invalid daemon message: text: Invalid input: expected string, received undefined",
      ),
    );
  });
});
