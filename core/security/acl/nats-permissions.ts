/**
 * The IPC ACL rendered as a NATS user's permissions, so the server enforces the same subjects
 * a second time (defence in depth): a capsule that bypasses its sidecar still cannot publish or
 * subscribe outside its manifest.
 */
import type { IpcAcl } from "./ipc-acl.js";

export interface NatsSubjectPermission {
  allow?: string[];
  deny?: string[];
}

export interface NatsPermissions {
  publish: NatsSubjectPermission;
  subscribe: NatsSubjectPermission;
  /** Lets the user publish to the reply subject of a message it received, `max` times within `expires`. */
  allow_responses?: { max: number; expires: string };
}

export interface NatsPermissionOptions {
  /** The inbox prefix the capsule connects with; defaults to the ACL's own. */
  inboxPrefix?: string;
  /** How long a received request may be answered, as a Go duration (default "1m"). */
  responseExpires?: string;
  /** How many replies one request may get (default 1; streams need more). */
  maxResponses?: number;
}

const GO_DURATION = /^\d+(ms|s|m|h)$/;

export function natsPermissions(acl: IpcAcl, opts: NatsPermissionOptions = {}): NatsPermissions {
  const inboxPrefix = opts.inboxPrefix ?? acl.inboxPrefix;
  const expires = opts.responseExpires ?? "1m";
  if (!GO_DURATION.test(expires)) {
    throw new Error(`responseExpires "${expires}" must be a duration like "30s", "1m" or "500ms"`);
  }
  const publish = [...acl.publishPatterns];
  const subscribe = [...acl.subscribePatterns];
  if (acl.hasInbox) subscribe.push(`${inboxPrefix}.>`);
  const perms: NatsPermissions = {
    // An empty allow list means "no restriction" to nats-server, the opposite of our
    // fail-closed manifest semantics, so nothing-allowed is written as deny ">".
    publish: publish.length > 0 ? { allow: publish } : { deny: [">"] },
    subscribe: subscribe.length > 0 ? { allow: subscribe } : { deny: [">"] },
  };
  if (acl.mayReply) perms.allow_responses = { max: opts.maxResponses ?? 1, expires };
  return perms;
}

/**
 * One entry of an `authorization { users = [...] }` block. nats-server config accepts JSON
 * syntax, so values are rendered with JSON.stringify and cannot break out of the entry.
 */
export function natsUserConfig(user: string, password: string, perms: NatsPermissions): string {
  if (user.length === 0 || password.length === 0) {
    throw new Error("NATS user and password must not be empty");
  }
  return JSON.stringify({ user, password, permissions: perms });
}

/** A whole `authorization` block for the given user entries (from natsUserConfig). */
export function natsAuthorizationConfig(userEntries: readonly string[]): string {
  return `authorization {\n  users = [\n    ${userEntries.join(",\n    ")}\n  ]\n}\n`;
}
