/**
 * The Capsule reconciler: key in, the Capsule's children and status made to match its spec.
 * Level-triggered (docs/operator-runtime.md): it reads the cache, builds the desired objects
 * with the pure builders of desired.ts and writes only what differs, so a restart or resync
 * writes nothing and a deleted child is re-created because it is missing.
 */

import { ManifestError } from "../../core/manifest/errors.js";
import {
  COLLECTING_INTERFACES,
  type GraphCapsule,
  GraphError,
  resolveGraph,
} from "../../core/manifest/graph.js";
import { parseManifest } from "../../core/manifest/parse.js";
import type { Capsule } from "../api/capsule.js";
import {
  type Condition,
  type ConditionInput as GenericConditionInput,
  withTimes,
} from "../api/common.js";
import type { IssuerStore } from "../identity/issuer.js";
import { type NatsPodUser, natsSecretName } from "../nats/names.js";
import { capsuleNatsPermissions } from "../nats/permissions.js";
import type { NatsUsers } from "../nats/user-secret.js";
import type { Informer } from "../runtime/cache.js";
import type { Client } from "../runtime/client.js";
import { isSubset } from "../runtime/client.js";
import { type Result, TerminalError } from "../runtime/controller.js";
import { forOwner } from "../runtime/handlers.js";
import { objectKey, splitKey } from "../runtime/keys.js";
import { ConfigMaps, type KubeObject, type ResourceType } from "../runtime/rest.js";
import type { WorkQueue } from "../runtime/workqueue.js";
import {
  type CapsuleWorkloadOptions,
  capsuleOwnerRef,
  desiredChildren,
  envProblem,
  packageSource,
  podLabels,
} from "./desired.js";
import type { CapsuleIdentities } from "./identity-secret.js";
import { manifestOf } from "./manifest-cache.js";
import { Capsules, NetworkPolicies, StatefulSets } from "./resources.js";
import { missingSecretRefs, type SecretKeys } from "./secret-refs.js";

export const FINALIZER = "astrid.dev/cleanup";

export interface CapsuleReconcilerOptions extends CapsuleWorkloadOptions {
  /** The namespace's token issuer: its trust ConfigMap must exist before pods mount it. */
  issuers: IssuerStore;
  /** Creates each capsule's `<name>-identity` Secret before its pods need it. */
  identities: CapsuleIdentities;
  /**
   * Cleanup that owner references cannot do, run once when the Capsule is deleted, before the
   * finalizer is removed (after the NATS user's revocation, when natsUsers is set).
   * Must be idempotent: a reconcile working from a cache that has not yet seen the finalizer
   * go runs it again.
   */
  cleanup?: (capsule: Capsule) => Promise<void>;
  /**
   * Per-capsule NATS users (decentralized auth). Absent: sidecars connect as the bus URL
   * allows, status.natsUser stays unset. Present: each Capsule gets a user whose permissions
   * are its manifest's ACL, in Secret `<capsule>-nats`, revoked when the Capsule is deleted.
   */
  natsUsers?: NatsUsers;
  /** Key names of a Secret `spec.env` refers to (secretKeysFrom(rest)). */
  secretKeys: SecretKeys;
  /** Re-check unresolved imports this often as a safety net. Default 30 s. */
  unresolvedRequeueMs?: number;
  /** Re-check missing Secrets this often (they are not watched). Default 10 s. */
  missingSecretRequeueMs?: number;
  /** The clock for lastTransitionTime (tests). */
  now?: () => Date;
}

type ConditionType = "Accepted" | "ResolvedRefs" | "Ready";

type ConditionInput = GenericConditionInput<ConditionType>;

/** Only the exporting side of a manifest: another capsule's own imports are not our concern. */
function asExporter(m: GraphCapsule): GraphCapsule {
  return { package: m.package, exports: m.exports, imports: {} };
}

/**
 * Whether the capsule's imports are served by the other Capsules of its namespace. Others
 * count only as exporters, so one capsule's missing import does not mark its neighbours False.
 */
