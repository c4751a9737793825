/**
 * One pod on the kubelet harness's node: its volumes, its init containers in order, then its
 * containers under their restart policy and probes, its status written as things change, and
 * its deletion (SIGTERM, the grace period, SIGKILL, then the object goes).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { type KubeRest, NotFoundError, resourcePath } from "../../operator/runtime/rest.js";
import type { KubeletOptions } from "./kubelet.js";
import {
  containerArgv,
  expandVars,
  type ImageEntrypoint,
  imageName,
  PathMap,
  type Pod,
  Pods,
} from "./kubelet-pod.js";
import {
  ContainerProcess,
  type ProbeContext,
  type ProcessExit,
  sleep,
  watchProbe,
} from "./kubelet-process.js";
import { ConditionClock, type ContainerRun, HOST_IP, now, podStatus } from "./kubelet-status.js";
import { mapMounts, prepareVolumes, resolveEnv } from "./kubelet-volumes.js";
import { freePort } from "./nats-server.js";

const DEFAULT_TERMINATION_PATH = "/dev/termination-log";
/** The API server's limit on a termination message (and on the log tail used instead). */
const MAX_MESSAGE_BYTES = 4096;
const MAX_LOG_CHARS = 1 << 20;

/** What a pod worker needs of its kubelet. */
export interface PodHost {
  readonly rest: KubeRest;
  readonly opts: KubeletOptions;
  readonly dataDir: string;
  claimPath(namespace: string, claim: string): string;
  deletePod(pod: Pod): Promise<void>;
  dropWorker(uid: string): void;
}

/** Runs one pod: volumes, init containers in order, then the containers, and its status. */
export class PodWorker {
  readonly runs = new Map<string, ContainerRun>();
  readonly ports = new Map<string, number>();
  private pod: Pod;
  private readonly dir: string;
  private readonly stopping = new AbortController();
  private terminating = false;
  private initialized = false;
  private initFailed = false;
  private readonly startTime = now();
  private readonly clock = new ConditionClock();
  private writing: Promise<void> | undefined;
  private writeAgain = false;
  private finished: Promise<void> = Promise.resolve();

  constructor(
    private readonly kubelet: PodHost,
    pod: Pod,
  ) {
    this.pod = pod;
    const { namespace, name, uid } = pod.metadata;
    this.dir = path.join(kubelet.dataDir, "pods", `${namespace}_${name}_${uid}`);
    const images = kubelet.opts.images;
    for (const [init, list] of [
      [true, pod.spec.initContainers ?? []],
      [false, pod.spec.containers],
    ] as const) {
      for (const spec of list) {
        const image = images[imageName(spec.image)];
        this.runs.set(spec.name, {
          spec,
          init,
          image,
          state: image
            ? { waiting: { reason: init ? "PodInitializing" : "ContainerCreating" } }
            : {
                waiting: {
                  reason: "ErrImagePull",
                  message: `image "${spec.image}" is not mapped by the kubelet harness (mapped: ${Object.keys(images).join(", ") || "none"}); it cannot pull images`,
                },
              },
          lastState: undefined,
          restartCount: 0,
          ready: false,
          started: false,
          final: false,
          proc: undefined,
          containerID: undefined,
          logs: "",
        });
      }
    }
  }

  private get key(): string {
    return `${this.pod.metadata.namespace}/${this.pod.metadata.name}`;
  }

  update(pod: Pod): void {
    this.pod = pod;
    if (pod.metadata.deletionTimestamp && !this.terminating) void this.terminate();
  }

  async run(): Promise<void> {
    let done!: () => void;
    this.finished = new Promise((r) => {
      done = r;
    });
    try {
      await this.runPod();
    } catch (err) {
      // A harness bug must show, but not as an unhandled rejection that hides which pod.
      process.stderr.write(`kubelet harness: pod ${this.key}: ${String(err)}\n`);
    } finally {
      done();
    }
  }

  private async runPod(): Promise<void> {
    await this.allocatePorts();
    if ([...this.runs.values()].some((r) => !r.image)) {
      // Like a pull that keeps failing: the pod stays Pending, nothing of it starts.
      this.publish();
      return;
    }
    const volumes = await this.untilConfigured("ContainerCreating", () =>
      prepareVolumes(this.kubelet.rest, this.pod, this.dir, (ns, c) =>
        this.kubelet.claimPath(ns, c),
      ),
    );
    if (!volumes) return;
    for (const run of this.runs.values()) {
      if (!run.init) continue;
      const exit = await this.runContainer(run, volumes);
      if (this.terminating) return;
      if (exit.exitCode !== 0) {
        this.initFailed = true;
        this.publish();
        return;
      }
    }
    this.initialized = true;
    this.publish();
    const main = [...this.runs.values()].filter((r) => !r.init);
    await Promise.all(main.map((r) => this.runContainer(r, volumes)));
    this.publish();
  }

