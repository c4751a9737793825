/**
 * A capsule's only door to the bus (layer 3). Every publish and every subscription the capsule
 * (or the sidecar on its behalf) makes is checked against the manifest's IPC ACL and recorded
 * before it reaches the bus; replies are allowed only to the reply subject of a message this
 * capsule was handed. In a cluster the NATS server checks the same ACL again with the
 * capsule's own user (defence in depth).
 */
import type { Bus, BusMessage, Subscription } from "../../core/bus/bus.js";
import type { IpcAcl } from "../../core/security/acl/ipc-acl.js";
import type { DecisionLog, Who } from "./decision-log.js";

export class IpcDeniedError extends Error {
  override readonly name = "IpcDeniedError";
}

export class CapsuleBus {
  constructor(
    private readonly bus: Bus,
    private readonly acl: IpcAcl,
    private readonly log: DecisionLog,
  ) {}

  get maxPayload(): number {
    return this.bus.maxPayload;
  }

  async publish(who: Who, subject: string, data: Uint8Array, headers?: Record<string, string>) {
    const d = await this.log.record(who, this.acl.checkPublish(subject), "ipc.publish", subject);
    if (!d.allowed) throw new IpcDeniedError(d.reason);
    this.bus.publish(subject, data, headers ? { headers } : undefined);
  }

  async request(
    who: Who,
    subject: string,
    data: Uint8Array,
    timeoutMs: number,
    headers?: Record<string, string>,
  ): Promise<BusMessage> {
    const d = await this.log.record(who, this.acl.checkPublish(subject), "ipc.request", subject);
    if (!d.allowed) throw new IpcDeniedError(d.reason);
    return this.bus.request(subject, data, { timeoutMs, ...(headers ? { headers } : {}) });
  }

  async subscribe(
    who: Who,
    pattern: string,
    handler: (msg: BusMessage) => void | Promise<void>,
    queue?: string,
  ): Promise<Subscription> {
    const d = await this.log.record(
      who,
      this.acl.checkSubscribe(pattern),
      "ipc.subscribe",
      pattern,
    );
    if (!d.allowed) throw new IpcDeniedError(d.reason);
    return this.bus.subscribe(pattern, handler, queue ? { queue } : undefined);
  }

  /** Answer a message this capsule received; only its own reply subject is allowed. */
  respond(msg: BusMessage, data: Uint8Array): void {
    if (!msg.reply) throw new IpcDeniedError(`message on "${msg.subject}" has no reply subject`);
    const d = this.acl.checkPublish(msg.reply, { inReplyTo: msg.reply });
    if (!d.allowed) throw new IpcDeniedError(d.reason);
    msg.respond(data);
  }
}
