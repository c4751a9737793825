/**
 * The CLI's end of the socket: connect, prove the token, then run requests whose answers are
 * streamed back by id. Every way of not reaching a working daemon has its own error class and a
 * message that says what to do, because "connect ECONNREFUSED" tells a user nothing.
 */
import net from "node:net";
import { ClientRequest, DAEMON_PROTOCOL_VERSION, type DaemonMessage } from "../protocol.js";
import { type DecodedFrame, encodeFrame, FrameDecoder } from "./frames.js";
import { formatIssues, isTerminal, parseDaemonMessage } from "./messages.js";
import { assertRunDirSafe, type RuntimePaths, readTokenFile, runtimePaths } from "./paths.js";

export type WelcomeMessage = Extract<DaemonMessage, { type: "welcome" }>;

/** No daemon answers on this home's socket; starting one is the fix. */
export class DaemonNotRunningError extends Error {
  constructor(
    readonly paths: RuntimePaths,
    message = `no astrid-daemon is running for ${paths.home} (no socket at ${paths.socket}): start it with \`astrid start\``,
  ) {
    super(message);
    this.name = "DaemonNotRunningError";
  }
}

/** A socket file exists but nothing listens: the daemon that made it died without cleaning up. */
export class StaleSocketError extends DaemonNotRunningError {
  constructor(paths: RuntimePaths) {
    super(
      paths,
      `stale socket at ${paths.socket}: the daemon that made it is gone; \`astrid start\` replaces it`,
    );
    this.name = "StaleSocketError";
  }
}

/** The daemon refused our token. */
export class DaemonAuthError extends Error {
  constructor(paths: RuntimePaths, detail: string) {
    super(`astrid-daemon refused the token in ${paths.tokenFile}: ${detail}`);
    this.name = "DaemonAuthError";
  }
}

export class DaemonProtocolMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DaemonProtocolMismatchError";
  }
}

/** The handshake did not complete: timeout, refusal, or the daemon hung up. */
export class DaemonHandshakeError extends Error {
  constructor(
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = "DaemonHandshakeError";
  }
}

/** The connection ended (or the daemon broke the protocol) while a request was waiting. */
export class DaemonConnectionClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DaemonConnectionClosedError";
  }
}

export interface DaemonClientOptions {
  readonly home: string;
  /** Bound on connecting plus the handshake. Default 5000 ms. */
  readonly timeoutMs?: number;
  /** Names this client in the daemon's logs. Default "astrid". */
  readonly client?: string;
  /** Messages whose id matches no running request (e.g. an error answering a `send`). */
  readonly onUnsolicited?: (message: DaemonMessage) => void;
}

function mismatchMessage(daemon: number, ours: number): string {
  return `daemon speaks protocol ${daemon}, this astrid speaks ${ours}: restart the daemon with \`astrid stop\``;
}

/** The messages of one request, in order, ending with its terminal message. */
class RequestStream {
  private readonly queue: DaemonMessage[] = [];
  private waiter: (() => void) | undefined;
  private failure: Error | undefined;
  private finished = false;

  push(message: DaemonMessage): void {
    this.queue.push(message);
    this.wake();
  }

  fail(error: Error): void {
    this.failure ??= error;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  async *iterate(onEnd: () => void): AsyncGenerator<DaemonMessage> {
    try {
      while (!this.finished) {
        const next = this.queue.shift();
        if (next) {
          if (isTerminal(next)) this.finished = true;
          yield next;
          continue;
        }
        if (this.failure) throw this.failure;
        await new Promise<void>((resolve) => {
          this.waiter = resolve;
        });
      }
    } finally {
      onEnd();
    }
  }
}

export class DaemonClient {
  private readonly streams = new Map<string, RequestStream>();
  private closeError: Error | undefined;
  /** Resolves when the connection has closed, for whatever reason. */
  readonly closed: Promise<void>;

