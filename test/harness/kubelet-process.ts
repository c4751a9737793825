/**
 * A container of the kubelet harness is a plain local process group: started with the argv,
 * environment and working directory the pod asked for, stopped the kubelet way (SIGTERM, the
 * grace period, then SIGKILL), and probed over loopback.
 */
import { type ChildProcess, spawn } from "node:child_process";
import net from "node:net";
import os from "node:os";
import type { Probe } from "./kubelet-pod.js";

export interface ProcessExit {
  /** The exit code, or 128 + the signal number when a signal ended it (as a container runtime reports). */
  readonly exitCode: number;
  /** Set when the process could not be started at all (e.g. the command does not exist). */
  readonly startError?: string;
}

export interface ProcessSpec {
  readonly argv: readonly string[];
  readonly cwd: string;
  readonly env: Readonly<Record<string, string>>;
}

export class ContainerProcess {
  readonly exited: Promise<ProcessExit>;
  private exitedNow = false;

  private constructor(private readonly proc: ChildProcess) {
    this.exited = new Promise<ProcessExit>((resolve) => {
      proc.once("error", (err) => {
        this.exitedNow = true;
        resolve({ exitCode: 128, startError: err.message });
      });
      proc.once("exit", (code, signal) => {
        this.exitedNow = true;
        const signo = signal ? (os.constants.signals[signal] ?? 0) : 0;
        resolve({ exitCode: code ?? 128 + signo });
      });
    });
  }

  static start(spec: ProcessSpec, onOutput: (chunk: string) => void): ContainerProcess {
    const [cmd, ...args] = spec.argv;
    if (!cmd) throw new Error("container has no command: neither the pod nor the image sets one");
    const proc = spawn(cmd, args, {
      cwd: spec.cwd,
      env: { ...spec.env },
      stdio: ["ignore", "pipe", "pipe"],
      // Its own process group, so a stop reaches what the entrypoint started too (sh -c …),
      // as stopping a container's PID namespace would.
      detached: true,
    });
    proc.stdout?.setEncoding("utf8").on("data", onOutput);
    proc.stderr?.setEncoding("utf8").on("data", onOutput);
    return new ContainerProcess(proc);
  }

  get running(): boolean {
    return !this.exitedNow;
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  private signal(sig: NodeJS.Signals): void {
    if (!this.running || this.proc.pid === undefined) return;
    try {
      process.kill(-this.proc.pid, sig);
    } catch {
      // ESRCH: the group is already gone.
    }
  }

  /** SIGTERM, then SIGKILL once `graceMs` has passed; resolves when the process has exited. */
  async stop(graceMs: number): Promise<ProcessExit> {
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    const exit = await this.exited;
    clearTimeout(timer);
    // Whatever the entrypoint left behind in its group goes too.
    this.killGroup();
    return exit;
  }

  /** SIGKILL to the whole group at once; safe to call at any time, even from an exit hook. */
  killGroup(): void {
    if (this.proc.pid === undefined) return;
    try {
      process.kill(-this.proc.pid, "SIGKILL");
    } catch {
      // ESRCH: nothing left.
    }
  }
}

export interface ProbeContext {
  /** Host port for a probe's `port` (a container port name or number). */
  hostPort(port: number | string): number | undefined;
  /** How to run an exec probe's command: the container's env and working directory. */
  exec(command: readonly string[]): ProcessSpec;
}

/** One probe attempt. A probe kind the harness does not emulate (grpc) fails: fail closed. */
export async function probeOnce(probe: Probe, ctx: ProbeContext): Promise<boolean> {
  const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
  if (probe.httpGet) {
    const port = ctx.hostPort(probe.httpGet.port);
    if (port === undefined) return false;
    const p = probe.httpGet.path ?? "/";
    try {
      const res = await fetch(`http://127.0.0.1:${port}${p.startsWith("/") ? p : `/${p}`}`, {
        signal: AbortSignal.timeout(timeoutMs),
      });
      await res.arrayBuffer();
      return res.status >= 200 && res.status < 400;
    } catch {
      return false;
    }
  }
  if (probe.tcpSocket) {
    const port = ctx.hostPort(probe.tcpSocket.port);
    if (port === undefined) return false;
    return new Promise((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port, timeout: timeoutMs });
      const done = (ok: boolean) => {
        s.destroy();
        resolve(ok);
      };
      s.once("connect", () => done(true));
      s.once("error", () => done(false));
      s.once("timeout", () => done(false));
    });
  }
  if (probe.exec?.command?.length) {
    const proc = ContainerProcess.start(ctx.exec(probe.exec.command), () => {});
    const timer = setTimeout(() => proc.killGroup(), timeoutMs);
    const exit = await proc.exited;
    clearTimeout(timer);
    return exit.exitCode === 0;
  }
  return false;
}

/** Waits `ms`, or less when `signal` aborts. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

export interface ProbeWatch {
  /** Resolve true at the first success (a startup probe). */
  untilSuccess?: boolean;
  /** Resolve false at the first failure (a liveness probe). */
  untilFailure?: boolean;
  /** Every success, and every failure that counts (a readiness probe). */
  onResult?: (ok: boolean) => void;
  /** Probe at most this far apart, whatever `periodSeconds` says. */
  maxStepMs: number;
}

/**
 * Probes until `signal` aborts. A failure counts only after `failureThreshold` attempts that
 * together span `failureThreshold - 1` real periods, so a shortened period never gives up on
 * a slow starter sooner than a kubelet would. Resolves undefined when aborted.
 */
export async function watchProbe(
  probe: Probe,
  ctx: ProbeContext,
  signal: AbortSignal,
  watch: ProbeWatch,
): Promise<boolean | undefined> {
  const periodMs = (probe.periodSeconds ?? 10) * 1000;
  const threshold = probe.failureThreshold ?? 3;
  const step = Math.min(periodMs, watch.maxStepMs);
  await sleep((probe.initialDelaySeconds ?? 0) * 1000, signal);
  let failures = 0;
  let failingSince = 0;
  while (!signal.aborted) {
    const ok = await probeOnce(probe, ctx);
    if (signal.aborted) return undefined;
    if (ok) {
      failures = 0;
      watch.onResult?.(true);
      if (watch.untilSuccess) return true;
    } else {
      if (failures++ === 0) failingSince = Date.now();
      if (failures >= threshold && Date.now() - failingSince >= (threshold - 1) * periodMs) {
        watch.onResult?.(false);
        if (watch.untilFailure || watch.untilSuccess) return false;
      }
    }
    await sleep(step, signal);
  }
  return undefined;
}
