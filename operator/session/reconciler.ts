/**
 * The AgentSession reconciler: key in, the session's pod, audit claim and token Secret made to
 * exist once its capsules are ready, and its status made to say what the pod did. Level-
 * triggered (docs/operator-runtime.md): it reads the cache, builds the children with the pure
 * builders of desired.ts, writes only what differs, and maps the finished pod's termination
 * message to status.result, usage and the Succeeded/Failed conditions.
 *
 * Deletion is held by a finalizer until the session token is revoked in the KV bucket every
 * sidecar mirrors: the pod may still be running with the token mounted, and owner references
 * can only delete objects, not un-trust a token already handed out.
 */
import { ManifestError } from "../../core/manifest/errors.js";
import { GraphError } from "../../core/manifest/graph.js";
import type { Manifest } from "../../core/manifest/index.js";
import { usdToMicro } from "../../core/manifest/money.js";
import { parseManifest } from "../../core/manifest/parse.js";
import type { IssuerKey } from "../../core/security/tokens/keys.js";
import { mintToken, newJti } from "../../core/security/tokens/mint.js";
import type { AgentSession } from "../api/agentsession.js";
import type { Approval } from "../api/approval.js";
import type { Capsule } from "../api/capsule.js";
import {
  type Condition,
  type ConditionInput as GenericConditionInput,
  withTimes,
} from "../api/common.js";
import { manifestOf } from "../capsule/manifest-cache.js";
import { Capsules } from "../capsule/resources.js";
import type { NatsPodUser } from "../nats/names.js";
import { sessionNatsSecretName, sessionNatsUserSpec } from "../nats/session-user.js";
import type { NatsUsers } from "../nats/user-secret.js";
import type { Informer } from "../runtime/cache.js";
import { type Client, isSubset } from "../runtime/client.js";
import type { Result } from "../runtime/controller.js";
import { forOwner } from "../runtime/handlers.js";
import { keyOf, objectKey, splitKey } from "../runtime/keys.js";
import {
  ConflictError,
  type KubeObject,
  type KubeRest,
  NotFoundError,
  resourcePath,
  Secrets,
} from "../runtime/rest.js";
import type { WorkQueue } from "../runtime/workqueue.js";
import {
  auditClaimName,
  desiredAuditClaim,
  desiredSessionPod,
  desiredTokenSecret,
  orchestratorBindings,
  type PodParts,
  type SessionCapsule,
  type SessionPodInput,
  type SessionWorkloadOptions,
  sessionOwnerRef,
  sessionPodName,
  sessionTokenClaims,
  TOKEN_EXPIRES_ANNOTATION,
  TOKEN_ID_ANNOTATION,
  tokenSecretName,
  toolCapsules,
} from "./desired.js";
import type { SessionMetrics } from "./metrics.js";
import { conditionReason, type SessionOutcome, sessionOutcome } from "./outcome.js";
import { AgentSessions, Approvals, PersistentVolumeClaims, Pods } from "./resources.js";
import type { TokenRevoker } from "./revoker.js";

export const SESSION_FINALIZER = "astrid.dev/revoke-session-token";

export interface SessionReconcilerOptions extends SessionWorkloadOptions {
  /** The namespace's token issuer (operator/identity/issuer.ts IssuerStore). */
  issuer: { ensure(namespace: string): Promise<IssuerKey> };
  revoker: TokenRevoker;
  /** The orchestrator's pod parts: capsulePodParts(capsule, bindings, capsule options, user). */
  podParts: (
    capsule: Capsule,
    bindings: Readonly<Record<string, string>>,
    natsUser?: NatsPodUser,
  ) => PodParts;
  /**
   * Issues the session pod its own NATS user (operator/nats), revoked when the session is
   * deleted. Absent when the operator runs without NATS account keys.
   */
  natsUsers?: Pick<NatsUsers, "ensure" | "revoke">;
  /** The orchestrator's own container for an image package: capsuleContainer(capsule). */
  capsuleContainer?: (capsule: Capsule) => Record<string, unknown> | undefined;
  /** For what the cache cannot answer for sure: creating the token Secret, reading it at deletion. */
  rest: KubeRest;
  metrics?: SessionMetrics;
  now?: () => Date;
}

type ConditionType = "Accepted" | "Ready" | "Running" | "Succeeded" | "Failed" | "TokenRevoked";

type ConditionInput = GenericConditionInput<ConditionType>;

type SessionObject = AgentSession & KubeObject;
type Status = NonNullable<AgentSession["status"]>;