  private constructor(
    private readonly socket: net.Socket,
    private readonly decoder: FrameDecoder,
    readonly welcome: WelcomeMessage,
    readonly paths: RuntimePaths,
    private readonly onUnsolicited: ((message: DaemonMessage) => void) | undefined,
    afterWelcome: DecodedFrame[],
  ) {
    this.closed = new Promise((resolve) => socket.once("close", () => resolve()));
    this.onFrames(afterWelcome);
    socket.on("data", (chunk) => this.onFrames(this.decoder.push(chunk)));
    socket.on("close", () => this.onClose());
    socket.resume();
  }

  /** Connects to the daemon serving `home` and completes the token handshake. */
  static async connect(opts: DaemonClientOptions): Promise<DaemonClient> {
    const paths = runtimePaths(opts.home);
    const timeoutMs = opts.timeoutMs ?? 5000;
    try {
      assertRunDirSafe(paths.runDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new DaemonNotRunningError(paths);
      throw err;
    }
    const socket = await openSocket(paths, timeoutMs);
    const decoder = new FrameDecoder();
    try {
      const { welcome, rest } = await handshake(
        socket,
        decoder,
        paths,
        opts.client ?? "astrid",
        timeoutMs,
      );
      return new DaemonClient(socket, decoder, welcome, paths, opts.onUnsolicited, rest);
    } catch (err) {
      socket.destroy();
      throw err;
    }
  }

  get isOpen(): boolean {
    return !this.socket.destroyed && this.closeError === undefined;
  }

  /**
   * Sends a request and yields every message the daemon sends for its id, ending after the
   * terminal one (`done`, `result` or `error`). Throws DaemonConnectionClosedError if the
   * connection ends first. Leaving the loop early stops listening (the daemon is not told).
   */
  request(request: ClientRequest): AsyncIterable<DaemonMessage> {
    const req = validateRequest(request);
    if (this.streams.has(req.id)) throw new Error(`request id ${req.id} is already in use`);
    const stream = new RequestStream();
    this.streams.set(req.id, stream);
    if (!this.isOpen) stream.fail(this.closedError());
    else this.socket.write(encodeFrame(req));
    return stream.iterate(() => {
      if (this.streams.get(req.id) === stream) this.streams.delete(req.id);
    });
  }

  /** Sends a request that expects no answer (an approval decision). */
  send(request: ClientRequest): void {
    const req = validateRequest(request);
    if (!this.isOpen) throw this.closedError();
    this.socket.write(encodeFrame(req));
  }

  /** Ends the connection; requests still running fail with DaemonConnectionClosedError. */
  async close(): Promise<void> {
    this.closeError ??= new DaemonConnectionClosedError("the connection was closed by this client");
    this.socket.end();
    const cut = setTimeout(() => this.socket.destroy(), 1000);
    await this.closed;
    clearTimeout(cut);
  }

  private closedError(): Error {
    return this.closeError ?? new DaemonConnectionClosedError("the daemon closed the connection");
  }

  private onFrames(frames: DecodedFrame[]): void {
    for (const frame of frames) {
      if (!frame.ok) {
        this.abandon(`the daemon sent a bad frame: ${frame.error.message}`);
        return;
      }
      const parsed = parseDaemonMessage(frame.value);
      if (!parsed.ok) {
        // A daemon that breaks the protocol cannot be trusted with the rest of the stream.
        this.abandon(`the daemon broke the protocol: ${parsed.message}`);
        return;
      }
      this.dispatch(parsed.message);
    }
  }

  private dispatch(message: DaemonMessage): void {
    const id = "id" in message ? message.id : undefined;
    if (id === undefined) {
      // An error without an id concerns the whole connection (the daemon is stopping, ...).
      if (message.type === "error") {
        this.closeError ??= new DaemonConnectionClosedError(message.message);
        for (const stream of this.streams.values()) stream.push(message);
        this.streams.clear();
      } else this.onUnsolicited?.(message);
      return;
    }
    const stream = this.streams.get(id);
    if (!stream) {
      this.onUnsolicited?.(message);
      return;
    }
    if (isTerminal(message)) this.streams.delete(id);
    stream.push(message);
  }

  private abandon(reason: string): void {
    this.closeError ??= new DaemonConnectionClosedError(reason);
    this.socket.destroy();
  }

  private onClose(): void {
    const error = this.closedError();
    for (const stream of this.streams.values()) stream.fail(error);
    this.streams.clear();
  }
}

function validateRequest(request: ClientRequest): ClientRequest {
  const parsed = ClientRequest.safeParse(request);
  if (!parsed.success) throw new Error(`invalid request: ${formatIssues(parsed.error)}`);
  return parsed.data;
}

function openSocket(paths: RuntimePaths, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection(paths.socket);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new DaemonHandshakeError(`no answer from ${paths.socket} within ${timeoutMs} ms`));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      resolve(socket);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (err.code === "ENOENT") reject(new DaemonNotRunningError(paths));
      else if (err.code === "ECONNREFUSED") reject(new StaleSocketError(paths));
      else reject(new Error(`cannot connect to ${paths.socket}: ${err.message}`));
    });
  });
}

