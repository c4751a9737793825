/**
 * The MCP engine: the sidecar's MCP client for one capsule's server, reached by stdio (a child
 * process) or streamable HTTP. It lists the server's tools and calls them, and owns every way
 * a server can go wrong so the rest of the sidecar sees only a result or an McpEngineError:
 *
 * - a stdio server that dies is restarted with exponential backoff; calls in flight fail with
 *   the exit code, calls that arrive meanwhile wait for the restart up to their own deadline;
 * - a call past its deadline, or aborted by the caller, is cancelled on the server
 *   (notifications/cancelled) and fails at once;
 * - output that is not JSON-RPC, a result of the wrong shape, or a message above
 *   `maxResultBytes` fails the call with a clear error, never a hang;
 * - a server that never answers initialize fails `start` after `startTimeoutMs`;
 * - `stop()` ends the server's whole process group.
 *
 * `maxResultBytes` caps every message the server sends (tools/list included): it is the most
 * memory one server can make the sidecar hold.
 */
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import {
  StreamableHTTPClientTransport,
  StreamableHTTPError,
} from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  type CallToolResult,
  ErrorCode,
  McpError,
  ToolListChangedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { backoffDelay } from "../../../core/bus/backoff.js";
import type { ToolSpec } from "../../../core/protocol/messages.js";
import { cappedFetch } from "./capped-fetch.js";
import { McpEngineError, type McpErrorCode, RESULT_TOO_LARGE } from "./errors.js";
import { StdioClientTransport } from "./stdio-transport.js";
import { type ToolOutputPart, toolOutputsOf } from "./tool-content.js";

export type McpServerTarget =
  | {
      readonly transport: "stdio";
      readonly command: string;
      readonly args?: readonly string[];
      readonly cwd?: string;
      /** The server's entire environment (see serverEnvironment); nothing is inherited. */
      readonly env: Readonly<Record<string, string>>;
    }
  | { readonly transport: "http"; readonly url: string };

export interface McpLogEntry {
  readonly level: "debug" | "info" | "warn" | "error";
  /** "server": a line of the server's stderr; "engine": what the engine did (restarts…). */
  readonly source: "server" | "engine";
  readonly message: string;
}

export interface McpEngineOptions {
  /** Server name used in every message (the capsule's name). */
  readonly name: string;
  /** Deadline of a call that names none. */
  readonly callTimeoutMs: number;
  /** Largest message accepted from the server, in bytes. */
  readonly maxResultBytes: number;
  /** Backoff between restarts of a stdio server: initialMs·2^n, at most maxMs. */
  readonly restart: { readonly initialMs: number; readonly maxMs: number };
  /** Bound on spawn + initialize + tools/list. Default 10 s. */
  readonly startTimeoutMs?: number;
  /** Longest stderr line passed to onLog. Default 4096 bytes. */
  readonly maxStderrLineBytes?: number;
  /** SIGTERM → SIGKILL grace when stopping a stdio server. Default 2 s. */
  readonly killGraceMs?: number;
  readonly onLog?: (entry: McpLogEntry) => void;
  /** The server announced new tools (tools/list_changed) and they were listed again. */
  readonly onToolsChanged?: (tools: ToolSpec[]) => void;
}

export interface McpCallOptions {
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

export interface McpCallResult {
  readonly content: ToolOutputPart[];
  readonly isError: boolean;
}

/** MCP 2025-11-25 tool names; anything else could smuggle separators into a bus subject. */
const TOOL_NAME = /^[A-Za-z0-9_.-]{1,128}$/;
const MAX_TOOL_PAGES = 64;
const MAX_TOOLS = 1024;
const STDERR_TAIL_LINES = 5;
const CLIENT_INFO = { name: "astrid-sidecar", version: "0.1.0" };

interface Connection {
  readonly client: Client;
  readonly transport: StdioClientTransport | StreamableHTTPClientTransport;
  tools: ToolSpec[];
  closed: boolean;
  /** Re-listings after tools/list_changed run one after another, never interleaved. */
  relist: Promise<void>;
}

export class McpEngine {
  private conn: Connection | undefined;
  private connecting: Promise<Connection> | undefined;
  private stopped = false;
  private readonly stopping = new AbortController();
  private restartAttempt = 0;
  private restartCount = 0;
  private calls = 0;
  private lastTools: ToolSpec[] = [];
  private lastFailure = "";
  private readonly stderrTail: string[] = [];

  private constructor(
    private readonly target: McpServerTarget,
    private readonly opts: McpEngineOptions,
  ) {}

