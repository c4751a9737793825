/**
 * The operator: reconciles Capsules into their workloads, AgentSessions into session pods, and
 * answers approval requests from the bus with Approval objects. Configured by the environment
 * the Helm chart sets (docs/helm.md): ASTRID_WATCH_NAMESPACES (comma-separated; empty = the
 * whole cluster), ASTRID_LEADER_ELECTION, ASTRID_POD_NAMESPACE, ASTRID_POD_NAME,
 * ASTRID_SIDECAR_IMAGE, ASTRID_BUS_URL, ASTRID_BUS_CREDS_FILE (optional: the operator's own NATS
 * credentials), ASTRID_HTTP_HOST / ASTRID_HTTP_PORT (health, metrics), ASTRID_LOG_LEVEL,
 * ASTRID_NATS_ACCOUNT / _ACCOUNT_SEED_FILE / _OPERATOR_SEED_FILE / _SYSTEM_CREDS_FILE
 * (optional, all or none: per-capsule NATS users, operator/nats/config.ts). The
 * cluster credentials are the pod's service account, or KUBECONFIG.
 */
import os from "node:os";
import type { KubeConfig } from "@kubernetes/client-node";
import pino from "pino";
import { collectDefaultMetrics, Registry } from "prom-client";
import { ApprovalBridge } from "./approval/bridge.js";
import { ApprovalController, approvalReconciler } from "./approval/reconciler.js";
import { capsuleContainer, capsulePodParts } from "./capsule/desired.js";
import { CapsuleIdentities } from "./capsule/identity-secret.js";
import { capsuleReconciler, watchCapsules } from "./capsule/reconciler.js";
import { Capsules, NetworkPolicies, StatefulSets } from "./capsule/resources.js";
import { secretKeysFrom } from "./capsule/secret-refs.js";
import { IssuerStore } from "./identity/issuer.js";
import { type NatsAccountEnv, natsAccountEnv, openNatsUsers } from "./nats/config.js";
import type { NatsPodUser } from "./nats/names.js";
import { Controller } from "./runtime/controller.js";
import { forObject } from "./runtime/handlers.js";
import { Manager } from "./runtime/manager.js";
import { ConfigMaps, Secrets } from "./runtime/rest.js";
import { WorkQueue } from "./runtime/workqueue.js";
import { SessionMetrics } from "./session/metrics.js";
import { NatsLink } from "./session/nats-link.js";
import { sessionReconciler, watchSessions } from "./session/reconciler.js";
import { AgentSessions, Approvals, PersistentVolumeClaims, Pods } from "./session/resources.js";
import { KvTokenRevoker } from "./session/revoker.js";

export interface OperatorEnv {
  readonly watchNamespaces: string[];
  readonly leaderElection: boolean;
  readonly podNamespace: string;
  readonly podName: string;
  readonly sidecarImage: string;
  readonly busUrl: string;
  readonly busCredsFile: string | undefined;
  readonly httpHost: string;
  readonly httpPort: number;
  readonly logLevel: string;
  /** Per-capsule NATS users; undefined = off (sidecars get no `.creds`). */
  readonly natsAccount?: NatsAccountEnv | undefined;
}

/** Reads the chart's environment; every problem is named at once. */
export function operatorEnv(env: NodeJS.ProcessEnv): OperatorEnv {
  const problems: string[] = [];
  const need = (name: string): string => {
    const v = env[name];
    if (!v) problems.push(`${name} is required`);
    return v ?? "";
  };
  const port = Number(env.ASTRID_HTTP_PORT ?? "9464");
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    problems.push(`ASTRID_HTTP_PORT: expected a port 0-65535, got "${env.ASTRID_HTTP_PORT}"`);
  }
  const leader = env.ASTRID_LEADER_ELECTION ?? "true";
  if (leader !== "true" && leader !== "false") {
    problems.push(`ASTRID_LEADER_ELECTION: expected true or false, got "${leader}"`);
  }
  const out: OperatorEnv = {
    watchNamespaces: (env.ASTRID_WATCH_NAMESPACES ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    leaderElection: leader === "true",
    podNamespace: env.ASTRID_POD_NAMESPACE ?? "default",
    podName: env.ASTRID_POD_NAME ?? os.hostname(),
    sidecarImage: need("ASTRID_SIDECAR_IMAGE"),
    busUrl: need("ASTRID_BUS_URL"),
    busCredsFile: env.ASTRID_BUS_CREDS_FILE || undefined,
    httpHost: env.ASTRID_HTTP_HOST ?? "127.0.0.1",
    httpPort: port,
    logLevel: env.ASTRID_LOG_LEVEL ?? "info",
    natsAccount: natsAccountEnv(env, problems),
  };
  if (out.watchNamespaces.length > 1) {
    problems.push(
      "ASTRID_WATCH_NAMESPACES: one namespace or all are supported by this version (several need one informer set each)",
    );
  }
  if (problems.length > 0) throw new OperatorConfigError(problems.join("\n"));
  return out;
}