function handshake(
  socket: net.Socket,
  decoder: FrameDecoder,
  paths: RuntimePaths,
  client: string,
  timeoutMs: number,
): Promise<{ welcome: WelcomeMessage; rest: DecodedFrame[] }> {
  return new Promise((resolve, reject) => {
    let settled = false;
    let rest: DecodedFrame[] = [];
    const finish = (err: Error | undefined, welcome?: WelcomeMessage) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.off("error", onError);
      // Paused until the client's own listeners are attached, so no byte falls in between.
      socket.pause();
      if (err) reject(err);
      else resolve({ welcome: welcome!, rest });
    };
    const timer = setTimeout(
      () => finish(new DaemonHandshakeError(`no welcome from the daemon within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onClose = () =>
      finish(new DaemonHandshakeError("the daemon closed the connection during the handshake"));
    const onError = () => {
      // "close" follows with the error.
    };
    const onData = (chunk: Buffer) => {
      const [frame, ...after] = decoder.push(chunk);
      if (!frame) return;
      rest = after;
      if (!frame.ok) {
        finish(new DaemonHandshakeError(`the daemon sent a bad frame: ${frame.error.message}`));
        return;
      }
      const parsed = parseDaemonMessage(frame.value);
      if (!parsed.ok) {
        finish(new DaemonHandshakeError(`the daemon broke the protocol: ${parsed.message}`));
        return;
      }
      const m = parsed.message;
      if (m.type === "welcome") {
        if (m.protocol !== DAEMON_PROTOCOL_VERSION) {
          finish(
            new DaemonProtocolMismatchError(mismatchMessage(m.protocol, DAEMON_PROTOCOL_VERSION)),
          );
        } else finish(undefined, m);
      } else if (m.type === "error" && m.code === "protocol_mismatch") {
        finish(new DaemonProtocolMismatchError(m.message));
      } else if (m.type === "error" && m.code === "unauthorized") {
        finish(new DaemonAuthError(paths, m.message));
      } else if (m.type === "error") {
        finish(
          new DaemonHandshakeError(`astrid-daemon refused the connection: ${m.message}`, m.code),
        );
      } else {
        finish(new DaemonHandshakeError(`expected a welcome from the daemon, got ${m.type}`));
      }
    };
    socket.on("data", onData);
    socket.on("close", onClose);
    socket.on("error", onError);
    let token: string;
    try {
      token = readTokenFile(paths);
    } catch (err) {
      finish(
        new DaemonHandshakeError(
          `cannot read the daemon token ${paths.tokenFile}: ${(err as Error).message}`,
        ),
      );
      return;
    }
    socket.write(encodeFrame({ type: "hello", protocol: DAEMON_PROTOCOL_VERSION, token, client }));
  });
}
