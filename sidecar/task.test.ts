/**
 * Task mode. The result line's size bound on its own, then the real binary as a session pod
 * runs it: two sidecars on one nats-server — capsules/replay serving `llm`, capsules/react in
 * task mode bound to it — the task goes through react's pipeline (token, session binding),
 * react asks replay, the result lands in the result file and the process exits 0. A token from
 * an issuer the sidecar does not trust gets the denial written as the error line and exit 1.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { connect } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditKeyring, verifyChain } from "../core/audit/index.js";
import { generateIssuerKey, type IssuerKey } from "../core/security/tokens/keys.js";
import { mintToken } from "../core/security/tokens/mint.js";
import { type NatsServerHandle, startNatsServer } from "../test/harness/nats-server.js";
import { JetStreamKvStore } from "./enforce/kv-jetstream.js";
import { TASK_RESULT_MAX_BYTES, taskErrorLine, taskResultLine } from "./task.js";

const MAIN = path.resolve("sidecar/main.ts");
const SESSION = "s-task";
const PRINCIPAL = "user:alice";
/** Long, with quotes and non-ASCII, so the cut has to respect JSON escaping and code points. */
const ANSWER = 'Astrid says "done" ✓ — '.repeat(300).trim();

describe("task result lines", () => {
  const usage = { inputTokens: 3, outputTokens: 4 };

  it("keeps a short answer whole", () => {
    expect(taskResultLine({ text: "hi", stopReason: "done", usage })).toEqual({
      line: '{"text":"hi","stopReason":"done","usage":{"inputTokens":3,"outputTokens":4},"truncated":false}\n',
      truncated: false,
    });
  });

  it("cuts a long answer at a whole character so the line fits 4096 bytes", () => {
    for (const text of [ANSWER, "\u0001".repeat(5000), "😀".repeat(3000), "x".repeat(4100)]) {
      const { line, truncated } = taskResultLine({ text, stopReason: "step_limit", usage });
      expect(truncated).toBe(true);
      expect(Buffer.byteLength(line)).toBeLessThanOrEqual(TASK_RESULT_MAX_BYTES);
      // Not more than one more character would have fitted.
      expect(Buffer.byteLength(line)).toBeGreaterThan(TASK_RESULT_MAX_BYTES - 12);
      expect(line.endsWith("\n")).toBe(true);
      const parsed = JSON.parse(line) as { text: string; truncated: boolean; stopReason: string };
      expect(text.startsWith(parsed.text)).toBe(true);
      expect(parsed).toMatchObject({ truncated: true, stopReason: "step_limit" });
    }
  });

  it("cuts an error message the same way", () => {
    expect(taskErrorLine("denied", "no")).toBe('{"error":{"code":"denied","message":"no"}}\n');
    const line = taskErrorLine("internal", "é".repeat(4000));
    expect(Buffer.byteLength(line)).toBeLessThanOrEqual(TASK_RESULT_MAX_BYTES);
    expect((JSON.parse(line) as { error: { message: string } }).error.message).toMatch(/^é+$/);
  });
});

// ── the binary ──────────────────────────────────────────────────────────────────────────────

let nats: NatsServerHandle;
let root: string;
const issuer = generateIssuerKey();
const identity = generateKeyPairSync("ed25519").privateKey;
const children: ChildProcess[] = [];

interface Proc {
  readonly lines: Record<string, unknown>[];
  readonly exit: Promise<number | null>;
  stderr(): string;
  waitFor(msg: string): Promise<void>;
}

function sidecar(args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(process.execPath, ["--import", "tsx", MAIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const lines: Record<string, unknown>[] = [];
  const waiters: { msg: string; resolve: () => void }[] = [];
  let stderr = "";
  child.stderr!.on("data", (d) => {
    stderr += d;
  });
  createInterface({ input: child.stdout! }).on("line", (l) => {
    const rec = JSON.parse(l) as Record<string, unknown>;
    lines.push(rec);
    for (const w of waiters.filter((x) => x.msg === rec.msg)) w.resolve();
  });
  const exit = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  return {
    lines,
    exit,
    stderr: () => stderr,
    waitFor: (msg) =>
      lines.some((l) => l.msg === msg)
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            waiters.push({ msg, resolve });
            void exit.then((code) =>
              reject(
                new Error(`exited ${code} before "${msg}":\n${stderr}\n${JSON.stringify(lines)}`),
              ),
            );
          }),
  };
}