  /** Connects, initializes and lists tools; fails within `startTimeoutMs`. */
  static async start(target: McpServerTarget, opts: McpEngineOptions): Promise<McpEngine> {
    const engine = new McpEngine(target, opts);
    engine.conn = await engine.connectOnce();
    return engine;
  }

  get name(): string {
    return this.opts.name;
  }

  /** Tools of the last successful tools/list (kept while a server restarts). */
  tools(): ToolSpec[] {
    return structuredClone(this.lastTools);
  }

  /** The stdio server's process id (also its process group id), while it runs. */
  get pid(): number | undefined {
    const t = this.conn?.transport;
    return t instanceof StdioClientTransport ? t.pid : undefined;
  }

  /** Restarts that succeeded since start. */
  get restarts(): number {
    return this.restartCount;
  }

  get inFlight(): number {
    return this.calls;
  }

  async callTool(
    name: string,
    args: Record<string, unknown>,
    options: McpCallOptions = {},
  ): Promise<McpCallResult> {
    const timeoutMs = options.timeoutMs ?? this.opts.callTimeoutMs;
    const deadline = Date.now() + timeoutMs;
    this.calls++;
    try {
      for (let attempt = 0; ; attempt++) {
        const conn = await this.connection(name, deadline, options.signal);
        try {
          return await this.callOn(conn, name, args, deadline, timeoutMs, options.signal);
        } catch (e) {
          // A server that restarted forgot our HTTP session (404): the request was never
          // processed, so one retry on a new session is safe.
          if (attempt === 0 && e instanceof StreamableHTTPError && e.code === 404) {
            this.dropConnection(conn);
            continue;
          }
          await this.settle(conn, e);
          throw this.callError(e, conn, name, timeoutMs, options.signal);
        }
      }
    } finally {
      this.calls--;
    }
  }

  /** Closes the transport and, for stdio, kills the server's process group. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.stopping.abort();
    const conn = this.conn;
    this.conn = undefined;
    if (conn) await this.closeConnection(conn);
    await this.connecting?.catch(() => undefined);
  }

  // ── calls ───────────────────────────────────────────────────────────────────────────────

  private async callOn(
    conn: Connection,
    name: string,
    args: Record<string, unknown>,
    deadline: number,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<McpCallResult> {
    if (!conn.tools.some((t) => t.name === name)) {
      const known = conn.tools.map((t) => t.name).join(", ") || "none";
      throw new McpEngineError(
        "not_found",
        `MCP server "${this.opts.name}" has no tool "${name}"; known tools: ${known}`,
      );
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw this.timeoutError(name, timeoutMs, false);
    const requestOptions = signal ? { timeout: remaining, signal } : { timeout: remaining };
    const result = (await conn.client.callTool(
      { name, arguments: args },
      undefined,
      requestOptions,
    )) as CallToolResult;
    // A healthy round trip ends a crash loop's backoff.
    this.restartAttempt = 0;
    return { content: toolOutputsOf(result), isError: result.isError === true };
  }

  private callError(
    e: unknown,
    conn: Connection,
    name: string,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): McpEngineError {
    const server = `MCP server "${this.opts.name}"`;
    if (signal?.aborted) {
      return new McpEngineError(
        "cancelled",
        `MCP call "${name}" to server "${this.opts.name}" was cancelled by the caller (${String(signal.reason)}); the server was sent notifications/cancelled`,
        { cause: e },
      );
    }
    if (e instanceof McpError && e.code === ErrorCode.RequestTimeout) {
      return this.timeoutError(name, timeoutMs, true);
    }
    if (e instanceof McpError && e.code === RESULT_TOO_LARGE) {
      return new McpEngineError(
        "too_large",
        `${server} answered "${name}" with a message larger than maxResultBytes (${this.opts.maxResultBytes} bytes)`,
        { cause: e },
      );
    }
    if (conn.closed) return this.endedError(conn, `during call "${name}"`, e);
    if (e instanceof McpEngineError) return e;
    if (e instanceof McpError) {
      const code: McpErrorCode =
        e.code === ErrorCode.InvalidParams
          ? "invalid"
          : e.code === ErrorCode.MethodNotFound
            ? "not_found"
            : "internal";
      return new McpEngineError(code, `${server} refused call "${name}": ${e.message}`, {
        cause: e,
      });
    }
    const shape = zodIssues(e);
    if (shape !== undefined) {
      return new McpEngineError(
        "internal",
        `${server} returned a malformed result for "${name}": ${shape}`,
        { cause: e },
      );
    }
    if (this.target.transport === "http") {
      this.dropConnection(conn);
      return this.unavailable(e);
    }
    return new McpEngineError("internal", `${server} call "${name}" failed: ${String(e)}`, {
      cause: e,
    });
  }

  /** A stdio write that failed (EPIPE) means the server is exiting: wait to learn how. */
  private async settle(conn: Connection, e: unknown): Promise<void> {
    const t = conn.transport;
    if (!(t instanceof StdioClientTransport) || e instanceof McpError) return;
    if (zodIssues(e) !== undefined) return;
    if (e instanceof McpEngineError && e.code === "not_found") return;
    await t.ended(500);
  }

