/**
 * The NATS user of a session pod: the orchestrator capsule's permissions plus its own
 * session's prompt subject (task mode sends the task there), in Secret
 * `<session>-session-nats` owned by the AgentSession. For the session reconciler: pass the
 * spec to NatsUsers.ensure and the result to capsulePodParts as `nats`; on delete, revoke it
 * with NatsUsers.revoke (its `.creds` must not outlive the session).
 */
import type { Manifest } from "../../core/manifest/index.js";
import type { OwnerReference } from "../runtime/rest.js";
import { natsSecretName } from "./names.js";
import { capsuleNatsPermissions } from "./permissions.js";
import type { NatsUserSpec } from "./user-secret.js";

export function sessionNatsSecretName(session: string): string {
  return natsSecretName(`${session}-session`);
}

export function sessionNatsUserSpec(
  session: { name: string; namespace: string; owner: OwnerReference },
  orchestrator: { name: string; manifest: Manifest },
  labels?: Record<string, string>,
): NatsUserSpec {
  return {
    namespace: session.namespace,
    secretName: sessionNatsSecretName(session.name),
    userName: `${session.name}/${orchestrator.name}`,
    permissions: capsuleNatsPermissions(orchestrator.manifest, orchestrator.name, {
      taskSession: session.name,
    }),
    owner: session.owner,
    ...(labels ? { labels } : {}),
  };
}
