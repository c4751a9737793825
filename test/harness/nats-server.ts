/**
 * Starts a real nats-server on a free loopback port for a test, with JetStream in a temp
 * directory, and stops it. Tests never share a server with another file, so a test that
 * restarts or kills its server cannot disturb its neighbours.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

export interface NatsServerOptions {
  /** Extra nats-server config appended to the generated file (e.g. an `authorization` block). */
  config?: string;
  jetstream?: boolean;
  /** Largest message payload the server accepts; NATS' default is 1 MiB. */
  maxPayload?: number;
  /** Decentralized (JWT) auth: the server trusts this operator and nothing else. */
  operator?: NatsOperatorMode;
}

export interface NatsOperatorMode {
  /** The operator JWT the server trusts. */
  operatorJwt: string;
  /** Public key of the system account (its JWT must be among `accounts`). */
  systemAccount: string;
  /**
   * Account JWTs by public key, preloaded into the full nats-based resolver (stored under
   * the server's directory), which then accepts signed `$SYS.REQ.ACCOUNT.*.CLAIMS.UPDATE`.
   */
  accounts: Readonly<Record<string, string>>;
}

function operatorConfig(dir: string, mode: NatsOperatorMode): string {
  const operatorPath = path.join(dir, "operator.jwt");
  writeFileSync(operatorPath, mode.operatorJwt);
  // JSON strings are valid nats-server config values, so keys and JWTs cannot break out.
  const preload = Object.entries(mode.accounts)
    .map(([key, jwt]) => `  ${JSON.stringify(key)}: ${JSON.stringify(jwt)}`)
    .join("\n");
  return [
    `operator: ${JSON.stringify(operatorPath)}`,
    `system_account: ${JSON.stringify(mode.systemAccount)}`,
    `resolver: { type: full, dir: ${JSON.stringify(path.join(dir, "jwt"))}, allow_delete: false }`,
    `resolver_preload: {\n${preload}\n}`,
  ].join("\n");
}

export interface NatsServerHandle {
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** Stop the server (SIGTERM, then SIGKILL after 5 s); keeps the port for `start`. */
  stop(): Promise<void>;
  /** Start again on the same port and store directory (after `stop`). */
  start(): Promise<void>;
  /** Stop for good and delete the store directory. */
  dispose(): Promise<void>;
}

export function findNatsServer(): string {
  for (const p of [process.env.NATS_SERVER_BIN, "/usr/sbin/nats-server", "/usr/bin/nats-server"]) {
    if (p && existsSync(p)) return p;
  }
  throw new Error(
    "nats-server not found: run `make setup` (installs Debian's nats-server) or set NATS_SERVER_BIN",
  );
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, proc: ChildProcess, log: () => string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) {
      throw new Error(`nats-server exited with ${proc.exitCode}:\n${log()}`);
    }
    // "Server is ready" is printed once every listener is up, JetStream included.
    if (log().includes("Server is ready")) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`nats-server did not become ready on port ${port} within 15 s:\n${log()}`);
}

export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const bin = findNatsServer();
  const port = await freePort();
  const dir = mkdtempSync(path.join(os.tmpdir(), "astrid-nats-"));
  const confPath = path.join(dir, "nats.conf");
  const lines = [
    `host: 127.0.0.1`,
    `port: ${port}`,
    `max_payload: ${opts.maxPayload ?? 1024 * 1024}`,
    opts.jetstream === false ? "" : `jetstream { store_dir: "${path.join(dir, "js")}" }`,
    opts.operator ? operatorConfig(dir, opts.operator) : "",
    opts.config ?? "",
  ];
  writeFileSync(confPath, `${lines.join("\n")}\n`);

  let proc: ChildProcess | undefined;
  let output = "";

  const start = async () => {
    output = "";
    const p = spawn(bin, ["-c", confPath], { stdio: ["ignore", "pipe", "pipe"] });
    proc = p;
    p.stdout?.on("data", (d: Buffer) => {
      output += d.toString();
    });
    p.stderr?.on("data", (d: Buffer) => {
      output += d.toString();
    });
    await waitForPort(port, p, () => output);
  };

  const stop = async () => {
    const p = proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once("exit", () => r()));
    p.kill("SIGTERM");
    const timer = setTimeout(() => p.kill("SIGKILL"), 5000);
    await exited;
    clearTimeout(timer);
  };

  try {
    await start();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    dir,
    stop,
    start,
    async dispose() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