  /** Gives each declared port a free loopback port when the image says how to pass it on. */
  private async allocatePorts(): Promise<void> {
    for (const run of this.runs.values()) {
      for (const p of run.spec.ports ?? []) {
        const env = p.name ? run.image?.portEnv?.[p.name] : undefined;
        // Without an env var to pass a new port through, the program binds what it declares.
        const host = env ? await freePort() : p.containerPort;
        if (p.name) this.ports.set(p.name, host);
        this.ports.set(String(p.containerPort), host);
      }
    }
  }

  /**
   * Retries `attempt` every second while it fails — a Secret not created yet starts the pod
   * once it exists; an unsupported volume keeps it waiting — showing why in the waiting
   * state, as a kubelet does. Undefined once the pod is terminating.
   */
  private async untilConfigured<T>(
    reason: string,
    attempt: () => Promise<T>,
    only?: ContainerRun,
  ): Promise<T | undefined> {
    for (;;) {
      if (this.terminating) return undefined;
      try {
        return await attempt();
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        for (const r of only ? [only] : this.runs.values())
          r.state = { waiting: { reason, message } };
        this.publish();
        await sleep(1000, this.stopping.signal);
      }
    }
  }

  /** Runs a container until its restart policy says it is done; the last exit. */
  private async runContainer(
    run: ContainerRun,
    volumes: Map<string, string>,
  ): Promise<ProcessExit> {
    const policy = this.pod.spec.restartPolicy ?? "Always";
    const backoff = this.kubelet.opts.restartBackoff ?? {};
    for (;;) {
      const exit = await this.startOnce(run, volumes);
      if (this.terminating) return exit;
      const restart = run.init
        ? exit.exitCode !== 0 && policy !== "Never"
        : policy === "Always" || (policy === "OnFailure" && exit.exitCode !== 0);
      if (!restart) {
        run.final = true;
        this.publish();
        return exit;
      }
      const delay = Math.min(
        (backoff.initialMs ?? 1000) * 2 ** run.restartCount,
        backoff.maxMs ?? 10_000,
      );
      run.lastState = run.state;
      run.state = {
        waiting: {
          reason: "CrashLoopBackOff",
          message: `back-off ${delay}ms restarting failed container=${run.spec.name} pod=${this.pod.metadata.name}`,
        },
      };
      this.publish();
      await sleep(delay, this.stopping.signal);
      if (this.terminating) return exit;
      run.restartCount++;
    }
  }

  private async startOnce(run: ContainerRun, volumes: Map<string, string>): Promise<ProcessExit> {
    const c = run.spec;
    const image = run.image as ImageEntrypoint;
    const termFile = path.join(this.dir, "termination", c.name);
    const config = await this.untilConfigured(
      "CreateContainerConfigError",
      async () => {
        const paths = new PathMap();
        mapMounts(c, volumes, paths);
        paths.add(c.terminationMessagePath ?? DEFAULT_TERMINATION_PATH, termFile);
        const env = await resolveEnv(this.kubelet.rest, this.pod, c, paths, HOST_IP);
        for (const p of c.ports ?? []) {
          const name = p.name ? image.portEnv?.[p.name] : undefined;
          if (name) env.set(name, String(this.ports.get(p.name as string)));
        }
        const argv = containerArgv(c, image).map((a) => paths.rewrite(expandVars(a, env)));
        const mapped = c.workingDir ? paths.rewrite(c.workingDir) : undefined;
        const cwd = mapped && mapped !== c.workingDir ? mapped : image.cwd;
        // Only what a container would have: the image's env and the pod's; PATH and HOME so
        // the entrypoint (node) is found as it is in the image.
        const base: Record<string, string> = {
          PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
          HOME: process.env.HOME ?? "/root",
          HOSTNAME: this.pod.metadata.name,
        };
        return { argv, cwd, env: { ...base, ...image.env, ...Object.fromEntries(env) } };
      },
      run,
    );
    // Deleted while its config was being read: it must not start after the stop went out.
    if (!config || this.terminating) return { exitCode: 137 };

    mkdirSync(path.dirname(termFile), { recursive: true });
    writeFileSync(termFile, "");
    const startedAt = now();
    if (run.restartCount > 0 || run.logs) run.logs += `\n--- restart ${run.restartCount}\n`;
    let proc: ContainerProcess;
    try {
      proc = ContainerProcess.start(config, (chunk) => {
        run.logs = (run.logs + chunk).slice(-MAX_LOG_CHARS);
      });
    } catch (err) {
      const exit = { exitCode: 128, startError: err instanceof Error ? err.message : String(err) };
      run.state = {
        terminated: {
          exitCode: 128,
          reason: "StartError",
          message: exit.startError,
          finishedAt: now(),
        },
      };
      this.publish();
      return exit;
    }
    run.proc = proc;
    run.containerID = `harness://${proc.pid ?? 0}`;
    run.state = { running: { startedAt } };
    run.started = !c.startupProbe;
    run.ready = !c.readinessProbe && !c.startupProbe && !run.init;
    this.publish();

    const probes = new AbortController();
    if (!run.init) void this.probe(run, proc, config, probes.signal);
    const exit = await proc.exited;
    probes.abort();
    run.proc = undefined;
    run.ready = false;
    run.started = false;
    run.state = {
      terminated: {
        exitCode: exit.exitCode,
        reason: exit.startError ? "StartError" : exit.exitCode === 0 ? "Completed" : "Error",
        ...this.terminationMessage(run, termFile, exit),
        startedAt,
        finishedAt: now(),
        containerID: run.containerID,
      },
    };
    this.publish();
    return exit;
  }