/** Flags every sidecar of the test shares; each gets its own audit directory. */
function common(name: string): string[] {
  // biome-ignore format: one flag per line reads best
  return [
    "--identity-key-file", path.join(root, "id.pem"),
    "--identity-key-id", name,
    "--bus-kind", "nats", "--bus-url", nats.url,
    "--audit-dir", path.join(root, `audit-${name}`),
    "--revocation-kind", "file", "--revocation-path", path.join(root, "revoked.jsonl"),
    "--trusted-issuer-keys", path.join(root, "issuer.pem"),
    "--mode", "autonomous",
    "--http-port", "0",
  ];
}

function sessionToken(key: IssuerKey): string {
  return mintToken(
    {
      sub: PRINCIPAL,
      res: ["tool:**", "topic:>"],
      perm: ["execute", "publish"],
      ses: SESSION,
      exp: Math.floor(Date.now() / 1000) + 3600,
    },
    key,
  );
}

/** The react capsule as a session pod runs it, in task mode through ASTRID_* variables. */
function reactTask(
  name: string,
  tokenFile: string,
  resultFile: string,
  wiring = { ASTRID_BINDINGS: "astrid.llm=replay", ASTRID_SETTINGS: "max_steps=3" },
): Proc {
  return sidecar(["--package-dir", path.resolve("capsules/react"), ...common(name)], {
    ASTRID_SESSION: SESSION,
    ASTRID_PRINCIPAL: PRINCIPAL,
    ...wiring,
    ASTRID_TASK_TEXT: "What does the README say?",
    ASTRID_TASK_TOKEN_FILE: tokenFile,
    ASTRID_TASK_RESULT_FILE: resultFile,
    ASTRID_TASK_TIMEOUT_MS: "60000",
  });
}

let replay: Proc;