function conditionOf(obj: KubeObject | undefined, type: string): Condition | undefined {
  const conds = (obj?.status as { conditions?: Condition[] } | undefined)?.conditions ?? [];
  return conds.find((c) => c.type === type);
}

function isTrue(obj: KubeObject | undefined, type: string): boolean {
  return conditionOf(obj, type)?.status === "True";
}

export function isFinished(session: KubeObject): boolean {
  return isTrue(session, "Succeeded") || isTrue(session, "Failed");
}

/** A status write changes none of these, so the reconciler's own writes do not wake it. */
function reconciledPart(obj: KubeObject): string {
  const m = obj.metadata;
  return JSON.stringify([obj.spec, m?.generation, m?.deletionTimestamp, m?.finalizers]);
}

/**
 * Sessions by their own key; pods, claims and token Secrets by their owner's key; a Capsule's
 * change wakes the unfinished sessions that list it (it may be the one they wait for); an
 * Approval's change wakes its session (status.pendingApprovals).
 */
export function watchSessions(
  informers: {
    sessions: Informer;
    capsules: Informer;
    approvals: Informer;
    children: Informer[];
  },
  queue: WorkQueue,
): void {
  informers.sessions.addEventHandler({
    onAdd: (o) => queue.add(objectKey(o)),
    onUpdate: (a, b) => {
      if (reconciledPart(a) !== reconciledPart(b)) queue.add(objectKey(b));
    },
    onDelete: (o) => queue.add(objectKey(o)),
  });
  for (const inf of informers.children)
    inf.addEventHandler(forOwner(queue, { kind: "AgentSession", group: "astrid.dev" }));
  const wakeUsers = (capsule: KubeObject) => {
    const ns = capsule.metadata?.namespace;
    for (const s of informers.sessions.list(ns) as SessionObject[]) {
      if (!isFinished(s) && s.spec?.capsules?.includes(capsule.metadata?.name ?? ""))
        queue.add(objectKey(s));
    }
  };
  informers.capsules.addEventHandler({
    onAdd: wakeUsers,
    onUpdate: (_a, b) => wakeUsers(b),
    onDelete: wakeUsers,
  });
  const wakeSession = (a: KubeObject) => {
    const session = (a as Approval & KubeObject).spec?.session;
    if (session) queue.add(keyOf(a.metadata?.namespace, session));
  };
  informers.approvals.addEventHandler({
    onAdd: wakeSession,
    onUpdate: (_a, b) => wakeSession(b),
    onDelete: wakeSession,
  });
}

/** Approvals of the session still waiting for a person. */
export function countPending(approvals: readonly KubeObject[], session: string): number {
  return approvals.filter((a) => {
    const x = a as Approval & KubeObject;
    return (
      x.spec?.session === session &&
      x.spec.decision === undefined &&
      x.status?.state !== "Expired" &&
      !x.metadata.deletionTimestamp
    );
  }).length;
}

async function readSecret(
  client: Client,
  rest: KubeRest,
  namespace: string,
  name: string,
): Promise<KubeObject | undefined> {
  const cached = client.get(Secrets, namespace, name);
  if (cached) return cached;
  // The cache may not have seen a Secret created a moment ago; a token it missed would never
  // be revoked, so ask the API server before concluding there is none.
  try {
    return await rest.request<KubeObject>("GET", resourcePath(Secrets, namespace, name));
  } catch (err) {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  }
}

