/**
 * The operator: reconciles Capsule resources into their workloads. Configured by the
 * environment the Helm chart sets (docs/helm.md): ASTRID_WATCH_NAMESPACES (comma-separated;
 * empty = the whole cluster), ASTRID_LEADER_ELECTION, ASTRID_POD_NAMESPACE, ASTRID_POD_NAME,
 * ASTRID_SIDECAR_IMAGE, ASTRID_BUS_URL, ASTRID_HTTP_HOST / ASTRID_HTTP_PORT (health, metrics),
 * ASTRID_LOG_LEVEL. The cluster credentials are the pod's service account, or KUBECONFIG.
 */
import os from "node:os";
import type { KubeConfig } from "@kubernetes/client-node";
import pino from "pino";
import { Registry } from "prom-client";
import { capsuleReconciler, watchCapsules } from "./capsule/reconciler.js";
import { Capsules, NetworkPolicies, StatefulSets } from "./capsule/resources.js";
import { Controller } from "./runtime/controller.js";
import { Manager } from "./runtime/manager.js";
import { ConfigMaps } from "./runtime/rest.js";
import { WorkQueue } from "./runtime/workqueue.js";

export interface OperatorEnv {
  readonly watchNamespaces: string[];
  readonly leaderElection: boolean;
  readonly podNamespace: string;
  readonly podName: string;
  readonly sidecarImage: string;
  readonly busUrl: string;
  readonly httpHost: string;
  readonly httpPort: number;
  readonly logLevel: string;
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
    httpHost: env.ASTRID_HTTP_HOST ?? "127.0.0.1",
    httpPort: port,
    logLevel: env.ASTRID_LOG_LEVEL ?? "info",
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

export async function startOperator(cfg: OperatorEnv, kubeConfig: KubeConfig) {
  const log = pino({
    level: cfg.logLevel,
    base: { component: "astrid-operator", pod: cfg.podName },
  });
  const manager = new Manager({
    kubeConfig,
    registry: new Registry(),
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
      reconcile: capsuleReconciler(manager.client, {
        sidecarImage: cfg.sidecarImage,
        busUrl: cfg.busUrl,
      }),
    }),
  );
  await manager.start();
  log.info({ namespaces: cfg.watchNamespaces, leaderElection: cfg.leaderElection }, "started");
  return manager;
}