  private timeoutError(name: string, timeoutMs: number, sent: boolean): McpEngineError {
    return new McpEngineError(
      "timeout",
      `MCP call "${name}" to server "${this.opts.name}" timed out after ${timeoutMs} ms` +
        (sent ? "; the server was sent notifications/cancelled" : ""),
    );
  }

  /** Why a connection ended, said from the point of view of `when` (a call, the start). */
  private endedError(conn: Connection, when: string, cause: unknown): McpEngineError {
    const server = `MCP server "${this.opts.name}"`;
    const at = when === "" ? "" : ` ${when}`;
    const end = conn.transport instanceof StdioClientTransport ? conn.transport.end : undefined;
    if (this.stopped) {
      return new McpEngineError("unavailable", `${server} was stopped${at}`, { cause });
    }
    if (end?.kind === "exited") {
      const how = end.signal ? `was killed by ${end.signal}` : `exited with code ${end.code}`;
      return new McpEngineError("unavailable", `${server} ${how}${at}${this.stderrHint()}`, {
        cause,
      });
    }
    if (end?.kind === "protocol") {
      return new McpEngineError("internal", `${server} broke the protocol${at}: ${end.message}`, {
        cause,
      });
    }
    return new McpEngineError("unavailable", `${server} closed the connection${at}`, { cause });
  }

  private unavailable(e: unknown): McpEngineError {
    const where = this.target.transport === "http" ? ` at ${this.target.url}` : "";
    return new McpEngineError(
      "unavailable",
      `MCP server "${this.opts.name}" is unavailable${where}: ${describeCause(e)}`,
      { cause: e },
    );
  }

  private stderrHint(): string {
    return this.stderrTail.length === 0
      ? ""
      : `; its stderr ended with: ${JSON.stringify(this.stderrTail.join("\n"))}`;
  }

  // ── connection lifecycle ──────────────────────────────────────────────────────────────────

  /** The live connection, or the one being (re)made, waited for up to the call's deadline. */
  private async connection(
    name: string,
    deadline: number,
    signal: AbortSignal | undefined,
  ): Promise<Connection> {
    if (this.stopped) {
      throw new McpEngineError("unavailable", `MCP server "${this.opts.name}" is stopped`);
    }
    if (signal?.aborted) {
      throw new McpEngineError(
        "cancelled",
        `MCP call "${name}" to server "${this.opts.name}" was cancelled by the caller before it was sent`,
      );
    }
    if (this.conn && !this.conn.closed) return this.conn;
    if (!this.connecting) this.beginReconnect();
    const pending = this.connecting!;
    let cleanup = () => {};
    const gaveUp = new Promise<never>((_, reject) => {
      const expire = () =>
        reject(
          new McpEngineError(
            "unavailable",
            `MCP server "${this.opts.name}" is unavailable (${this.lastFailure || "restarting"}); call "${name}" gave up waiting for it`,
          ),
        );
      const abort = () =>
        reject(
          new McpEngineError(
            "cancelled",
            `MCP call "${name}" to server "${this.opts.name}" was cancelled by the caller while the server restarted`,
          ),
        );
      const timer = setTimeout(expire, Math.max(0, deadline - Date.now()));
      signal?.addEventListener("abort", abort, { once: true });
      cleanup = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", abort);
      };
    });
    try {
      return await Promise.race([pending, gaveUp]);
    } catch (e) {
      if (e instanceof McpEngineError) throw e;
      throw this.unavailable(e);
    } finally {
      cleanup();
    }
  }

  /** HTTP reconnects once, now, for the call that asks; stdio runs the backoff loop. */
  private beginReconnect(): void {
    const attempt =
      this.target.transport === "http"
        ? this.connectOnce().then((c) => this.adopt(c))
        : this.restartLoop();
    this.connecting = attempt;
    // Nobody may be waiting when it fails (a stop, no calls): that is not an unhandled error.
    attempt
      .catch(() => undefined)
      .finally(() => {
        if (this.connecting === attempt) this.connecting = undefined;
      });
  }