export function sessionReconciler(
  client: Client,
  opts: SessionReconcilerOptions,
): (key: string) => Promise<Result | undefined> {
  const now = opts.now ?? (() => new Date());
  return async (key) => {
    const { namespace, name } = splitKey(key);
    const ns = namespace ?? "";
    const labels = { namespace: ns, session: name };
    const session = client.get<SessionObject>(AgentSessions, namespace, name);
    if (!session) {
      opts.metrics?.remove(labels);
      return undefined;
    }
    const ref = {
      apiVersion: session.apiVersion,
      kind: session.kind,
      metadata: { name, namespace },
    };
    const finalizers = (session.metadata.finalizers ?? []) as string[];
    const generation = (session.metadata.generation as number | undefined) ?? 0;
    const currentStatus: Status = session.status ?? {};
    const stamp = now().toISOString();
    const pending = countPending(client.list(Approvals, namespace), name);

    const writeStatus = async (conds: ConditionInput[], extra: Partial<Status> = {}) => {
      const status = {
        ...extra,
        observedGeneration: generation,
        pendingApprovals: pending,
        conditions: withTimes(conds, currentStatus.conditions ?? [], generation, stamp),
      };
      if (isSubset(status, currentStatus)) return;
      await client.applyStatus(AgentSessions, { ...ref, status });
    };
    const current = (type: ConditionType): ConditionInput | undefined => {
      const c = conditionOf(session, type);
      return c && { type, status: c.status, reason: c.reason, message: c.message };
    };
    /** The lifecycle conditions as they stand, to write back unchanged beside a new one. */
    const currentLifecycle = (): ConditionInput[] =>
      (["Accepted", "Ready", "Running", "Succeeded", "Failed"] as const)
        .map(current)
        .filter((c): c is ConditionInput => c !== undefined);

    if (session.metadata.deletionTimestamp) {
      if (!finalizers.includes(SESSION_FINALIZER)) return undefined;
      const secret = await readSecret(client, opts.rest, ns, tokenSecretName(name));
      const jti = secret?.metadata?.annotations?.[TOKEN_ID_ANNOTATION];
      if (jti) {
        const exp = Number(secret?.metadata?.annotations?.[TOKEN_EXPIRES_ANNOTATION]) || 0;
        try {
          await opts.revoker.revoke(jti, exp);
          await opts.natsUsers?.revoke(
            ns,
            sessionNatsSecretName(name),
            String(session.metadata.uid ?? ""),
          );
        } catch (err) {
          const keep = currentLifecycle();
          await writeStatus([
            ...keep,
            {
              type: "TokenRevoked",
              status: "False",
              reason: "RevocationFailed",
              message: `${(err as Error).message}; the finalizer ${SESSION_FINALIZER} stays until the token is revoked`,
            },
          ]);
          // Fail closed: the token may still be in a running pod, so deletion waits for NATS.
          throw err;
        }
      }
      opts.metrics?.remove(labels);
      // Applying without the finalizer drops it (server-side apply removes what this manager
      // owned and no longer sends); the children go with the session through owner references.
      await client.apply(AgentSessions, ref);
      return undefined;
    }
    if (!finalizers.includes(SESSION_FINALIZER)) {
      await client.apply(AgentSessions, {
        ...ref,
        metadata: { ...ref.metadata, finalizers: [SESSION_FINALIZER] },
      });
    }

    const limitMicro = usdToMicro(session.spec.budget.maxSessionUsd);
    const recordMetrics = (status: Partial<Status>) =>
      opts.metrics?.set(labels, {
        limitMicroUsd: limitMicro.ok ? limitMicro.micro : 0,
        limitTokens: session.spec.budget.maxSessionTokens,
        spentMicroUsd: Number(status.usage?.costMicroUsd ?? 0),
        spentTokens: (status.usage?.inputTokens ?? 0) + (status.usage?.outputTokens ?? 0),
        pending,
      });

    if (isFinished(session)) {
      // A finished run is history: its conditions stay as they were, whatever the capsules
      // do now; only the pending count moves and the TTL runs.
      const keep = currentLifecycle();
      const {
        conditions: _c,
        observedGeneration: _g,
        pendingApprovals: _p,
        ...rest
      } = currentStatus;
      await writeStatus(keep, rest);
      recordMetrics(currentStatus);
      await stopLeftovers(session);
      return ttl(session, now());
    }

    // Accepted: every listed capsule exists, is not going away and has a valid manifest.
    const capsules = session.spec.capsules.map((n) => ({
      name: n,
      obj: client.get<Capsule & KubeObject>(Capsules, namespace, n),
    }));
    const missing = capsules.filter((c) => !c.obj || c.obj.metadata.deletionTimestamp);
    const notAccepted = capsules.filter((c) => c.obj && !isTrue(c.obj, "Accepted"));
    const waiting = (message: string, reason: string): ConditionInput[] => [
      { type: "Ready", status: "False", reason, message },
      { type: "Running", status: "False", reason, message },
      {
        type: "Succeeded",
        status: "False",
        reason: "NotFinished",
        message: "the task has not finished",
      },
      {
        type: "Failed",
        status: "False",
        reason: "NotFinished",
        message: "the task has not finished",
      },
    ];
    const notAcceptedStatus = async (reason: string, message: string) => {
      await writeStatus([
        { type: "Accepted", status: "False", reason, message },
        ...waiting("the session is not accepted", "NotAccepted"),
      ]);
      recordMetrics({});
      return undefined;
    };
    if (missing.length > 0)
      return notAcceptedStatus(
        "CapsulesNotFound",
        `capsules not found: ${missing.map((c) => c.name).join(", ")}`,
      );
    if (notAccepted.length > 0)
      return notAcceptedStatus(
        "CapsulesNotAccepted",
        `capsules not accepted: ${notAccepted.map((c) => c.name).join(", ")}`,
      );
    // The orchestrator's own pods would subscribe to the same prompt subject as the session
    // pod and could take this session's prompt — without its mode, budget or tool list. That
    // is an enforcement bypass, so the session does not start while they exist.
    const shared = capsules.find((c) => c.name === session.spec.orchestrator)?.obj as
      | Capsule
      | undefined;
    if (shared && (shared.spec.replicas ?? 1) > 0)
      return notAcceptedStatus(
        "OrchestratorShared",
        `orchestrator ${shared.metadata.name} runs ${shared.spec.replicas ?? 1} replica(s) of its own, which would also answer this session's prompts without its mode and budget; set the Capsule's spec.replicas to 0 (a session runs its orchestrator in the session pod)`,
      );
    let podInput: SessionPodInput;
    try {
      const parsed: SessionCapsule[] = capsules.map((c) => ({
        name: c.name,
        // The memoised parse; a manifest that does not parse is parsed again for its error.
        manifest: manifestOf(c.obj as Capsule) ?? parseManifest((c.obj as Capsule).spec.manifest),
      }));
      const bindings = orchestratorBindings(session, parsed);
      const orchestrator = capsules.find((c) => c.name === session.spec.orchestrator)
        ?.obj as Capsule;
      let parts: PodParts;
      // Its own user, scoped to the orchestrator's ACL plus this session's prompt subject: a
      // compromised session pod can reach no more of the bus than its capsule may.
      const natsUser = opts.natsUsers
        ? await opts.natsUsers.ensure(
            sessionNatsUserSpec(
              { name, namespace: ns, owner: sessionOwnerRef(session) },
              {
                name: orchestrator.metadata.name,
                manifest: parsed.find((p) => p.name === orchestrator.metadata.name)
                  ?.manifest as Manifest,
              },
            ),
          )
        : undefined;
      try {
        parts = opts.podParts(orchestrator, bindings, natsUser);
      } catch (err) {
        // A package the pod could never fetch or run: say so instead of a crash-looping pod.
        return notAcceptedStatus("UnsupportedPackage", (err as Error).message);
      }
      const container = opts.capsuleContainer?.(orchestrator);
      podInput = {
        parts,
        toolCapsules: toolCapsules(session, parsed),
        ...(container ? { capsuleContainer: container } : {}),
      };
    } catch (err) {
      if (err instanceof GraphError)
        return notAcceptedStatus(conditionReason(err.kind), err.message);
      if (err instanceof ManifestError) return notAcceptedStatus("InvalidManifest", err.message);
      throw err;
    }
    const accepted: ConditionInput = {
      type: "Accepted",
      status: "True",
      reason: "Accepted",
      message: "every capsule exists and is accepted",
    };

    const notReady = capsules.filter((c) => !isTrue(c.obj, "Ready")).map((c) => c.name);
    const readyCond: ConditionInput =
      notReady.length === 0
        ? {
            type: "Ready",
            status: "True",
            reason: "CapsulesReady",
            message: "every capsule is ready",
          }
        : {
            type: "Ready",
            status: "False",
            reason: "WaitingForCapsules",
            message: `waiting for capsules: ${notReady.join(", ")}`,
          };

    const pod = client.get(Pods, namespace, sessionPodName(name));
    let outcome: SessionOutcome;
    if (!pod) {
      const started = currentStatus.startedAt !== undefined || isTrue(session, "Running");
      if (started) {
        outcome = {
          phase: "Failed",
          reason: "PodLost",
          message: `the session pod ${sessionPodName(name)} disappeared before the task finished`,
        };
      } else if (notReady.length > 0) {
        await writeStatus([
          accepted,
          readyCond,
          {
            type: "Running",
            status: "False",
            reason: "WaitingForCapsules",
            message: readyCond.message,
          },
          {
            type: "Succeeded",
            status: "False",
            reason: "NotFinished",
            message: "the task has not finished",
          },
          {
            type: "Failed",
            status: "False",
            reason: "NotFinished",
            message: "the task has not finished",
          },
        ]);
        recordMetrics({});
        return undefined;
      } else {
        await ensureChildren(client, opts, session, podInput, now());
        outcome = { phase: "Pending", message: "the session pod was created" };
      }
    } else {
      outcome = sessionOutcome(pod);
    }

    const notFinished = [
      {
        type: "Succeeded",
        status: "False",
        reason: "NotFinished",
        message: "the task has not finished",
      },
      {
        type: "Failed",
        status: "False",
        reason: "NotFinished",
        message: "the task has not finished",
      },
    ] as const satisfies ConditionInput[];
    if (outcome.phase === "Pending") {
      await writeStatus([
        accepted,
        readyCond,
        { type: "Running", status: "False", reason: "PodPending", message: outcome.message },
        ...notFinished,
      ]);
      recordMetrics({});
      return undefined;
    }
    if (outcome.phase === "Running") {
      const startedAt = currentStatus.startedAt ?? outcome.startedAt ?? stamp;
      await writeStatus(
        [
          accepted,
          readyCond,
          { type: "Running", status: "True", reason: "PodRunning", message: "the task is running" },
          ...notFinished,
        ],
        { startedAt },
      );
      recordMetrics({});
      return undefined;
    }

    const ok = outcome.phase === "Succeeded";
    const finishedAt = outcome.finishedAt ?? stamp;
    const extra: Partial<Status> = {
      startedAt: currentStatus.startedAt ?? outcome.startedAt ?? finishedAt,
      finishedAt,
      ...(outcome.result !== undefined ? { result: outcome.result } : {}),
      ...(outcome.usage ? { usage: outcome.usage } : {}),
    };
    await writeStatus(
      [
        accepted,
        readyCond,
        { type: "Running", status: "False", reason: "Finished", message: "the task has finished" },
        ok
          ? { type: "Succeeded", status: "True", reason: outcome.reason, message: outcome.message }
          : {
              type: "Succeeded",
              status: "False",
              reason: outcome.reason,
              message: outcome.message,
            },
        ok
          ? { type: "Failed", status: "False", reason: "Succeeded", message: outcome.message }
          : { type: "Failed", status: "True", reason: outcome.reason, message: outcome.message },
      ],
      extra,
    );
    recordMetrics(extra);
    await stopLeftovers(session);
    return ttl({ ...session, status: { ...currentStatus, ...extra } }, now());
  };

  /**
   * An image orchestrator's own container outlives the sidecar's exit; the run is over, so the
   * pod goes (its audit chain stays on the PVC, its result in the status).
   */
  async function stopLeftovers(session: SessionObject): Promise<void> {
    const ns = session.metadata.namespace;
    const pod = client.get(Pods, ns, sessionPodName(session.metadata.name));
    const phase = (pod?.status as { phase?: string } | undefined)?.phase;
    if (pod && !pod.metadata?.deletionTimestamp && (phase === "Running" || phase === "Pending"))
      await client.delete(Pods, ns, sessionPodName(session.metadata.name));
  }

  /** Deletes a finished session whose TTL ran out; otherwise asks to look again then. */
  async function ttl(session: SessionObject, at: Date): Promise<Result | undefined> {
    const seconds = session.spec.ttlSecondsAfterFinished;
    const finishedAt = session.status?.finishedAt;
    if (seconds === undefined || !finishedAt) return undefined;
    const remaining = Date.parse(finishedAt) + seconds * 1000 - at.getTime();
    if (remaining > 0) return { requeueAfter: remaining };
    await client.delete(AgentSessions, session.metadata.namespace, session.metadata.name);
    return undefined;
  }
}

