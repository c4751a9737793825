/**
 * astrid-daemon under the real `astrid` CLI when things go wrong: the daemon killed with
 * SIGKILL mid-session, 200 clients at once (half of them vanishing mid-conversation) while a
 * prompt runs, and the socket and lock of a dead daemon left in `run/`. The provider is replay
 * (the `make demo` transcript) with `--yes`, so no key and no network are involved.
 *
 * What is shown: the next command autostarts a new daemon over the dead one's files and a
 * session continues from its saved transcript; a burst of clients, some rude, neither stalls
 * nor breaks the prompt that is running; the CLI works on a home a crash left behind.
 */
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import net from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DaemonClient } from "../kernel/ipc/client.js";
import { runtimePaths } from "../kernel/ipc/paths.js";
import { AstridSandbox, isAlive, lastLine, sleep } from "./fixtures/cli/astrid-cli.js";

const FINAL = "The notes say the launch is on Friday, after the security review.";

let sb: AstridSandbox;

beforeEach(async () => {
  sb = AstridSandbox.create();
  await sb.ok(["init"]);
  sb.useReplay();
});
afterEach(async () => {
  await sb.dispose();
});

async function daemonPid(): Promise<number> {
  const r = await sb.ok(["status"]);
  return (JSON.parse(r.stdout) as { pid: number }).pid;
}

async function transcriptOf(session: string): Promise<string[][]> {
  const r = await sb.ok(["session", "show", session]);
  const { transcript } = JSON.parse(r.stdout) as { transcript: { role: string; text: string }[] };
  return transcript.map((t) => [t.role, t.text]);
}

/** A process that listens on `socket` and dies by SIGKILL: its socket file stays behind. */
async function deadListener(socket: string): Promise<number> {
  const child = spawn(
    process.execPath,
    [
      "-e",
      `require("net").createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, "SIGKILL"))`,
    ],
    { stdio: "ignore" },
  );
  await new Promise((r) => child.once("exit", r));
  return child.pid!;
}

async function politeStatus(): Promise<unknown[]> {
  const c = await DaemonClient.connect({ home: sb.home, client: "cli-test" });
  try {
    const data: unknown[] = [];
    for await (const m of c.request({ type: "status", id: randomUUID() })) {
      if (m.type === "result") data.push(m.data);
    }
    return data;
  } finally {
    await c.close();
  }
}

/**
 * A client that hangs up mid-conversation: after half a frame (`halfFrame`), or after the
 * handshake and a status request, before the answer.
 */
async function rudeClient(halfFrame: boolean): Promise<void> {
  if (halfFrame) {
    const s = net.connect(runtimePaths(sb.home).socket);
    await new Promise<void>((resolve, reject) => {
      s.once("connect", () => {
        // A 4-byte length announcing 256 bytes, then 1 of them.
        s.write(Buffer.from([0, 0, 1, 0, 123]));
        s.destroy();
        resolve();
      });
      s.once("error", reject);
    });
    return;
  }
  const c = await DaemonClient.connect({ home: sb.home, client: "cli-test" });
  const it = c.request({ type: "status", id: randomUUID() })[Symbol.asyncIterator]();
  void it.next().catch(() => undefined);
  await c.close();
}

describe("astrid-daemon robustness under the real CLI", () => {
  it("kill -9 mid-session: the next command autostarts a daemon and the session continues", async () => {
    const first = await sb.ok(["-p", "Start", "--yes", "--print-session"]);
    expect(first.stdout).toBe(`${FINAL}\n`);
    const session = lastLine(first.stderr);
    const pid = await daemonPid();
    expect(sb.lockPid()).toBe(pid);

    process.kill(pid, "SIGKILL");
    for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(20);
    expect(isAlive(pid)).toBe(false);
    // What the crash leaves: a socket nobody answers on and a lock naming a dead pid.
    expect(existsSync(runtimePaths(sb.home).socket)).toBe(true);

    const second = await sb.ok(["-p", "Continue", "--yes", "--session", session]);
    expect(second.stdout).toBe(`${FINAL}\n`);
    const newPid = await daemonPid();
    expect(newPid).not.toBe(pid);
    expect(sb.lockPid()).toBe(newPid);
    expect(await transcriptOf(session)).toEqual([
      ["user", "Start"],
      ["assistant", FINAL],
      ["user", "Continue"],
      ["assistant", FINAL],
    ]);
  });

  it("200 concurrent clients, half disconnecting abruptly, while a prompt runs and completes", async () => {
    const pid = await daemonPid();
    const prompt = sb.run(["-p", "When is the launch?", "--yes"]);

    let finished = false;
    void prompt.then(() => {
      finished = true;
    });
    // Bursts of 200 until the prompt is done, so the burst overlaps the running turn.
    let rounds = 0;
    do {
      const [answers] = await Promise.all([
        Promise.all(Array.from({ length: 100 }, () => politeStatus())),
        Promise.all(Array.from({ length: 100 }, (_, i) => rudeClient(i % 2 === 0))),
      ]);
      expect(answers).toHaveLength(100);
      for (const a of answers) expect(a).toEqual([expect.objectContaining({ pid })]);
      rounds++;
    } while (!finished);
    const r = await prompt;
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('· search {"text":"launch"}\n');
    expect(r.stdout).toBe(`${FINAL}\n`);
    expect(rounds).toBeGreaterThan(0);
    // Still the same daemon, still serving.
    expect(await daemonPid()).toBe(pid);
  });

  it("works on a home where a dead daemon left its socket, lock and token", async () => {
    const paths = runtimePaths(sb.home);
    mkdirSync(paths.runDir, { recursive: true, mode: 0o700 });
    const dead = await deadListener(paths.socket);
    expect(isAlive(dead)).toBe(false);
    expect(existsSync(paths.socket)).toBe(true);
    writeFileSync(
      paths.lockFile,
      `${JSON.stringify({ pid: dead, startTime: "1", nonce: "x" })}\n`,
      {
        mode: 0o600,
      },
    );
    writeFileSync(paths.tokenFile, "stale-token\n", { mode: 0o600 });

    const r = await sb.ok(["-p", "When is the launch?", "--yes"]);
    expect(r.stdout).toBe(`${FINAL}\n`);
    const pid = await daemonPid();
    expect(pid).not.toBe(dead);
    expect(sb.lockPid()).toBe(pid);
  });
});
