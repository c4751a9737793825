/**
 * The operator's one NATS connection, opened on first use and shared by the approval bridge
 * and the token revoker. It never gives up reconnecting once connected; a first connect that
 * fails rejects, and the next caller tries again — so an operator started while NATS is down
 * still starts, and its NATS-dependent work fails closed (approvals go unanswered and are
 * denied by the sidecar's timer, finalizers stay) until the bus is back.
 */
import { readFileSync } from "node:fs";
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";

export interface NatsLinkOptions {
  servers: string;
  /** NATS `.creds` file (JWT + nkey seed) of the operator's NATS user. */
  credsFile?: string;
  /** Shown in the server's connection list. Default `astrid-operator`. */
  name?: string;
  /** Timeout of one connection attempt, ms. Default 5000. */
  connectTimeoutMs?: number;
}

export class NatsLink {
  private conn: Promise<NatsConnection> | undefined;
  private closed = false;

  constructor(private readonly opts: NatsLinkOptions) {}

  /** The connection, connecting first if needed. Rejects when NATS cannot be reached now. */
  get(): Promise<NatsConnection> {
    if (this.closed) return Promise.reject(new Error("the operator's NATS link is closed"));
    if (!this.conn) {
      const attempt = this.open();
      this.conn = attempt;
      attempt.then(
        (nc) =>
          // A connection the client gave up on is replaced on the next call.
          void nc.closed().then(() => {
            if (this.conn === attempt) this.conn = undefined;
          }),
        () => {
          if (this.conn === attempt) this.conn = undefined;
        },
      );
    }
    return this.conn;
  }

  private async open(): Promise<NatsConnection> {
    let creds: Buffer | undefined;
    try {
      creds = this.opts.credsFile ? readFileSync(this.opts.credsFile) : undefined;
    } catch (err) {
      throw new Error(
        `cannot read the NATS credentials file ${this.opts.credsFile}: ${(err as Error).message}`,
      );
    }
    try {
      return await connect({
        servers: this.opts.servers,
        name: this.opts.name ?? "astrid-operator",
        timeout: this.opts.connectTimeoutMs ?? 5000,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 1000,
        ...(creds ? { authenticator: credsAuthenticator(new Uint8Array(creds)) } : {}),
      });
    } catch (err) {
      throw new Error(`cannot connect to NATS at ${this.opts.servers}: ${(err as Error).message}`);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const conn = this.conn;
    this.conn = undefined;
    const nc = await conn?.catch(() => undefined);
    await nc?.drain().catch(() => nc.close());
  }
}
