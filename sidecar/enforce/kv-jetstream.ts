/**
 * The guest's kv store in a JetStream KV bucket, for the cluster: the replicas of a capsule
 * (and a restarted pod) see the same entries, where the memory store would give each pod its
 * own cache that dies with it.
 *
 * Keys. The host already scopes each guest bucket to its capsule (`<capsule>.<bucket>`); the
 * store writes `<scope>.<key>` with both parts escaped so that each is exactly one NATS token
 * (bytes outside `[A-Za-z0-9_/-]` become `=XX`). Without the escaping a guest key holding `.`,
 * `*` or `>` would be a subject of several tokens or a wildcard, and could reach or list the
 * keys of another scope in the same bucket.
 *
 * Expiry. Like the memory store, entries do not expire in the store: a guest that wants a TTL
 * (the cache capsule) stores the time with the value and judges age on read.
 *
 * Fail closed. Any error of the bucket reaches the guest as a host error (`unavailable`);
 * nothing is ever turned into "not found", which a cache would answer by calling the model and
 * writing again (spending twice while the store is down).
 */
import { jetstream } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { HostError } from "../abi/host.js";
import type { KvStore } from "./kv.js";

/** Default bucket of a capsule's kv entries. */
export const defaultKvBucket = (capsule: string): string => `astrid-kv-${capsule}`;

const SAFE_BYTE = /^[A-Za-z0-9_/-]$/;
const HEX = "0123456789ABCDEF";

/** One NATS token for any string; prefix-preserving (byte-wise). */
export function escapeKvToken(s: string): string {
  let out = "";
  for (const b of Buffer.from(s, "utf8")) {
    const c = String.fromCharCode(b);
    out += b < 0x80 && SAFE_BYTE.test(c) ? c : `=${HEX[b >> 4]}${HEX[b & 15]}`;
  }
  return out;
}

export function unescapeKvToken(token: string): string {
  const bytes: number[] = [];
  for (let i = 0; i < token.length; i++) {
    if (token[i] === "=") {
      bytes.push(Number.parseInt(token.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(token.charCodeAt(i));
  }
  return Buffer.from(bytes).toString("utf8");
}

/**
 * Room kept beside a value for the subject and headers of the publish: the server refuses the
 * whole message, so a value that does not fit is refused here with a clear reason instead.
 */
const PUBLISH_OVERHEAD_BYTES = 8 * 1024;

export interface JetStreamKvOptions {
  readonly bucket: string;
  /** JetStream API timeout, ms; default 5000. */
  readonly timeoutMs?: number;
}

export class JetStreamKvStore implements KvStore {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    readonly bucket: string,
  ) {}

  /** Opens the bucket, creating it (history 1) when absent. */
  static async open(nc: NatsConnection, opts: JetStreamKvOptions): Promise<JetStreamKvStore> {
    const kvm = new Kvm(jetstream(nc, { timeout: opts.timeoutMs ?? 5000 }));
    const kv = await kvm.create(opts.bucket, { history: 1 });
    return new JetStreamKvStore(nc, kv, opts.bucket);
  }

  private key(scope: string, key: string): string {
    return `${escapeKvToken(scope)}.${escapeKvToken(key)}`;
  }

  private async attempt<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      if (err instanceof HostError) throw err;
      throw new HostError(
        "unavailable",
        `kv ${what}: JetStream bucket ${this.bucket} failed: ${(err as Error).message}`,
      );
    }
  }

  async get(scope: string, key: string): Promise<Uint8Array | null> {
    return this.attempt("get", async () => {
      const e = await this.kv.get(this.key(scope, key));
      // A delete leaves a marker entry behind: it reads as absent, like the memory store.
      if (e?.operation !== "PUT") return null;
      return e.value.slice();
    });
  }

  async set(scope: string, key: string, value: Uint8Array): Promise<void> {
    const max = this.nc.info?.max_payload;
    if (max !== undefined && value.byteLength + PUBLISH_OVERHEAD_BYTES > max) {
      throw new HostError(
        "too_large",
        `kv set: a value of ${value.byteLength} bytes does not fit the NATS server's max_payload of ${max} bytes`,
      );
    }
    await this.attempt("set", async () => {
      await this.kv.put(this.key(scope, key), value);
    });
  }

  async delete(scope: string, key: string): Promise<void> {
    await this.attempt("delete", async () => {
      await this.kv.delete(this.key(scope, key));
    });
  }

  async list(scope: string, prefix: string): Promise<string[]> {
    return this.attempt("list", async () => {
      const keys: string[] = [];
      const head = `${escapeKvToken(scope)}.`;
      for await (const k of await this.kv.keys(`${head}*`)) {
        const key = unescapeKvToken(k.slice(head.length));
        if (key.startsWith(prefix)) keys.push(key);
      }
      return keys.sort();
    });
  }
}
