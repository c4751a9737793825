/**
 * Everything a capsule's sidecar may do on NATS, as the server will enforce it: the capsule's
 * IPC ACL and the sidecar's own subjects (sidecarNatsPermissions), plus the JetStream KV
 * buckets the operator's pods point the sidecar at — the shared revocation list (read only),
 * the single-use token set, and the capsule's own kv bucket when its manifest declares kv.
 */
import type { Manifest } from "../../core/manifest/index.js";
import { IpcAcl } from "../../core/security/acl/ipc-acl.js";
import type { NatsPermissions } from "../../core/security/acl/nats-permissions.js";
import { defaultKvBucket } from "../../sidecar/enforce/kv-jetstream.js";
import { sidecarNatsPermissions } from "../../sidecar/nats-user.js";
import { REVOCATION_BUCKET } from "../identity/issuer.js";

export const USED_TOKENS_BUCKET = "astrid-used-tokens";

export interface CapsuleNatsOptions {
  /** A session pod's sidecar: it may send this one session's prompt (task mode). */
  readonly taskSession?: string;
}

/**
 * The JetStream API subjects that open, read and watch one KV bucket; `write` adds its keys.
 * Read-only matters for the revocation list: a `$KV.<bucket>.<jti>` delete marker published by
 * a compromised capsule would un-revoke a token for every pod.
 */
export function kvBucketPublish(bucket: string, write: boolean): string[] {
  const stream = `KV_${bucket}`;
  return [
    `$JS.API.STREAM.INFO.${stream}`,
    // Kvm.create creates the bucket when absent (the first pod of a namespace).
    `$JS.API.STREAM.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}`,
    `$JS.API.CONSUMER.CREATE.${stream}.>`,
    `$JS.API.CONSUMER.INFO.${stream}.>`,
    `$JS.API.CONSUMER.DELETE.${stream}.>`,
    `$JS.API.DIRECT.GET.${stream}`,
    `$JS.API.DIRECT.GET.${stream}.>`,
    `$JS.API.STREAM.MSG.GET.${stream}`,
    ...(write ? [`$KV.${bucket}.>`] : []),
  ];
}

export function capsuleNatsPermissions(
  manifest: Manifest,
  capsule: string,
  opts: CapsuleNatsOptions = {},
): NatsPermissions {
  const caps = manifest.capabilities;
  const acl = new IpcAcl(
    { publish: caps.ipc_publish, subscribe: caps.ipc_subscribe },
    { capsuleId: capsule },
  );
  const base = sidecarNatsPermissions(
    acl,
    capsule,
    opts.taskSession !== undefined ? { taskSession: opts.taskSession } : {},
  );
  const publish = new Set([
    ...(base.publish.allow ?? []),
    "$JS.API.INFO",
    ...kvBucketPublish(REVOCATION_BUCKET, false),
    ...kvBucketPublish(USED_TOKENS_BUCKET, true),
    ...(caps.kv.length > 0 ? kvBucketPublish(defaultKvBucket(capsule), true) : []),
  ]);
  return {
    ...base,
    // Sorted: the annotation that decides re-issue must not change with Set order.
    publish: { allow: [...publish].sort() },
    subscribe: { allow: [...(base.subscribe.allow ?? [])].sort() },
  };
}
