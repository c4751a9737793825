/**
 * Each capsule's (and session pod's) NATS user, kept in a Secret `<owner>-nats` with the
 * `.creds` file, owned by the Capsule so it goes with it. Issued once and re-issued only when
 * the permissions change (their sha256 is an annotation on the Secret): a new user on every
 * reconcile would roll every pod and grow the account's revocation list without end. A
 * replaced user is revoked, so the old, wider permissions stop working at once.
 */
import { createHash } from "node:crypto";
import type { NatsPermissions } from "../../core/security/acl/nats-permissions.js";
import {
  ConflictError,
  type KubeRest,
  NotFoundError,
  type ObjectMeta,
  type OwnerReference,
  resourcePath,
  Secrets,
} from "../runtime/rest.js";
import {
  NATS_CREDS_KEY,
  NATS_PERMISSIONS_ANNOTATION,
  NATS_USER_ANNOTATION,
  type NatsPodUser,
} from "./names.js";
import { issueNatsUser, type NatsAccountSigner } from "./user-jwt.js";

/** Revokes a user's JWTs on the servers (NatsAccountRevoker). */
export interface NatsUserRevoker {
  revoke(userKey: string): Promise<void>;
}

export interface NatsUserSpec {
  namespace: string;
  /** The Secret's name (natsSecretName). */
  secretName: string;
  /** The user's name in its JWT (shown by the server's monitoring). */
  userName: string;
  permissions: NatsPermissions;
  /** The owner the Secret goes with (exactly one, with a uid). */
  owner: OwnerReference;
  labels?: Record<string, string>;
}

interface SecretBody {
  metadata?: ObjectMeta;
  data?: Record<string, string>;
}

export function permissionsDigest(perms: NatsPermissions): string {
  return createHash("sha256").update(JSON.stringify(perms)).digest("hex");
}

/** One per operator process. */
export class NatsUsers {
  /** `<uid>/<digest>` → user: reconciles after the first make no API call. */
  private readonly ensured = new Map<string, string>();

  constructor(
    private readonly rest: KubeRest,
    private readonly signer: NatsAccountSigner,
    private readonly revoker?: NatsUserRevoker,
  ) {}

  /** The Secret holding a user with exactly `spec.permissions`, created or replaced as needed. */
  async ensure(spec: NatsUserSpec): Promise<NatsPodUser> {
    const digest = permissionsDigest(spec.permissions);
    const cacheKey = `${spec.owner.uid}/${spec.secretName}/${digest}`;
    const known = this.ensured.get(cacheKey);
    if (known) return { secretName: spec.secretName, user: known };
    const where = `Secret ${spec.namespace}/${spec.secretName}`;
    const path = resourcePath(Secrets, spec.namespace, spec.secretName);

    let existing: SecretBody | undefined;
    try {
      existing = await this.rest.request<SecretBody>("GET", path);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
    if (existing) {
      const owners = existing.metadata?.ownerReferences ?? [];
      // A Secret of an earlier owner of the same name goes with it (garbage collector); one
      // nobody owns was not made by the operator, and its user's permissions are unknown.
      if (!owners.some((o) => o.uid === spec.owner.uid)) {
        throw new Error(
          `${where} is not owned by ${spec.owner.kind} ${spec.owner.name} (uid ${spec.owner.uid}); waiting for it to go (an earlier owner's) or for an admin to remove it`,
        );
      }
      const annotations = existing.metadata?.annotations ?? {};
      const user = annotations[NATS_USER_ANNOTATION];
      if (
        annotations[NATS_PERMISSIONS_ANNOTATION] === digest &&
        user &&
        existing.data?.[NATS_CREDS_KEY]
      ) {
        this.ensured.set(cacheKey, user);
        return { secretName: spec.secretName, user };
      }
    }

    const issued = await issueNatsUser(this.signer, spec.userName, spec.permissions);
    const body = {
      apiVersion: "v1",
      kind: "Secret",
      type: "Opaque",
      metadata: {
        name: spec.secretName,
        namespace: spec.namespace,
        ...(spec.labels ? { labels: spec.labels } : {}),
        annotations: {
          [NATS_PERMISSIONS_ANNOTATION]: digest,
          [NATS_USER_ANNOTATION]: issued.publicKey,
        },
        ownerReferences: [spec.owner],
        // PUT with the version read: a concurrent writer makes this fail (409) rather than
        // leave a Secret whose user nobody revokes.
        ...(existing?.metadata?.resourceVersion
          ? { resourceVersion: existing.metadata.resourceVersion }
          : {}),
      },
      data: { [NATS_CREDS_KEY]: Buffer.from(issued.creds).toString("base64") },
    };
    if (existing) await this.rest.request("PUT", path, { body });
    else
      try {
        await this.rest.request("POST", resourcePath(Secrets, spec.namespace), { body });
      } catch (err) {
        // Another writer created it between GET and POST: the next reconcile reads theirs.
        if (err instanceof ConflictError)
          throw new Error(`${where} was created concurrently; retrying`);
        throw err;
      }
    const replaced = existing?.metadata?.annotations?.[NATS_USER_ANNOTATION];
    if (replaced && replaced !== issued.publicKey) await this.revoker?.revoke(replaced);
    this.ensured.set(cacheKey, issued.publicKey);
    return { secretName: spec.secretName, user: issued.publicKey };
  }

  /**
   * Revokes the owner's user (it is being deleted): the one its Secret names, read from the
   * API (after a restart only the Secret knows it), and `known` ones such as the owner's
   * status.natsUser — with foreground deletion the Secret may be gone before this runs.
   */
  async revoke(
    namespace: string,
    secretName: string,
    ownerUid: string,
    known: readonly string[] = [],
  ): Promise<void> {
    for (const k of this.ensured.keys()) if (k.startsWith(`${ownerUid}/`)) this.ensured.delete(k);
    if (!this.revoker) return;
    const users = new Set(known);
    try {
      const secret = await this.rest.request<SecretBody>(
        "GET",
        resourcePath(Secrets, namespace, secretName),
      );
      const user = secret.metadata?.annotations?.[NATS_USER_ANNOTATION];
      if (user && (secret.metadata?.ownerReferences ?? []).some((o) => o.uid === ownerUid))
        users.add(user);
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
    for (const user of users) await this.revoker.revoke(user);
  }
}
