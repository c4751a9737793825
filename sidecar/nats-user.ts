/**
 * The NATS user a capsule's sidecar connects as: the capsule's IPC ACL (so the server enforces
 * it a second time) plus the few subjects the sidecar itself needs — approval requests for its
 * sessions, its own lifecycle, audit notices and health probe, and its private inbox.
 */

import { STREAM_INBOX_PATTERN, subjects } from "../core/protocol/topics.js";
import type { IpcAcl } from "../core/security/acl/ipc-acl.js";
import { type NatsPermissions, natsPermissions } from "../core/security/acl/nats-permissions.js";

export interface SidecarNatsOptions {
  /**
   * A task-mode sidecar (a session pod) sends its session's task to its own capsule: it may
   * publish that one session's prompt subject, no other session's.
   */
  readonly taskSession?: string;
}

export function sidecarNatsPermissions(
  acl: IpcAcl,
  capsule: string,
  opts: SidecarNatsOptions = {},
): NatsPermissions {
  const base = natsPermissions(acl);
  const publish = new Set([
    ...(base.publish.allow ?? []),
    "approval.v1.request.*",
    `audit.v1.entry.${capsule}`,
    `capsule.v1.lifecycle.${capsule}`,
    // llm.delta messages to the stream inbox a request named; the host checks the exact subject.
    STREAM_INBOX_PATTERN,
    ...(opts.taskSession !== undefined ? [subjects.sessionPrompt(opts.taskSession)] : []),
  ]);
  const subscribe = new Set([
    ...(base.subscribe.allow ?? []),
    `capsule.v1.health.${capsule}`,
    `${acl.inboxPrefix}.>`,
  ]);
  return {
    publish: { allow: [...publish] },
    subscribe: { allow: [...subscribe] },
    // Health probes and the capsule's own requests are answered through reply subjects.
    allow_responses: base.allow_responses ?? { max: 1, expires: "1m" },
  };
}