  private adopt(conn: Connection): Connection {
    if (this.stopped) {
      void this.closeConnection(conn);
      throw new McpEngineError("unavailable", `MCP server "${this.opts.name}" is stopped`);
    }
    this.conn = conn;
    return conn;
  }

  private async restartLoop(): Promise<Connection> {
    for (;;) {
      const delay = backoffDelay(this.restartAttempt, { ...this.opts.restart, jitter: 0 });
      this.restartAttempt++;
      const n = this.restartAttempt;
      this.log("warn", `restarting MCP server "${this.opts.name}" in ${delay} ms (attempt ${n})`);
      await sleep(delay, this.stopping.signal);
      if (this.stopped) {
        throw new McpEngineError("unavailable", `MCP server "${this.opts.name}" is stopped`);
      }
      try {
        const conn = this.adopt(await this.connectOnce());
        this.restartCount++;
        this.log("info", `restarted MCP server "${this.opts.name}" (attempt ${n})`);
        return conn;
      } catch (e) {
        if (this.stopped) throw e;
        this.lastFailure = e instanceof Error ? e.message : String(e);
        this.log("error", `restart attempt ${n} failed: ${this.lastFailure}`);
      }
    }
  }

  private onClosed(conn: Connection): void {
    conn.closed = true;
    if (this.conn !== conn) return;
    this.conn = undefined;
    if (this.stopped) return;
    const ended = this.endedError(conn, "", undefined).message;
    this.lastFailure = ended;
    this.log("error", ended);
    if (this.target.transport === "stdio" && !this.connecting) this.beginReconnect();
  }

  private dropConnection(conn: Connection): void {
    if (this.conn === conn) this.conn = undefined;
    conn.closed = true;
    void this.closeConnection(conn);
  }

  private async closeConnection(conn: Connection): Promise<void> {
    conn.closed = true;
    const t = conn.transport;
    if (t instanceof StreamableHTTPClientTransport && t.sessionId !== undefined) {
      // Ending the session politely frees the server's state; a dead server must not stall us.
      await Promise.race([t.terminateSession().catch(() => undefined), delay(1000)]);
    }
    await conn.client.close().catch(() => undefined);
  }

  private async connectOnce(): Promise<Connection> {
    const startTimeoutMs = this.opts.startTimeoutMs ?? 10_000;
    const deadline = Date.now() + startTimeoutMs;
    // Lines from a previous process would explain nothing about this one.
    this.stderrTail.length = 0;
    const transport = this.makeTransport();
    const client = new Client(CLIENT_INFO, { capabilities: {} });
    const conn: Connection = {
      client,
      transport,
      tools: [],
      closed: false,
      relist: Promise.resolve(),
    };
    client.onclose = () => this.onClosed(conn);
    client.setNotificationHandler(ToolListChangedNotificationSchema, () => this.relist(conn));
    client.onerror = (e) => this.log("warn", `MCP client: ${e.message}`);
    let phase = "initialize";
    try {
      await client.connect(transport, { timeout: startTimeoutMs });
      phase = "tools/list";
      conn.tools = await this.listTools(client, deadline);
    } catch (e) {
      await this.settle(conn, e);
      const err = this.startError(e, conn, phase, startTimeoutMs);
      await this.closeConnection(conn);
      throw err;
    }
    this.lastTools = conn.tools;
    return conn;
  }

  private startError(
    e: unknown,
    conn: Connection,
    phase: string,
    startTimeoutMs: number,
  ): McpEngineError {
    const server = `MCP server "${this.opts.name}"`;
    if (e instanceof McpEngineError) return e;
    // Our own close after a failed initialize also ends the connection; only the server's
    // exit or its protocol breach explains the failure.
    const end = conn.transport instanceof StdioClientTransport ? conn.transport.end : undefined;
    if (end !== undefined && end.kind !== "closed") {
      return this.endedError(conn, `before it answered ${phase}`, e);
    }
    if (e instanceof McpError && e.code === ErrorCode.RequestTimeout) {
      return new McpEngineError(
        "timeout",
        `${server} did not answer ${phase} within ${startTimeoutMs} ms${this.stderrHint()}`,
        { cause: e },
      );
    }
    if (e instanceof McpError && e.code === RESULT_TOO_LARGE) {
      return new McpEngineError(
        "too_large",
        `${server} answered ${phase} with a message larger than maxResultBytes (${this.opts.maxResultBytes} bytes)`,
        { cause: e },
      );
    }
    const shape = zodIssues(e);
    if (shape !== undefined) {
      return new McpEngineError("internal", `${server} answered ${phase} malformed: ${shape}`, {
        cause: e,
      });
    }
    if (e instanceof McpError) {
      return new McpEngineError("internal", `${server} refused ${phase}: ${e.message}`, {
        cause: e,
      });
    }
    return this.unavailable(e);
  }

