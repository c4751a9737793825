/**
 * The MCP stdio transport, written for the sidecar instead of the SDK's StdioClientTransport,
 * which (1) merges HOME, PATH, USER, SHELL… of the sidecar into the server's environment,
 * (2) logs a malformed line and carries on, leaving the call it answered to hang until its
 * timeout, (3) buffers up to 10 MB of one message and (4) kills only the direct child, so a
 * server's own children outlive it.
 *
 * Here: the environment is exactly the one given; the server runs as the leader of its own
 * process group and `close()` kills the whole group; stdout lines are capped; any output that
 * is not JSON-RPC ends the connection with a reason the engine reports to every call in
 * flight; stderr goes line by line (cut at a length) to a callback, never near the protocol.
 */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { once } from "node:events";
import type { Transport } from "@modelcontextprotocol/sdk/shared/transport.js";
import { type JSONRPCMessage, JSONRPCMessageSchema } from "@modelcontextprotocol/sdk/types.js";
import { BoundedLineSplitter, type OversizedLine } from "./bounded-lines.js";
import { McpEngineError, RESULT_TOO_LARGE } from "./errors.js";

export interface StdioServerSpec {
  readonly command: string;
  readonly args: readonly string[];
  readonly cwd?: string;
  /** The server's whole environment; nothing of the sidecar's is added. */
  readonly env: Readonly<Record<string, string>>;
}

export interface StdioTransportOptions {
  /** Server name for messages. */
  readonly name: string;
  /** Largest JSON-RPC message accepted from the server, in bytes. */
  readonly maxMessageBytes: number;
  /** Longest stderr line passed on; longer ones are cut. */
  readonly maxStderrLineBytes: number;
  readonly onStderr: (line: string) => void;
  /** Time between SIGTERM and SIGKILL when closing. */
  readonly killGraceMs: number;
}

export type StdioEnd =
  | { readonly kind: "exited"; readonly code: number | null; readonly signal: string | null }
  /** `message` reads after the server's name: "it wrote output that is not JSON: …". */
  | { readonly kind: "protocol"; readonly message: string }
  | { readonly kind: "closed" };

const snippet = (s: string) => (s.length > 120 ? `${s.slice(0, 120)}…` : s);