export function resolveImports(
  self: GraphCapsule,
  others: readonly GraphCapsule[],
): { ok: true; bindings: Record<string, string> } | { ok: false; reason: string; message: string } {
  const seen = new Set([self.package.name]);
  const exporters: GraphCapsule[] = [];
  for (const o of others) {
    if (seen.has(o.package.name)) continue;
    seen.add(o.package.name);
    exporters.push(asExporter(o));
  }
  try {
    const plan = resolveGraph([self, ...exporters]);
    // `astrid.llm=anthropic`: the sidecar gives the guest `bind.astrid.llm`. A collecting
    // interface (every tool capsule at once) has no single target; sessions name them in
    // settings instead.
    const bindings: Record<string, string> = {};
    for (const b of plan.bindings) {
      if (b.importer === self.package.name && !COLLECTING_INTERFACES.has(b.interface))
        bindings[b.interface] = b.exporter;
    }
    return { ok: true, bindings };
  } catch (err) {
    if (!(err instanceof GraphError)) throw err;
    const reason = err.kind.replace(/(^|-)([a-z])/g, (_m, _d, c: string) => c.toUpperCase());
    return { ok: false, reason, message: err.message };
  }
}

function condition(obj: KubeObject, type: ConditionType): Condition | undefined {
  const conds = (obj.status as { conditions?: Condition[] } | undefined)?.conditions ?? [];
  return conds.find((c) => c.type === type);
}

/** Accepted Capsules: a neighbour's change may give them an exporter or take one away. */
function accepted(obj: KubeObject): boolean {
  return condition(obj, "Accepted")?.status === "True";
}

/**
 * What the reconciler acts on. A status write (its own, every reconcile that changes one)
 * changes none of it, so it does not wake the reconciler again.
 */
function reconciledPart(obj: KubeObject): string {
  const m = obj.metadata;
  return JSON.stringify([obj.spec, m?.generation, m?.deletionTimestamp, m?.finalizers]);
}

/** What neighbours see of a Capsule: whether, and what, it exports. */
function exportingPart(obj: KubeObject): string {
  return JSON.stringify([obj.spec, obj.metadata?.deletionTimestamp]);
}

/** `astrid.llm`-style names of what a manifest exports or imports. */
function interfaces(
  table: Readonly<Record<string, Readonly<Record<string, unknown>>>> | undefined,
): string[] {
  return Object.entries(table ?? {}).flatMap(([ns, ifaces]) =>
    Object.keys(ifaces).map((i) => `${ns}.${i}`),
  );
}

/**
 * Capsules by their own key; children by their owner's key; and, when a Capsule appears,
 * changes what it exports or goes, the accepted Capsules of its namespace it may matter to:
 * those still missing an exporter, and those importing an interface it exports (before or
 * after the change). Waking every neighbour on every change made a burst of n creates cost
 * n² reconciles. The re-checks write nothing unless ResolvedRefs moves.
 */
export function watchCapsules(
  informers: { capsules: Informer; children: Informer[] },
  queue: WorkQueue,
): void {
  const wake = (obj: KubeObject, before?: KubeObject) => {
    queue.add(objectKey(obj));
    // Declared exports, even of a Capsule being deleted: its importers are the ones to tell.
    const changed = new Set([
      ...interfaces(manifestOf(obj)?.exports),
      ...(before ? interfaces(manifestOf(before)?.exports) : []),
    ]);
    for (const c of informers.capsules.list(obj.metadata?.namespace)) {
      if (c.metadata?.name === obj.metadata?.name || !accepted(c)) continue;
      const waiting = condition(c, "ResolvedRefs")?.status !== "True";
      const imports = interfaces(manifestOf(c)?.imports);
      if (waiting || imports.some((i) => changed.has(i))) queue.add(objectKey(c));
    }
  };
  informers.capsules.addEventHandler({
    onAdd: (obj) => wake(obj),
    onUpdate: (a, b) => {
      // An exporter turning Ready (or not) changes its importers' Ready.
      const readyMoved = condition(a, "Ready")?.status !== condition(b, "Ready")?.status;
      if (exportingPart(a) !== exportingPart(b) || readyMoved) wake(b, a);
      else if (reconciledPart(a) !== reconciledPart(b)) queue.add(objectKey(b));
    },
    onDelete: (obj) => wake(obj),
  });
  for (const inf of informers.children)
    inf.addEventHandler(forOwner(queue, { kind: "Capsule", group: "astrid.dev" }));
}

async function applyIfChanged(client: Client, type: ResourceType, desired: KubeObject) {
  const current = client.get(type, desired.metadata?.namespace, desired.metadata?.name ?? "");
  if (current && isSubset(desired, current)) return;
  await client.apply(type, desired);
}

