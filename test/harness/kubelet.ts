/**
 * Plays kubelet (and scheduler) on the test control plane for the project's own images, with
 * no container runtime: it registers a Node, binds every unscheduled Pod to it, and runs each
 * container as a local process group — the image mapped to a local entrypoint, volumes to
 * host directories, container paths in env and args to those directories, declared ports to
 * free loopback ports — and reports what happens through pods/status as a kubelet would, so
 * the real StatefulSet controller, garbage collector and the operator see real Pod states.
 *
 * Not emulated: isolation of any kind (processes share the host, its network and its files),
 * cgroups and resource limits, network policies, Services/DNS, image pulls, service-account
 * tokens, projected/downwardAPI/hostPath volumes, grpc probes, native sidecar init containers.
 */
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { Informer } from "../../operator/runtime/cache.js";
import {
  ConflictError,
  KubeRest,
  NotFoundError,
  type ResourceType,
  resourcePath,
} from "../../operator/runtime/rest.js";
import type { ControlPlaneHandle } from "./control-plane.js";
import { type ImageEntrypoint, type Pod, Pods } from "./kubelet-pod.js";
import { HOST_IP, now } from "./kubelet-status.js";
import { type PodHost, PodWorker } from "./kubelet-worker.js";

export type { ImageEntrypoint } from "./kubelet-pod.js";

const Nodes: ResourceType = { apiVersion: "v1", kind: "Node", plural: "nodes", namespaced: false };

export interface KubeletOptions {
  /** Image name (without tag/digest) → what runs for it. An unmapped image never starts. */
  images: Record<string, ImageEntrypoint>;
  /** The Node's name; `astrid-harness` by default. */
  nodeName?: string;
  /** Where pod directories and claims live; a temp dir (removed by stop()) by default. */
  dataDir?: string;
  /** Restart back-off, doubling per restart: 1 s up to 10 s by default (a kubelet: 10 s to 5 min). */
  restartBackoff?: { initialMs?: number; maxMs?: number };
  /**
   * Probes run at most this far apart (default 1000 ms), so a test need not wait a probe's
   * real `periodSeconds`; a failure still has to last `failureThreshold` real periods.
   */
  maxProbePeriodMs?: number;
}

export class Kubelet implements PodHost {
  private readonly informer: Informer<Pod>;
  private readonly workers = new Map<string, PodWorker>();
  /** `namespace/name` → the latest worker of that name, kept after deletion for logs(). */
  private readonly byName = new Map<string, PodWorker>();
  private readonly binding = new Set<string>();
  private readonly ownsDataDir: boolean;
  private readonly exitHook = () => {
    // A test process that dies without stop() must not leave pod processes behind.
    for (const w of this.workers.values()) w.killNow();
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  };
  readonly nodeName: string;
  readonly dataDir: string;

  constructor(
    readonly rest: KubeRest,
    readonly opts: KubeletOptions,
  ) {
    this.nodeName = opts.nodeName ?? "astrid-harness";
    this.ownsDataDir = opts.dataDir === undefined;
    this.dataDir = opts.dataDir ?? mkdtempSync(path.join(os.tmpdir(), "astrid-kubelet-"));
    // A periodic resync re-offers every pod, which retries a binding that failed.
    this.informer = new Informer<Pod>(rest, Pods, { resyncMs: 2000 });
    this.informer.addEventHandler({
      onAdd: (p) => this.handle(p),
      onUpdate: (_, p) => this.handle(p),
      onDelete: (p) => this.forget(p),
    });
  }

  async start(): Promise<void> {
    await this.registerNode();
    process.on("exit", this.exitHook);
    this.informer.start();
    await this.informer.waitForSync();
  }

  /** Host directory of a PersistentVolumeClaim; it outlives the pods that mount the claim. */
  claimPath(namespace: string, claim: string): string {
    return path.join(this.dataDir, "claims", namespace, claim);
  }

  /** The loopback port a pod's declared container port (by name or number) is reachable on. */
  hostPort(namespace: string, pod: string, port: string | number): number {
    const w = this.byName.get(`${namespace}/${pod}`);
    if (!w) throw new Error(`pod ${namespace}/${pod} is not running on node ${this.nodeName}`);
    const p = w.ports.get(String(port));
    if (p === undefined) {
      throw new Error(
        `pod ${namespace}/${pod} has no port "${port}" (declared: ${[...w.ports.keys()].join(", ") || "none"})`,
      );
    }
    return p;
  }

  /** stdout and stderr of a container, every run of it, in order. */
  logs(namespace: string, pod: string, container: string): string {
    const w = this.byName.get(`${namespace}/${pod}`);
    const run = w?.runs.get(container);
    if (!run) throw new Error(`no container "${container}" of pod ${namespace}/${pod} ran here`);
    return run.logs;
  }

