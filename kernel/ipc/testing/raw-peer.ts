/**
 * A hand-driven client for tests: speaks raw frames (or raw bytes) to the daemon socket, so
 * tests can say what a well-behaved DaemonClient never would.
 */
import net from "node:net";
import { DAEMON_PROTOCOL_VERSION } from "../../protocol.js";
import { encodeFrame, FrameDecoder } from "../frames.js";
import { type RuntimePaths, readTokenFile } from "../paths.js";

export class RawPeer {
  private readonly decoder = new FrameDecoder();
  private readonly frames: unknown[] = [];
  private waiter: (() => void) | undefined;
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on("data", (chunk) => {
      for (const f of this.decoder.push(chunk)) {
        this.frames.push(f.ok ? f.value : { decodeError: f.error.message });
      }
      this.wake();
    });
    socket.on("error", () => {});
    this.closed = new Promise((resolve) =>
      socket.once("close", () => {
        this.ended = true;
        this.wake();
        resolve();
      }),
    );
  }

  static connect(paths: RuntimePaths): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(paths.socket);
      socket.once("connect", () => resolve(new RawPeer(socket)));
      socket.once("error", reject);
    });
  }

  /** Connects and completes a correct handshake, returning the welcome. */
  static async ready(paths: RuntimePaths): Promise<{ peer: RawPeer; welcome: unknown }> {
    const peer = await RawPeer.connect(paths);
    peer.send({
      type: "hello",
      protocol: DAEMON_PROTOCOL_VERSION,
      token: readTokenFile(paths),
      client: "raw-peer",
    });
    const welcome = await peer.next();
    return { peer, welcome };
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  send(message: unknown): void {
    this.socket.write(encodeFrame(message));
  }

  sendRaw(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  /** The next frame, or "closed" if the daemon closed the connection first. */
  async next(): Promise<unknown> {
    for (;;) {
      const f = this.frames.shift();
      if (f !== undefined) return f;
      if (this.ended) return "closed";
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}
