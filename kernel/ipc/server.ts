/**
 * The daemon's end of the socket. One daemon per home (the lock), one token per daemon start,
 * and every connection on its own: a client that never says hello, never reads, sends garbage
 * or vanishes mid-request costs the daemon that one connection and nothing else — the failure
 * upstream users saw as a daemon wedged by connection churn (#1120).
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { chmodSync, readFileSync, renameSync, statSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import {
  type ClientRequest,
  DAEMON_PROTOCOL_VERSION,
  type DaemonMessage,
  Hello,
} from "../protocol.js";
import { encodeFrame, FrameDecoder, MAX_FRAME_BYTES } from "./frames.js";
import { acquireDaemonLock, type DaemonLock, unlinkIfExists } from "./lock.js";
import {
  type DaemonErrorCode,
  FIRE_AND_FORGET_TYPES,
  formatIssues,
  isTerminal,
  parseClientRequest,
  parseDaemonMessage,
} from "./messages.js";
import { ensureRunDir, type RuntimePaths, runtimePaths, writeTokenFile } from "./paths.js";

/** The part of a pino logger the server uses. */
export interface DaemonLogger {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
}

const silentLogger: DaemonLogger = { info() {}, warn() {} };

export type RequestHandler = (
  request: ClientRequest,
  conn: DaemonConnection,
  /** Aborted when the client disconnects or the daemon stops: stop the work then. */
  signal: AbortSignal,
) => void | Promise<void>;

export interface DaemonServerOptions {
  readonly home: string;
  /** The daemon's software version, reported in the welcome. */
  readonly version: string;
  readonly onRequest: RequestHandler;
  readonly logger?: DaemonLogger;
  /** How long a new connection may take to say hello. Default 2000 ms. */
  readonly helloTimeoutMs?: number;
  /** Unsent bytes a connection may pile up before it is closed as not reading. Default 8 MiB. */
  readonly maxWriteBufferBytes?: number;
  /** Connections beyond this are refused with `busy`. Default 1024. */
  readonly maxConnections?: number;
  /** The protocol this daemon speaks; only tests of version skew change it. */
  readonly protocol?: number;
  /** How often to check that the socket file is still ours. Default 5000 ms; 0 turns it off. */
  readonly orphanCheckMs?: number;
  /** Called when the socket file was removed or replaced. Default: close the server. */
  readonly onOrphaned?: () => void;
}

/** Before the handshake a peer is unauthenticated: it gets a small frame budget. */
const MAX_HELLO_FRAME_BYTES = 64 * 1024;
/** How long a closing connection may take to flush its last frame before it is cut. */
const CLOSE_GRACE_MS = 1000;

interface InFlight {
  readonly controller: AbortController;
  answered: boolean;
}

export class DaemonConnection {
  private readonly decoder = new FrameDecoder({ maxFrameBytes: MAX_HELLO_FRAME_BYTES });
  private readonly controller = new AbortController();
  private readonly inFlight = new Map<string, InFlight>();
  private state: "hello" | "ready" | "closed" = "hello";
  private helloTimer: NodeJS.Timeout | undefined;
  /** Why the daemon closed this connection, if it did. */
  closeReason: string | undefined;

  constructor(
    readonly id: number,
    private readonly socket: net.Socket,
    private readonly server: DaemonServer,
    private readonly settings: Required<
      Pick<DaemonServerOptions, "helloTimeoutMs" | "maxWriteBufferBytes" | "protocol" | "version">
    > & { token: string; logger: DaemonLogger; onRequest: RequestHandler },
  ) {
    socket.on("data", (chunk) => this.onData(chunk));
    socket.on("error", () => {
      // ECONNRESET/EPIPE from a vanished client; "close" follows and does the cleanup.
    });
    socket.on("close", () => this.onClose());
    this.helloTimer = setTimeout(() => {
      this.fail("handshake_timeout", `no hello within ${settings.helloTimeoutMs} ms`);
    }, settings.helloTimeoutMs);
  }