/** Token Secret, audit claim and pod, in that order: the pod mounts the other two. */
async function ensureChildren(
  client: Client,
  opts: SessionReconcilerOptions,
  session: SessionObject,
  podInput: SessionPodInput,
  at: Date,
): Promise<void> {
  const ns = session.metadata.namespace ?? "";
  const name = session.metadata.name;
  if (!client.get(Secrets, ns, tokenSecretName(name))) {
    const issuer = await opts.issuer.ensure(ns);
    const jti = newJti();
    const claims = { ...sessionTokenClaims(session, Math.floor(at.getTime() / 1000)), jti };
    const token = mintToken(claims, issuer);
    // POST, never apply: a second token minted from a stale cache must not replace the first
    // (whose id is the one recorded for revocation, and which a pod may already hold).
    try {
      await opts.rest.request("POST", resourcePath(Secrets, ns), {
        body: desiredTokenSecret(session, { token, jti, exp: claims.exp }),
      });
    } catch (err) {
      if (!(err instanceof ConflictError && err.reason === "AlreadyExists")) throw err;
    }
  }
  const claim = desiredAuditClaim(session, opts);
  const currentClaim = client.get(PersistentVolumeClaims, ns, auditClaimName(name));
  // A bound claim's spec is immutable; only a missing claim is written.
  if (!currentClaim) await client.apply(PersistentVolumeClaims, claim);
  await client.apply(Pods, desiredSessionPod(session, podInput, opts));
}