  /** Stops watching, kills every pod process at once, and removes its own temp directory. */
  async stop(): Promise<void> {
    await this.informer.stop();
    await Promise.all([...this.workers.values()].map((w) => w.abandon()));
    this.workers.clear();
    process.off("exit", this.exitHook);
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  private async registerNode(): Promise<void> {
    try {
      await this.rest.request("POST", resourcePath(Nodes), {
        body: {
          apiVersion: "v1",
          kind: "Node",
          metadata: {
            name: this.nodeName,
            labels: { "kubernetes.io/hostname": this.nodeName, "kubernetes.io/os": "linux" },
          },
        },
      });
    } catch (err) {
      if (!(err instanceof ConflictError)) throw err;
    }
    const t = now();
    const resources = { cpu: String(os.availableParallelism()), memory: "8Gi", pods: "110" };
    await this.rest.request("PATCH", resourcePath(Nodes, undefined, this.nodeName, "status"), {
      contentType: "application/merge-patch+json",
      body: {
        status: {
          conditions: [
            {
              type: "Ready",
              status: "True",
              reason: "KubeletReady",
              message: "kubelet harness is posting ready status",
              lastHeartbeatTime: t,
              lastTransitionTime: t,
            },
          ],
          addresses: [
            { type: "InternalIP", address: HOST_IP },
            { type: "Hostname", address: this.nodeName },
          ],
          capacity: resources,
          allocatable: resources,
          // What `kubectl get nodes -o wide` shows: say plainly that no container runtime runs.
          nodeInfo: {
            machineID: "",
            systemUUID: "",
            bootID: "",
            kernelVersion: os.release(),
            osImage: `${os.type()} (kubelet harness)`,
            containerRuntimeVersion: "astrid-kubelet-harness://local-processes",
            kubeletVersion: "astrid-kubelet-harness",
            kubeProxyVersion: "",
            operatingSystem: "linux",
            architecture: process.arch === "x64" ? "amd64" : process.arch,
          },
        },
      },
    });
  }

  private handle(pod: Pod): void {
    const uid = pod.metadata.uid;
    if (!pod.spec.nodeName) {
      if (!pod.metadata.deletionTimestamp) void this.bind(pod);
      return;
    }
    if (pod.spec.nodeName !== this.nodeName) return;
    let w = this.workers.get(uid);
    if (!w && (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed")) {
      // Finished under an earlier kubelet: a kubelet never runs a terminal pod again.
      if (pod.metadata.deletionTimestamp) void this.deletePod(pod);
      return;
    }
    if (!w) {
      w = new PodWorker(this, pod);
      this.workers.set(uid, w);
      this.byName.set(`${pod.metadata.namespace}/${pod.metadata.name}`, w);
      void w.run();
    }
    w.update(pod);
  }

  /** The scheduler's one decision: this node. */
  private async bind(pod: Pod): Promise<void> {
    const { namespace, name, uid } = pod.metadata;
    if (this.binding.has(uid)) return;
    this.binding.add(uid);
    try {
      await this.rest.request("POST", resourcePath(Pods, namespace, name, "binding"), {
        body: {
          apiVersion: "v1",
          kind: "Binding",
          metadata: { name, uid },
          target: { apiVersion: "v1", kind: "Node", name: this.nodeName },
        },
      });
    } catch {
      // Already bound, or gone; the next resync offers it again if it still needs a node.
    } finally {
      this.binding.delete(uid);
    }
  }

  private forget(pod: Pod): void {
    const w = this.workers.get(pod.metadata.uid);
    if (!w) return;
    this.workers.delete(pod.metadata.uid);
    void w.abandon();
  }

  /** Removes the pod object once nothing of it runs: grace 0, and only this very pod (uid). */
  async deletePod(pod: Pod): Promise<void> {
    const { namespace, name, uid } = pod.metadata;
    try {
      await this.rest.request("DELETE", resourcePath(Pods, namespace, name), {
        body: {
          apiVersion: "v1",
          kind: "DeleteOptions",
          gracePeriodSeconds: 0,
          preconditions: { uid },
        },
      });
    } catch (err) {
      // Gone already, or a new pod of the same name (uid precondition): nothing of ours left.
      if (!(err instanceof NotFoundError) && !(err instanceof ConflictError)) {
        process.stderr.write(`kubelet harness: deleting ${namespace}/${name}: ${String(err)}\n`);
      }
    }
  }

  /** Called by a worker once it has deleted its pod. */
  dropWorker(uid: string): void {
    this.workers.delete(uid);
  }
}

/** Registers a Node on the control plane and starts running the pods bound to it. */
export async function startKubelet(
  cp: Pick<ControlPlaneHandle, "kubeconfigPath">,
  opts: KubeletOptions,
): Promise<Kubelet> {
  const kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  const kubelet = new Kubelet(new KubeRest(kc), opts);
  await kubelet.start();
  return kubelet;
}