  /** Aborted when the connection ends, for work not tied to one request. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get isOpen(): boolean {
    return this.state !== "closed" && !this.socket.destroyed;
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /**
   * Sends one message (validated against the protocol; an invalid one throws — it is a daemon
   * bug). Returns false if the connection is gone. A client that lets unsent bytes pile up past
   * the bound is disconnected here, so one stalled reader cannot hold the daemon's memory.
   */
  send(message: DaemonMessage): boolean {
    const parsed = parseDaemonMessage(message);
    if (!parsed.ok) throw new Error(parsed.message);
    if (!this.isOpen) return false;
    this.socket.write(encodeFrame(parsed.message));
    const id = "id" in parsed.message ? parsed.message.id : undefined;
    if (id !== undefined && isTerminal(parsed.message)) {
      const entry = this.inFlight.get(id);
      if (entry) entry.answered = true;
    }
    if (this.socket.writableLength > this.settings.maxWriteBufferBytes) {
      this.closeReason = `client is not reading: more than ${this.settings.maxWriteBufferBytes} bytes unsent`;
      this.settings.logger.warn({ conn: this.id }, this.closeReason);
      this.destroy();
      return false;
    }
    return true;
  }

  /** Resolves when the unsent buffer has drained (or the connection is gone). */
  drained(): Promise<void> {
    if (!this.isOpen || this.socket.writableLength === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off("drain", done);
        this.socket.off("close", done);
        resolve();
      };
      this.socket.on("drain", done);
      this.socket.on("close", done);
    });
  }

  /** Sends a last error frame (no request id) and closes. */
  fail(code: DaemonErrorCode, message: string): void {
    if (!this.isOpen) return;
    this.closeReason = message;
    this.socket.write(encodeFrame({ type: "error", code, message }));
    this.end();
  }

  /** Flushes what is queued, then closes; cut after a grace period if the peer does not read. */
  end(): void {
    if (this.state === "closed") return;
    this.stopWork();
    this.socket.end(() => this.socket.destroy());
    setTimeout(() => this.socket.destroy(), CLOSE_GRACE_MS).unref();
  }

  destroy(): void {
    this.stopWork();
    this.socket.destroy();
  }

  /** Once the daemon gives up on a connection, its running requests stop at once. */
  private stopWork(): void {
    this.state = "closed";
    clearTimeout(this.helloTimer);
    const reason = new Error(this.closeReason ?? "client disconnected");
    for (const entry of this.inFlight.values()) entry.controller.abort(reason);
    this.inFlight.clear();
    this.controller.abort(reason);
  }

  private onData(chunk: Buffer): void {
    for (const frame of this.decoder.push(chunk)) {
      if (this.state === "closed") return;
      if (!frame.ok) {
        if (frame.error.fatal || this.state === "hello") {
          this.fail(frame.error.code, frame.error.message);
          return;
        }
        this.sendError(undefined, frame.error.code, frame.error.message);
        continue;
      }
      if (this.state === "hello") this.onHello(frame.value);
      else this.onRequestFrame(frame.value);
    }
  }

  private onHello(value: unknown): void {
    clearTimeout(this.helloTimer);
    const ours = this.settings.protocol;
    const obj =
      typeof value === "object" && value !== null ? (value as Record<string, unknown>) : {};
    if (obj.type !== "hello") {
      this.fail("bad_hello", "the first frame must be a hello");
      return;
    }
    // The version is checked before the shape: a future Hello may look different, and the
    // user should then hear "restart the daemon", not a schema error.
    if (typeof obj.protocol === "number" && obj.protocol !== ours) {
      this.fail(
        "protocol_mismatch",
        `daemon speaks protocol ${ours}, this astrid speaks ${obj.protocol}: restart the daemon with \`astrid stop\``,
      );
      return;
    }
    const hello = Hello.safeParse(value);
    if (!hello.success) {
      this.fail("bad_hello", `invalid hello: ${formatIssues(hello.error)}`);
      return;
    }
    if (!tokensEqual(hello.data.token, this.settings.token)) {
      this.settings.logger.warn({ conn: this.id }, "hello with a wrong token refused");
      this.fail(
        "unauthorized",
        "wrong token: the daemon was restarted or the client read another home's token",
      );
      return;
    }
    this.state = "ready";
    this.decoder.maxFrameBytes = MAX_FRAME_BYTES;
    this.send({
      type: "welcome",
      protocol: ours,
      daemonPid: process.pid,
      version: this.settings.version,
    });
  }

  private onRequestFrame(value: unknown): void {
    const parsed = parseClientRequest(value);
    if (!parsed.ok) {
      this.sendError(parsed.id, "invalid_request", parsed.message);
      return;
    }
    const request = parsed.request;
    if (this.inFlight.has(request.id)) {
      this.sendError(request.id, "duplicate_id", `request ${request.id} is already running`);
      return;
    }
    const entry: InFlight = { controller: new AbortController(), answered: false };
    this.inFlight.set(request.id, entry);
    const settle = (failed: boolean, error?: unknown) => {
      if (this.inFlight.get(request.id) === entry) this.inFlight.delete(request.id);
      if (!this.isOpen || entry.controller.signal.aborted) return;
      // Every request that expects an answer gets exactly one terminal message, so a client
      // never waits forever on a handler that failed or forgot to answer.
      if (failed) {
        const message = error instanceof Error ? error.message : String(error);
        if (!entry.answered) this.sendError(request.id, "internal", message);
        else this.settings.logger.warn({ conn: this.id, id: request.id }, message);
      } else if (!entry.answered && !FIRE_AND_FORGET_TYPES.has(request.type)) {
        this.sendError(
          request.id,
          "internal",
          `the daemon finished request ${request.id} without an answer`,
        );
      }
    };
    try {
      Promise.resolve(this.settings.onRequest(request, this, entry.controller.signal)).then(
        () => settle(false),
        (err: unknown) => settle(true, err),
      );
    } catch (err) {
      settle(true, err);
    }
  }

  private sendError(id: string | undefined, code: DaemonErrorCode, message: string): void {
    this.send(
      id === undefined ? { type: "error", code, message } : { type: "error", id, code, message },
    );
  }

  private onClose(): void {
    this.stopWork();
    this.server.forget(this);
  }
}

