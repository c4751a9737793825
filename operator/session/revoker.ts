/**
 * Revokes a session token by writing its id to the JetStream KV bucket every sidecar mirrors
 * (core/security/tokens/revocation/kv-revocation-set.ts reads `{"exp": <seconds>}`). It fails
 * loudly rather than quietly: the caller keeps the AgentSession's finalizer until a revocation
 * has been stored, so a token is never left valid because NATS was down at deletion time.
 */
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { REVOCATION_BUCKET } from "../identity/issuer.js";
import type { NatsLink } from "./nats-link.js";

export interface TokenRevoker {
  /** Resolves once the revocation is stored; rejects with the reason otherwise. */
  revoke(jti: string, expSeconds: number): Promise<void>;
}

export class KvTokenRevoker implements TokenRevoker {
  private bucket: { nc: NatsConnection; kv: KV } | undefined;

  constructor(
    private readonly link: NatsLink,
    private readonly opts: { bucket?: string; timeoutMs?: number } = {},
  ) {}

  async revoke(jti: string, expSeconds: number): Promise<void> {
    const name = this.opts.bucket ?? REVOCATION_BUCKET;
    const timeoutMs = this.opts.timeoutMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer from NATS within ${timeoutMs} ms`)),
        timeoutMs,
      );
    });
    try {
      const put = this.put(name, jti, expSeconds);
      // Lost the race to the timeout: its later failure has nobody to tell.
      put.catch(() => undefined);
      await Promise.race([put, timeout]);
    } catch (err) {
      throw new Error(`cannot revoke token ${jti} in KV bucket ${name}: ${(err as Error).message}`);
    } finally {
      clearTimeout(timer);
    }
  }

  private async put(name: string, jti: string, exp: number): Promise<void> {
    const nc = await this.link.get();
    if (this.bucket?.nc !== nc) {
      // Same settings as KvRevocationSet.open, so whichever side creates the bucket first, the
      // other opens it instead of failing on a different configuration.
      this.bucket = { nc, kv: await new Kvm(nc).create(name, { history: 1 }) };
    }
    await this.bucket.kv.put(jti, JSON.stringify({ exp }));
  }
}