  private relist(conn: Connection): void {
    conn.relist = conn.relist.then(async () => {
      if (conn.closed || this.conn !== conn) return;
      const timeout = this.opts.startTimeoutMs ?? 10_000;
      try {
        conn.tools = await this.listTools(conn.client, Date.now() + timeout);
      } catch (e) {
        this.log("warn", `listing tools after tools/list_changed failed: ${String(e)}`);
        return;
      }
      this.lastTools = conn.tools;
      const names = conn.tools.map((t) => t.name).join(", ");
      this.log("info", `MCP server "${this.opts.name}" changed its tools: ${names}`);
      this.opts.onToolsChanged?.(this.tools());
    });
  }

  private async listTools(client: Client, deadline: number): Promise<ToolSpec[]> {
    const tools: ToolSpec[] = [];
    let cursor: string | undefined;
    for (let page = 0; page < MAX_TOOL_PAGES; page++) {
      const timeout = Math.max(1, deadline - Date.now());
      const res = await client.listTools(cursor === undefined ? {} : { cursor }, { timeout });
      for (const t of res.tools) {
        if (!TOOL_NAME.test(t.name)) {
          this.log("warn", `ignoring tool ${JSON.stringify(t.name)}: expected ${TOOL_NAME.source}`);
        } else if (tools.some((k) => k.name === t.name)) {
          this.log("warn", `ignoring second tool named "${t.name}"`);
        } else if (tools.length >= MAX_TOOLS) {
          throw new McpEngineError(
            "too_large",
            `MCP server "${this.opts.name}" lists more than ${MAX_TOOLS} tools`,
          );
        } else {
          tools.push({
            name: t.name,
            description: t.description ?? "",
            inputSchema: t.inputSchema as Record<string, unknown>,
          });
        }
      }
      cursor = res.nextCursor;
      if (cursor === undefined) return tools;
    }
    throw new McpEngineError(
      "too_large",
      `MCP server "${this.opts.name}" paged tools/list past ${MAX_TOOL_PAGES} pages`,
    );
  }

  private makeTransport(): StdioClientTransport | StreamableHTTPClientTransport {
    if (this.target.transport === "http") {
      return new StreamableHTTPClientTransport(new URL(this.target.url), {
        fetch: cappedFetch(this.opts.name, this.opts.maxResultBytes),
      });
    }
    const spec = {
      command: this.target.command,
      args: this.target.args ?? [],
      env: this.target.env,
      ...(this.target.cwd === undefined ? {} : { cwd: this.target.cwd }),
    };
    return new StdioClientTransport(spec, {
      name: this.opts.name,
      maxMessageBytes: this.opts.maxResultBytes,
      maxStderrLineBytes: this.opts.maxStderrLineBytes ?? 4096,
      killGraceMs: this.opts.killGraceMs ?? 2000,
      onStderr: (line) => this.onStderr(line),
    });
  }

  private onStderr(line: string): void {
    this.stderrTail.push(line);
    if (this.stderrTail.length > STDERR_TAIL_LINES) this.stderrTail.shift();
    this.opts.onLog?.({ level: "info", source: "server", message: line });
  }

  private log(level: McpLogEntry["level"], message: string): void {
    this.opts.onLog?.({ level, source: "engine", message });
  }
}

function zodIssues(e: unknown): string | undefined {
  // The SDK validates with zod's core build, whose error class is not zod's ZodError export.
  const issues = (e as { issues?: unknown } | null)?.issues;
  if (!(e instanceof Error) || !Array.isArray(issues)) return undefined;
  return (issues as { path: PropertyKey[]; message: string }[])
    .map((i) => (i.path.length > 0 ? `${i.path.map(String).join(".")}: ${i.message}` : i.message))
    .join("; ");
}

function describeCause(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  const cause = e.cause instanceof Error ? e.cause : undefined;
  return cause ? `${e.message}: ${cause.message}` : e.message;
}

const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}