function tokensEqual(given: string, expected: string): boolean {
  // Hashing first gives equal lengths, so timingSafeEqual leaks neither content nor length.
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

export class DaemonServer {
  private readonly connections = new Set<DaemonConnection>();
  private nextId = 1;
  private closing: Promise<void> | undefined;
  private orphanTimer: NodeJS.Timeout | undefined;
  private socketIno = 0;

  private constructor(
    readonly paths: RuntimePaths,
    private readonly net: net.Server,
    private readonly lock: DaemonLock,
    private readonly token: string,
    private readonly opts: DaemonServerOptions,
    private readonly logger: DaemonLogger,
  ) {}

  /**
   * Takes the home's lock (clearing a stale one), writes a fresh token, and listens on the
   * socket with mode 0600. Throws DaemonAlreadyRunningError if a live daemon holds the lock.
   */
  static async listen(opts: DaemonServerOptions): Promise<DaemonServer> {
    const logger = opts.logger ?? silentLogger;
    const paths = runtimePaths(opts.home);
    ensureRunDir(paths);
    const lock = acquireDaemonLock(paths, {
      onStale: (why, record) =>
        logger.warn({ pid: record?.pid, lockFile: paths.lockFile }, `removed stale lock: ${why}`),
    });
    let token = "";
    try {
      // We hold the lock, so a socket file left here belongs to a daemon that is gone.
      if (existsAsFile(paths.socket)) {
        unlinkIfExists(paths.socket);
        logger.warn({ socket: paths.socket }, "removed stale socket");
      }
      token = writeTokenFile(paths);
      // Bound under a private name and renamed into place: clients see the socket only once it
      // accepts, and libuv's unlink-by-name at close hits the private name, never a successor
      // daemon's socket at the public path.
      const bindPath = path.join(paths.runDir, `s.${randomBytes(3).toString("hex")}`);
      const server = net.createServer();
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(bindPath, () => {
          server.off("error", reject);
          resolve();
        });
      });
      try {
        // The run dir (0700) already keeps others out; 0600 on the socket is the second wall.
        chmodSync(bindPath, 0o600);
        renameSync(bindPath, paths.socket);
      } catch (err) {
        server.close();
        throw err;
      }
      const daemon = new DaemonServer(paths, server, lock, token, opts, logger);
      daemon.start();
      return daemon;
    } catch (err) {
      if (token) removeTokenIfOurs(paths, token);
      lock.release();
      throw err;
    }
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  get inFlightCount(): number {
    let n = 0;
    for (const c of this.connections) n += c.inFlightCount;
    return n;
  }

  /** Stops accepting, ends every connection, removes socket, token and lock. */
  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  /** @internal called by a connection when its socket has closed. */
  forget(conn: DaemonConnection): void {
    this.connections.delete(conn);
  }

  private start(): void {
    this.socketIno = statSync(this.paths.socket).ino;
    this.net.on("connection", (socket) => this.accept(socket));
    this.net.on("error", (err) => this.logger.warn({ err: err.message }, "socket server error"));
    const every = this.opts.orphanCheckMs ?? 5000;
    if (every > 0) {
      this.orphanTimer = setInterval(() => this.checkOrphaned(), every);
      this.orphanTimer.unref();
    }
    this.logger.info({ socket: this.paths.socket, pid: process.pid }, "astrid-daemon listening");
  }

  private accept(socket: net.Socket): void {
    const id = this.nextId++;
    const conn = new DaemonConnection(id, socket, this, {
      helloTimeoutMs: this.opts.helloTimeoutMs ?? 2000,
      maxWriteBufferBytes: this.opts.maxWriteBufferBytes ?? 8 * 1024 * 1024,
      protocol: this.opts.protocol ?? DAEMON_PROTOCOL_VERSION,
      version: this.opts.version,
      token: this.token,
      logger: this.logger,
      onRequest: this.opts.onRequest,
    });
    if (this.closing) {
      conn.fail("daemon_stopping", "astrid-daemon is stopping");
      return;
    }
    this.connections.add(conn);
    if (this.connections.size > (this.opts.maxConnections ?? 1024)) {
      conn.fail(
        "busy",
        `astrid-daemon is serving ${this.connections.size - 1} connections already`,
      );
    }
  }

  /**
   * A daemon whose socket file was deleted or replaced can never be reached again, and one whose
   * lock was taken over is no longer the home's daemon; staying up would leave exactly the
   * orphan upstream users had to find and kill by hand (#769).
   */
  private checkOrphaned(): void {
    let ino = 0;
    try {
      ino = statSync(this.paths.socket).ino;
    } catch {
      // missing: orphaned
    }
    let why: string | undefined;
    if (ino !== this.socketIno) why = "socket file removed or replaced; stopping";
    else if (!this.lock.isHeld()) why = "lock file removed or taken over; stopping";
    if (!why) return;
    this.logger.warn({ socket: this.paths.socket, lockFile: this.paths.lockFile }, why);
    if (this.opts.onOrphaned) this.opts.onOrphaned();
    else void this.close();
  }

  private async shutdown(): Promise<void> {
    clearInterval(this.orphanTimer);
    const stopped = new Promise<void>((resolve) => this.net.close(() => resolve()));
    for (const conn of this.connections) conn.fail("daemon_stopping", "astrid-daemon is stopping");
    await stopped;
    try {
      if (statSync(this.paths.socket).ino === this.socketIno) unlinkIfExists(this.paths.socket);
    } catch {
      // already gone
    }
    removeTokenIfOurs(this.paths, this.token);
    this.lock.release();
    this.logger.info({ socket: this.paths.socket }, "astrid-daemon stopped");
  }
}

function existsAsFile(file: string): boolean {
  try {
    statSync(file);
    return true;
  } catch {
    return false;
  }
}

function removeTokenIfOurs(paths: RuntimePaths, token: string): void {
  try {
    if (readFileSync(paths.tokenFile, "utf8").trim() === token) unlinkIfExists(paths.tokenFile);
  } catch {
    // already gone
  }
}