export class OperatorConfigError extends Error {
  override readonly name = "OperatorConfigError";
}

export interface OperatorTuning {
  /** ASTRID_TASK_TIMEOUT_MS of session pods; default 600000. */
  taskTimeoutMs?: number;
  /** How long one token revocation may wait for NATS, ms; default 5000. */
  revokeTimeoutMs?: number;
}

export async function startOperator(
  cfg: OperatorEnv,
  kubeConfig: KubeConfig,
  tuning: OperatorTuning = {},
) {
  const log = pino({
    level: cfg.logLevel,
    base: { component: "astrid-operator", pod: cfg.podName },
  });
  const registry = new Registry();
  // RSS, heap, event-loop lag and GC of the operator itself (docs/operator.md).
  collectDefaultMetrics({ register: registry, prefix: "astrid_operator_" });
  const manager = new Manager({
    kubeConfig,
    registry,
    healthPort: cfg.httpPort,
    host: cfg.httpHost,
    log,
    ...(cfg.watchNamespaces[0] ? { informerDefaults: { namespace: cfg.watchNamespaces[0] } } : {}),
    ...(cfg.leaderElection
      ? {
          leaderElection: {
            namespace: cfg.podNamespace,
            name: "astrid-operator",
            identity: cfg.podName,
          },
        }
      : {}),
  });
  const issuers = new IssuerStore(manager.rest);
  const workload = { sidecarImage: cfg.sidecarImage, busUrl: cfg.busUrl };
  const nats = cfg.natsAccount
    ? await openNatsUsers(cfg.natsAccount, manager.rest, cfg.busUrl)
    : undefined;

  const queue = new WorkQueue({ name: "capsule" });
  watchCapsules(
    {
      capsules: manager.informer(Capsules),
      children: [
        manager.informer(ConfigMaps),
        manager.informer(StatefulSets),
        manager.informer(NetworkPolicies),
      ],
    },
    queue,
  );
  manager.addController(
    new Controller({
      name: "capsule",
      queue,
      workers: 2,
      log,
      registry: manager.registry,
      reconcile: capsuleReconciler(manager.client, {
        ...workload,
        issuers,
        identities: new CapsuleIdentities(manager.rest),
        secretKeys: secretKeysFrom(manager.rest),
        ...(nats ? { natsUsers: nats.users } : {}),
      }),
    }),
  );

  // One NATS connection for the approval bridge and token revocation, opened on first use: an
  // operator started while NATS is down still reconciles; what needs NATS fails closed.
  const link = new NatsLink({
    servers: cfg.busUrl,
    ...(cfg.busCredsFile ? { credsFile: cfg.busCredsFile } : {}),
    name: `astrid-operator/${cfg.podName}`,
  });

  const sessionQueue = new WorkQueue({ name: "agentsession" });
  watchSessions(
    {
      sessions: manager.informer(AgentSessions),
      capsules: manager.informer(Capsules),
      approvals: manager.informer(Approvals),
      children: [
        manager.informer(Pods),
        manager.informer(PersistentVolumeClaims),
        manager.informer(Secrets),
      ],
    },
    sessionQueue,
  );
  manager.addController(
    new Controller({
      name: "agentsession",
      queue: sessionQueue,
      workers: 2,
      log,
      registry: manager.registry,
      reconcile: sessionReconciler(manager.client, {
        sidecarImage: cfg.sidecarImage,
        ...(tuning.taskTimeoutMs !== undefined ? { taskTimeoutMs: tuning.taskTimeoutMs } : {}),
        issuer: issuers,
        revoker: new KvTokenRevoker(link, { timeoutMs: tuning.revokeTimeoutMs ?? 5000 }),
        // The session pod's own NATS user (orchestrator ACL + its prompt subject).
        podParts: (capsule, bindings, natsUser?: NatsPodUser) =>
          capsulePodParts(capsule, bindings, workload, natsUser),
        ...(nats ? { natsUsers: nats.users } : {}),
        capsuleContainer,
        rest: manager.rest,
        metrics: new SessionMetrics(manager.registry),
      }),
    }),
  );

  const approvalQueue = new WorkQueue({ name: "approval" });
  manager.informer(Approvals).addEventHandler(forObject(approvalQueue));
  const bridge = new ApprovalBridge({
    link,
    client: manager.client,
    log: log.child({ component: "approval-bridge" }),
    onExpired: (key) => approvalQueue.add(key),
  });
  manager.addController(
    new ApprovalController(
      {
        name: "approval",
        queue: approvalQueue,
        log,
        registry: manager.registry,
        reconcile: approvalReconciler(manager.client, bridge, { log }),
      },
      bridge,
    ),
  );

  await manager.start();
  log.info({ namespaces: cfg.watchNamespaces, leaderElection: cfg.leaderElection }, "started");
  return {
    manager,
    close: async () => {
      await link.close();
      await nats?.close();
    },
  };
}