  private terminationMessage(
    run: ContainerRun,
    termFile: string,
    exit: ProcessExit,
  ): { message?: string } {
    if (exit.startError) return { message: exit.startError };
    let text = "";
    try {
      text = readFileSync(termFile).subarray(0, MAX_MESSAGE_BYTES).toString("utf8");
    } catch {
      // The program removed it: no message.
    }
    if (
      !text &&
      exit.exitCode !== 0 &&
      run.spec.terminationMessagePolicy === "FallbackToLogsOnError"
    ) {
      text = Buffer.from(run.logs.split("\n").slice(-80).join("\n"))
        .subarray(-2048)
        .toString("utf8");
    }
    return text ? { message: text } : {};
  }

  /** Startup, then readiness and liveness probes, while this process runs. */
  private async probe(
    run: ContainerRun,
    proc: ContainerProcess,
    config: { cwd: string; env: Record<string, string> },
    signal: AbortSignal,
  ): Promise<void> {
    const c = run.spec;
    const grace = (this.pod.spec.terminationGracePeriodSeconds ?? 30) * 1000;
    const maxStepMs = this.kubelet.opts.maxProbePeriodMs ?? 1000;
    const ctx: ProbeContext = {
      hostPort: (port) =>
        this.ports.get(String(port)) ?? (typeof port === "number" ? port : undefined),
      exec: (command) => ({ argv: command, cwd: config.cwd, env: config.env }),
    };
    const kill = (why: string) => {
      run.logs += `\n--- kubelet harness: ${why}; restarting\n`;
      void proc.stop(grace);
    };
    if (c.startupProbe) {
      const ok = await watchProbe(c.startupProbe, ctx, signal, { untilSuccess: true, maxStepMs });
      if (!ok) return kill("startup probe failed");
      run.started = true;
      if (!c.readinessProbe) run.ready = true;
      this.publish();
    }
    const loops: Promise<unknown>[] = [];
    if (c.readinessProbe) {
      loops.push(
        watchProbe(c.readinessProbe, ctx, signal, {
          maxStepMs,
          onResult: (ok) => {
            if (run.ready === ok) return;
            run.ready = ok;
            this.publish();
          },
        }),
      );
    }
    if (c.livenessProbe) {
      loops.push(
        watchProbe(c.livenessProbe, ctx, signal, { untilFailure: true, maxStepMs }).then(
          (failed) => {
            if (failed === false) kill("liveness probe failed");
          },
        ),
      );
    }
    await Promise.all(loops);
  }

  /** The pod's deletion: SIGTERM, the grace period, SIGKILL, then the pod object goes. */
  private async terminate(): Promise<void> {
    this.terminating = true;
    this.stopping.abort();
    const { uid, deletionGracePeriodSeconds } = this.pod.metadata;
    const grace =
      (deletionGracePeriodSeconds ?? this.pod.spec.terminationGracePeriodSeconds ?? 30) * 1000;
    await Promise.all([...this.runs.values()].map((r) => r.proc?.stop(grace)));
    await this.finished;
    await this.writing;
    await this.kubelet.deletePod(this.pod);
    this.kubelet.dropWorker(uid);
  }

  /** The pod object is gone (or the kubelet stops): kill everything now, report nothing. */
  async abandon(): Promise<void> {
    this.terminating = true;
    this.stopping.abort();
    await Promise.all([...this.runs.values()].map((r) => r.proc?.stop(0)));
    await this.finished;
  }

  killNow(): void {
    for (const r of this.runs.values()) r.proc?.killGroup();
  }

  /** Writes the status soon; writes coalesce, so the last state always lands. */
  private publish(): void {
    if (this.terminating) return;
    if (this.writing) {
      this.writeAgain = true;
      return;
    }
    this.writing = this.writeStatus().finally(() => {
      this.writing = undefined;
    });
  }

  private async writeStatus(): Promise<void> {
    do {
      this.writeAgain = false;
      const { namespace, name } = this.pod.metadata;
      try {
        await this.kubelet.rest.request("PATCH", resourcePath(Pods, namespace, name, "status"), {
          contentType: "application/merge-patch+json",
          body: {
            metadata: { uid: this.pod.metadata.uid },
            status: podStatus(
              {
                runs: [...this.runs.values()],
                initialized: this.initialized,
                initFailed: this.initFailed,
                startTime: this.startTime,
              },
              this.clock,
            ),
          },
        });
      } catch (err) {
        if (err instanceof NotFoundError || this.terminating) return;
        // A conflict or a hiccup of the API server: try again with the state as it is then.
        process.stderr.write(`kubelet harness: status of ${this.key}: ${String(err)}\n`);
        this.writeAgain = true;
        await sleep(500, this.stopping.signal);
      }
    } while (this.writeAgain && !this.terminating);
  }
}