/** A Capsule whose pods can never start (invalid manifest, refused env, unfetchable package) exports nothing. */
function parsedOrUndefined(obj: KubeObject): GraphCapsule | undefined {
  if (obj.metadata?.deletionTimestamp) return undefined;
  const parsed = manifestOf(obj);
  if (!parsed) return undefined;
  const capsule = obj as unknown as Capsule;
  if (packageSource(capsule).kind === "unsupported") return undefined;
  if (envProblem(capsule, Object.keys(parsed.env))) return undefined;
  return parsed;
}

export function capsuleReconciler(
  client: Client,
  opts: CapsuleReconcilerOptions,
): (key: string) => Promise<Result | undefined> {
  const now = opts.now ?? (() => new Date());
  return async (key) => {
    const { namespace, name } = splitKey(key);
    const capsule = client.get<Capsule & KubeObject>(Capsules, namespace, name);
    if (!capsule) return undefined;
    const ref = {
      apiVersion: capsule.apiVersion,
      kind: capsule.kind,
      metadata: { name, namespace },
    };
    const finalizers = (capsule.metadata.finalizers ?? []) as string[];

    if (capsule.metadata.deletionTimestamp) {
      if (!finalizers.includes(FINALIZER)) return undefined;
      // The Secrets and the other children go with their owner reference, but a NATS user's
      // JWT stays valid wherever its `.creds` were copied to until the account revokes it.
      const uid = capsule.metadata.uid;
      if (opts.natsUsers && typeof uid === "string") {
        const known = capsule.status?.natsUser;
        await opts.natsUsers.revoke(
          namespace ?? "",
          natsSecretName(name),
          uid,
          known ? [known] : [],
        );
      }
      await opts.cleanup?.(capsule);
      opts.identities.forget(capsule);
      // Applying without the finalizer drops it: server-side apply removes what this field
      // manager owned and no longer sends. Children go through their owner references.
      await client.apply(Capsules, ref);
      return undefined;
    }
    if (!finalizers.includes(FINALIZER)) {
      await client.apply(Capsules, {
        ...ref,
        metadata: { ...ref.metadata, finalizers: [FINALIZER] },
      });
    }

    const generation = (capsule.metadata.generation as number | undefined) ?? 0;
    const current = capsule.status?.conditions ?? [];
    const stamp = now().toISOString();
    const writeStatus = async (conds: ConditionInput[], extra: Record<string, unknown> = {}) => {
      const status = {
        observedGeneration: generation,
        conditions: withTimes(conds, current, generation, stamp),
        ...extra,
      };
      if (isSubset(status, capsule.status ?? {})) return;
      await client.applyStatus(Capsules, { ...ref, status });
    };

    let manifest: ReturnType<typeof parseManifest>;
    try {
      manifest = parseManifest(capsule.spec.manifest);
    } catch (err) {
      if (!(err instanceof ManifestError)) throw err;
      await writeStatus([
        { type: "Accepted", status: "False", reason: "InvalidManifest", message: err.message },
        {
          type: "ResolvedRefs",
          status: "Unknown",
          reason: "NotAccepted",
          message: "the manifest is invalid",
        },
        {
          type: "Ready",
          status: "False",
          reason: "NotAccepted",
          message: "the manifest is invalid",
        },
      ]);
      // Retrying cannot fix the text; the user's edit is an event that brings the key back.
      throw new TerminalError(`Capsule ${key}: ${err.message}`);
    }

    const badEnv = envProblem(capsule, Object.keys(manifest.env));
    if (badEnv) {
      await writeStatus([
        { type: "Accepted", status: "False", reason: "InvalidEnv", message: badEnv },
        {
          type: "ResolvedRefs",
          status: "Unknown",
          reason: "NotAccepted",
          message: "spec.env is refused",
        },
        { type: "Ready", status: "False", reason: "NotAccepted", message: "spec.env is refused" },
      ]);
      throw new TerminalError(`Capsule ${key}: ${badEnv}`);
    }

    const source = packageSource(capsule);
    if (source.kind === "unsupported") {
      await writeStatus([
        {
          type: "Accepted",
          status: "False",
          reason: "UnsupportedPackageRef",
          message: source.message,
        },
        {
          type: "ResolvedRefs",
          status: "Unknown",
          reason: "NotAccepted",
          message: "the package cannot be fetched",
        },
        {
          type: "Ready",
          status: "False",
          reason: "NotAccepted",
          message: "the package cannot be fetched",
        },
      ]);
      // Pods whose init container can never succeed would only crash-loop; the user's edit
      // of package.wasmRef is the event that brings the key back.
      throw new TerminalError(`Capsule ${key}: ${source.message}`);
    }

    const others = client
      .list(Capsules, namespace)
      .filter((c) => c.metadata?.name !== name)
      .map(parsedOrUndefined)
      .filter((m): m is GraphCapsule => m !== undefined);
    const refs = resolveImports(manifest, others);

    // What the pods mount must exist before they are scheduled, or they wait in
    // ContainerCreating: the namespace's trust ConfigMap and the capsule's identity Secret.
    await opts.issuers.ensure(namespace ?? "");
    await opts.identities.ensure(capsule);
    let nats: NatsPodUser | undefined;
    if (opts.natsUsers) {
      nats = await opts.natsUsers.ensure({
        namespace: namespace ?? "",
        secretName: natsSecretName(name),
        userName: name,
        permissions: capsuleNatsPermissions(manifest, name),
        owner: capsuleOwnerRef(capsule),
        labels: podLabels(name),
      });
    }
    const bindings = refs.ok ? refs.bindings : {};
    const children = desiredChildren(capsule, manifest.capabilities.net, opts, bindings, nats);
    await applyIfChanged(client, ConfigMaps, children.configMap);
    await applyIfChanged(client, StatefulSets, children.statefulSet);
    await applyIfChanged(client, NetworkPolicies, children.networkPolicy);

    // The children are applied anyway: the pods start by themselves once the Secret appears.
    const missingSecrets = await missingSecretRefs(capsule, opts.secretKeys);

    const sts = client.get(StatefulSets, namespace, name);
    const stsStatus = (sts?.status ?? {}) as { replicas?: number; readyReplicas?: number };
    const ready = stsStatus.readyReplicas ?? 0;
    const want = capsule.spec.replicas;
    const secretsMsg = missingSecrets.join("; ");
    // A capsule whose imports cannot answer cannot either: Ready waits for every exporter it
    // is bound to (the graph has no cycles, so this cannot wait on itself).
    const importsNotReady = Object.entries(bindings)
      .filter(([, exporter]) => {
        const e = client.get(Capsules, namespace, exporter);
        return !e || condition(e, "Ready")?.status !== "True";
      })
      .map(([iface, exporter]) => `${iface} → ${exporter}`);
    const readyCond: ConditionInput =
      missingSecrets.length > 0 && ready < want
        ? { type: "Ready", status: "False", reason: "SecretNotFound", message: secretsMsg }
        : !refs.ok
          ? { type: "Ready", status: "False", reason: "ImportsNotResolved", message: refs.message }
          : importsNotReady.length > 0 && ready >= want
            ? {
                type: "Ready",
                status: "False",
                reason: "ImportsNotReady",
                message: `imports not ready: ${importsNotReady.join(", ")}`,
              }
            : ready >= want
              ? {
                  type: "Ready",
                  status: "True",
                  reason: want === 0 ? "ScaledToZero" : "WorkloadReady",
                  message: `${ready}/${want} replicas ready`,
                }
              : {
                  type: "Ready",
                  status: "False",
                  reason: "WorkloadNotReady",
                  message: `${ready}/${want} replicas ready`,
                };
    await writeStatus(
      [
        { type: "Accepted", status: "True", reason: "Accepted", message: "the manifest is valid" },
        !refs.ok
          ? { type: "ResolvedRefs", status: "False", reason: refs.reason, message: refs.message }
          : missingSecrets.length > 0
            ? {
                type: "ResolvedRefs",
                status: "False",
                reason: "SecretNotFound",
                message: secretsMsg,
              }
            : {
                type: "ResolvedRefs",
                status: "True",
                reason: "Resolved",
                message: "every import has an exporter and every Secret in spec.env exists",
              },
        readyCond,
      ],
      {
        replicas: stsStatus.replicas ?? 0,
        readyReplicas: ready,
        ...(nats ? { natsUser: nats.user } : {}),
      },
    );
    if (missingSecrets.length > 0) return { requeueAfter: opts.missingSecretRequeueMs ?? 10_000 };
    return refs.ok ? undefined : { requeueAfter: opts.unresolvedRequeueMs ?? 30_000 };
  };
}