beforeAll(async () => {
  nats = await startNatsServer();
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-task-"));
  writeFileSync(path.join(root, "id.pem"), identity.export({ type: "pkcs8", format: "pem" }));
  writeFileSync(
    path.join(root, "issuer.pem"),
    issuer.publicKey.export({ type: "spki", format: "pem" }),
  );
  mkdirSync(path.join(root, "ws", ".astrid", "replay"), { recursive: true });
  writeFileSync(
    path.join(root, "ws", ".astrid", "replay", "transcript.jsonl"),
    `${JSON.stringify({
      provider: "anthropic",
      model: "claude-sonnet-4-5",
      content: [{ type: "text", text: ANSWER }],
      stopReason: "end_turn",
      usage: { inputTokens: 120, outputTokens: 80 },
    })}\n`,
  );
  replay = sidecar([
    "--package-dir",
    path.resolve("capsules/replay"),
    ...common("replay"),
    "--workspace",
    path.join(root, "ws"),
  ]);
  await replay.waitFor("started");
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGKILL");
  await nats?.dispose();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("astrid-sidecar in task mode", () => {
  it("sends the task through its own pipeline, writes the answer and exits 0", async () => {
    const token = sessionToken(issuer);
    writeFileSync(path.join(root, "token"), `${token}\n`);
    const result = path.join(root, "result-ok");
    const react = reactTask("react", path.join(root, "token"), result);
    expect(await react.exit).toBe(0);
    const line = readFileSync(result, "utf8");
    expect(Buffer.byteLength(line)).toBeLessThanOrEqual(TASK_RESULT_MAX_BYTES);
    const r = JSON.parse(line) as Record<string, unknown> & { text: string };
    expect(r).toMatchObject({
      stopReason: "done",
      usage: { inputTokens: 120, outputTokens: 80, costMicroUsd: 0 },
      truncated: true,
    });
    expect(ANSWER.startsWith(r.text)).toBe(true);
    expect(r.text.length).toBeGreaterThan(1000);
    const msgs = react.lines.map((l) => l.msg);
    expect(msgs.slice(msgs.indexOf("started"))).toEqual([
      "started",
      "task sent",
      "task answered",
      "task done; draining",
      "drained",
      "closed",
      "exiting",
    ]);
    expect(react.lines.find((l) => l.msg === "task answered")).toMatchObject({
      stopReason: "done",
      truncated: true,
    });
    expect(react.lines.at(-1)).toMatchObject({ exitCode: 0 });
    // The token is a bearer credential: it must not reach the log.
    expect(JSON.stringify(react.lines)).not.toContain(token.slice(-40));
    // The prompt passed react's token check, and react's model call passed replay's: both
    // decisions are in chains that verify.
    const keyring = new AuditKeyring([
      ["react", identity],
      ["replay", identity],
    ]);
    expect((await verifyChain(path.join(root, "audit-react"), keyring)).ok).toBe(true);
    expect((await verifyChain(path.join(root, "audit-replay"), keyring)).ok).toBe(true);
  }, 60_000);

  it("writes the denial and exits 1 for a token from an issuer it does not trust", async () => {
    const untrusted = generateIssuerKey();
    writeFileSync(path.join(root, "token-untrusted"), sessionToken(untrusted));
    const result = path.join(root, "result-denied");
    const react = reactTask("react-denied", path.join(root, "token-untrusted"), result);
    expect(await react.exit).toBe(1);
    const r = JSON.parse(readFileSync(result, "utf8")) as {
      error: { code: string; message: string };
    };
    expect(r).toEqual({
      error: { code: "denied", message: `token: unknown issuer key "${untrusted.kid}"` },
    });
    expect(react.lines.find((l) => l.msg === "task failed")).toMatchObject({
      level: "error",
      code: "denied",
    });
    expect(react.lines.at(-1)).toMatchObject({ msg: "exiting", exitCode: 1 });
  }, 60_000);

  it("wires a cache between react and replay by bindings alone; its entries live in JetStream", async () => {
    // Settings reach both guests: react asks at temperature 0.7, which the cache stores only
    // because CACHE_ALL=true; without either setting arriving, the bucket would stay empty.
    const cache = sidecar(["--package-dir", path.resolve("capsules/cache"), ...common("cache")], {
      ASTRID_BINDINGS: "astrid.llm=replay",
      ASTRID_SETTINGS: "CACHE_ALL=true",
      ASTRID_KV_KIND: "jetstream",
    });
    await cache.waitFor("started");
    writeFileSync(path.join(root, "token-cache"), sessionToken(issuer));
    const result = path.join(root, "result-cache");
    const react = reactTask("react-cache", path.join(root, "token-cache"), result, {
      ASTRID_BINDINGS: "astrid.llm=cache",
      ASTRID_SETTINGS: "REACT_TEMPERATURE=0.7,max_steps=3",
    });
    expect(await react.exit).toBe(0);
    const r = JSON.parse(readFileSync(result, "utf8")) as { text: string; stopReason: string };
    expect(r.stopReason).toBe("done");
    expect(ANSWER.startsWith(r.text)).toBe(true);
    expect(cache.lines.find((l) => l.msg === "serving")).toMatchObject({ kv: "astrid-kv-cache" });
    const nc = await connect({ servers: nats.url });
    try {
      const kv = await JetStreamKvStore.open(nc, { bucket: "astrid-kv-cache" });
      expect(await kv.list("cache.cache", "e.")).toHaveLength(1);
    } finally {
      await nc.close();
    }
  }, 60_000);

  it("writes an error and exits 1 when the token file cannot be read", async () => {
    const result = path.join(root, "result-notoken");
    const missing = path.join(root, "no-such-token");
    const react = reactTask("react-notoken", missing, result);
    expect(await react.exit).toBe(1);
    expect(JSON.parse(readFileSync(result, "utf8"))).toEqual({
      error: {
        code: "invalid",
        message: `cannot read the task's token file ${missing}: ENOENT: no such file or directory, open '${missing}'`,
      },
    });
  }, 60_000);
});
