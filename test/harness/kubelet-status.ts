/**
 * What the kubelet harness knows of a pod's containers, and the pod status it reports from
 * that: phase, the four conditions a StatefulSet controller and kubectl read, and one status
 * per container. Pure: the worker keeps the state, this decides what it means.
 */
import type { Container, ImageEntrypoint } from "./kubelet-pod.js";
import { imageName } from "./kubelet-pod.js";
import type { ContainerProcess } from "./kubelet-process.js";

/** Every pod of this host has the loopback address: its ports are what tell them apart. */
export const HOST_IP = "127.0.0.1";

export const now = (): string => new Date().toISOString();

export type ContainerState =
  | { waiting: { reason: string; message?: string } }
  | { running: { startedAt: string } }
  | {
      terminated: {
        exitCode: number;
        reason: string;
        message?: string;
        startedAt?: string;
        finishedAt: string;
        containerID?: string;
      };
    };

/** One container of a pod: its spec and what the harness last saw of it. */
export interface ContainerRun {
  readonly spec: Container;
  readonly init: boolean;
  /** Undefined when the image is not mapped: it can never start. */
  readonly image: ImageEntrypoint | undefined;
  state: ContainerState;
  lastState: ContainerState | undefined;
  restartCount: number;
  ready: boolean;
  started: boolean;
  /** True once it will not run again (terminated under its restart policy). */
  final: boolean;
  proc: ContainerProcess | undefined;
  containerID: string | undefined;
  logs: string;
}

export interface PodProgress {
  readonly runs: readonly ContainerRun[];
  /** Every init container completed. */
  readonly initialized: boolean;
  /** An init container failed for good (restartPolicy Never). */
  readonly initFailed: boolean;
  readonly startTime: string;
}

export function podPhase(p: PodProgress): "Pending" | "Running" | "Succeeded" | "Failed" {
  const main = p.runs.filter((r) => !r.init);
  if (p.initFailed) return "Failed";
  if (main.every((r) => r.final)) {
    return main.some((r) => "terminated" in r.state && r.state.terminated.exitCode !== 0)
      ? "Failed"
      : "Succeeded";
  }
  return p.initialized && main.some((r) => r.containerID) ? "Running" : "Pending";
}

/** Remembers when each condition last changed, as lastTransitionTime must say. */
export class ConditionClock {
  private readonly last = new Map<string, { status: string; time: string }>();

  condition(type: string, ok: boolean, reason?: string) {
    const status = ok ? "True" : "False";
    const prev = this.last.get(type);
    const time = prev?.status === status ? prev.time : now();
    this.last.set(type, { status, time });
    return { type, status, lastTransitionTime: time, ...(ok || !reason ? {} : { reason }) };
  }
}

function containerStatus(r: ContainerRun) {
  return {
    name: r.spec.name,
    image: r.spec.image,
    imageID: `harness://${imageName(r.spec.image)}`,
    ready: r.ready,
    started: r.started,
    restartCount: r.restartCount,
    state: r.state,
    lastState: r.lastState ?? {},
    ...(r.containerID ? { containerID: r.containerID } : {}),
  };
}

/** The pod's `status` as a kubelet would write it. */
export function podStatus(p: PodProgress, clock: ConditionClock): Record<string, unknown> {
  const phase = podPhase(p);
  const runs = p.runs;
  const main = runs.filter((r) => !r.init);
  const ready = phase === "Running" && main.every((r) => r.ready);
  const notReady =
    phase === "Succeeded" || phase === "Failed" ? "PodCompleted" : "ContainersNotReady";
  return {
    phase,
    hostIP: HOST_IP,
    hostIPs: [{ ip: HOST_IP }],
    podIP: HOST_IP,
    podIPs: [{ ip: HOST_IP }],
    startTime: p.startTime,
    conditions: [
      clock.condition("PodScheduled", true),
      clock.condition("Initialized", p.initialized, "ContainersNotInitialized"),
      clock.condition("ContainersReady", ready, notReady),
      clock.condition("Ready", ready, notReady),
    ],
    initContainerStatuses: runs.filter((r) => r.init).map(containerStatus),
    containerStatuses: main.map(containerStatus),
  };
}