export class StdioClientTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;

  private child: ChildProcessWithoutNullStreams | undefined;
  private exited: Promise<unknown> = Promise.resolve();
  private endReason: StdioEnd | undefined;
  private closedNotified = false;
  private markEnded: () => void = () => {};
  private readonly endedPromise = new Promise<void>((r) => {
    this.markEnded = r;
  });

  constructor(
    private readonly spec: StdioServerSpec,
    private readonly opts: StdioTransportOptions,
  ) {}

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Why the connection ended, once it has. */
  get end(): StdioEnd | undefined {
    return this.endReason;
  }

  /**
   * Resolves once the connection has ended, or after `ms`. A failed write (EPIPE) comes before
   * the exit that explains it; callers wait here to report the exit, not the symptom.
   */
  ended(ms: number): Promise<void> {
    return Promise.race([this.endedPromise, new Promise<void>((r) => setTimeout(r, ms).unref())]);
  }

  async start(): Promise<void> {
    if (this.child) throw new Error(`MCP server "${this.opts.name}": transport already started`);
    const child = spawn(this.spec.command, [...this.spec.args], {
      cwd: this.spec.cwd,
      env: { ...this.spec.env },
      stdio: ["pipe", "pipe", "pipe"],
      // Own process group: close() can then reach every process the server started.
      detached: true,
      shell: false,
    });
    this.child = child;
    this.exited = once(child, "exit").catch(() => undefined);

    const stdout = new BoundedLineSplitter(this.opts.maxMessageBytes, {
      line: (l) => this.onLine(l),
      oversized: (o) => this.onOversized(o),
    });
    const stderr = new BoundedLineSplitter(this.opts.maxStderrLineBytes, {
      line: (l) => this.opts.onStderr(l),
      oversized: (o) => this.opts.onStderr(`${o.head}… (line of ${o.bytes} bytes cut)`),
    });
    child.stdout.on("data", (c: Buffer) => stdout.push(c));
    child.stderr.on("data", (c: Buffer) => stderr.push(c));
    child.stderr.on("end", () => stderr.end());
    // A broken pipe on stdin is reported by the exit that follows it.
    child.stdin.on("error", () => undefined);

    await new Promise<void>((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", (e) => {
        this.child = undefined;
        reject(
          new McpEngineError(
            "unavailable",
            `MCP server "${this.opts.name}": cannot start ${JSON.stringify(this.spec.command)}: ${e.message}`,
            { cause: e },
          ),
        );
      });
    });

    child.once("exit", (code, signal) => {
      // "exit" can come before the last bytes of stdout are read: a server that answers and
      // then exits must still be heard. Its children may hold the pipes open, hence the cap.
      // Its last stderr lines are what explains an exit; wait for those too.
      const ended = (r: NodeJS.ReadableStream & { readableEnded: boolean }) =>
        r.readableEnded ? Promise.resolve() : once(r, "end");
      const drained = Promise.all([ended(child.stdout), ended(child.stderr)]);
      const cap = new Promise((r) => setTimeout(r, 100).unref());
      void Promise.race([drained, cap])
        .catch(() => undefined)
        .then(() => this.finish({ kind: "exited", code, signal }));
    });
  }

  async send(message: JSONRPCMessage): Promise<void> {
    const child = this.child;
    if (!child || this.endReason) {
      throw new McpEngineError("unavailable", `MCP server "${this.opts.name}" is not running`);
    }
    const line = `${JSON.stringify(message)}\n`;
    if (!child.stdin.write(line)) await once(child.stdin, "drain");
  }

  /**
   * The stdio shutdown of the MCP spec (close stdin, SIGTERM, SIGKILL after a grace period)
   * applied to the whole process group, without waiting on stdin first: a stop should not
   * take seconds. A final SIGKILL to the group reaches children that ignore TERM.
   */
  async close(): Promise<void> {
    const child = this.child;
    if (!child) return;
    if (!this.endReason) this.endReason = { kind: "closed" };
    const pgid = child.pid;
    child.stdin.end();
    if (child.exitCode === null && child.signalCode === null) {
      killGroup(pgid, "SIGTERM");
      const timer = setTimeout(() => killGroup(pgid, "SIGKILL"), this.opts.killGraceMs);
      await this.exited;
      clearTimeout(timer);
    }
    killGroup(pgid, "SIGKILL");
    this.finish({ kind: "exited", code: child.exitCode, signal: child.signalCode });
  }

  private onLine(line: string): void {
    if (line.trim() === "") return;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      this.fail(`wrote output that is not JSON: ${JSON.stringify(snippet(line))}`);
      return;
    }
    const msg = JSONRPCMessageSchema.safeParse(parsed);
    if (!msg.success) {
      this.fail(`wrote JSON that is not a JSON-RPC message: ${JSON.stringify(snippet(line))}`);
      return;
    }
    this.onmessage?.(msg.data);
  }

  /**
   * A message over the cap was skipped, so the stream is still in step; when the id of the
   * request it answers can be read from its first or last bytes, only that call fails.
   */
  private onOversized(o: OversizedLine): void {
    const id = responseId(o);
    const what = `sent a message of ${o.bytes} bytes; the limit is ${this.opts.maxMessageBytes} bytes`;
    if (id === undefined) {
      this.fail(`${what}, and it answers no request we can identify`);
      return;
    }
    this.onmessage?.({
      jsonrpc: "2.0",
      id,
      error: { code: RESULT_TOO_LARGE, message: `MCP server "${this.opts.name}" ${what}` },
    });
  }

  /** Output we cannot trust ends the connection: which call a later line answers is unknown. */
  private fail(message: string): void {
    if (this.endReason) return;
    this.endReason = { kind: "protocol", message: `it ${message}` };
    void this.close();
  }

  private finish(reason: StdioEnd): void {
    // Keep the first reason (a protocol failure explains the exit our own kill caused), except
    // that a failing exit code beats our own close: the SDK closes us when a write fails with
    // EPIPE, before the exit that caused the EPIPE has been reaped.
    const failed = reason.kind === "exited" && reason.code !== null && reason.code !== 0;
    if (!this.endReason || (this.endReason.kind === "closed" && failed)) this.endReason = reason;
    const pgid = this.child?.pid;
    // The leader is gone; its children must not outlive it as orphans.
    if (pgid !== undefined) killGroup(pgid, "SIGKILL");
    if (this.closedNotified) return;
    this.closedNotified = true;
    this.markEnded();
    this.onclose?.();
  }
}

function killGroup(pgid: number | undefined, signal: NodeJS.Signals): void {
  if (pgid === undefined) return;
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: the group is already empty.
  }
}

/** The id of a response, only when it is unambiguously the top-level one (first or last key). */
function responseId(o: OversizedLine): number | string | undefined {
  const tail = /"id"\s*:\s*(\d+|"[^"\\]*")\s*\}\s*$/.exec(o.tail);
  const head = /^\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(\d+|"[^"\\]*")/.exec(o.head);
  const raw = tail?.[1] ?? head?.[1];
  if (raw === undefined) return undefined;
  return JSON.parse(raw) as number | string;
}
