/**
 * The sidecar process's life: start, serve probes, and on SIGTERM drain before exiting.
 *
 * Kubernetes sends SIGTERM and, terminationGracePeriodSeconds later, SIGKILL. Between the two
 * the sidecar stops taking new calls (readyz turns 503 at once), lets the calls in flight
 * finish so their audit entries and budget settlements are written, then closes. A call cut
 * off mid-way would leave a reservation unsettled and an audit entry missing.
 *
 * Exit codes: 0 clean stop (also after a drain that hit its bound, which is logged) or a task
 * answered, 1 start failed, a task failed, or drain/close failed, 70 uncaught exception (after a drain attempt),
 * 130 a second signal while draining.
 */

import type { SidecarHealth, SidecarHttp } from "./http.js";
import { type MetricsSource, startSidecarHttp } from "./http.js";
import type { SidecarLogger } from "./log.js";

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
/** EX_SOFTWARE from sysexits.h: an internal error. */
export const EXIT_UNCAUGHT = 70;
/** 128 + SIGINT: the operator insisted. */
export const EXIT_SECOND_SIGNAL = 130;

/** What the process shell needs of the sidecar core. */
export interface Drainable {
  /** Ready to take calls (bus connected, engine up). Read on every /readyz. */
  ready(): boolean;
  /** Stop accepting, let in-flight calls finish, flush the audit chain. */
  drain(): Promise<void>;
  /** Release everything (bus, engine, files). Called after drain, even one that timed out. */
  close(): Promise<void>;
  /** The calls still running, for the log line written when the drain bound hits. */
  inFlight?(): readonly unknown[];
  /**
   * A one-shot job (task mode) run once started; its result is the exit code, after which the
   * process drains and exits as on a signal. A signal first wins: the job is not awaited.
   */
  task?(): Promise<number>;
}

export interface StartContext {
  /** The probe/metrics server, already listening (undefined when none was asked for). */
  readonly http?: SidecarHttp;
}

export interface RunUntilSignalOptions {
  readonly start: (ctx: StartContext) => Promise<Drainable>;
  readonly logger: SidecarLogger;
  readonly drainTimeoutMs: number;
  /** Serve /healthz, /readyz and /metrics; started before `start` so probes answer early. */
  readonly http?: {
    readonly host?: string;
    readonly port: number;
    readonly metrics: MetricsSource;
  };
  /** Default process.exit; an embedding (tests, a daemon) may pass its own. */
  readonly exit?: (code: number) => void;
}

type State = "starting" | "running" | "draining";

type Bounded<T> = { readonly done: true; readonly value: T } | { readonly done: false };

async function within<T>(p: Promise<T>, ms: number): Promise<Bounded<T>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<Bounded<T>>((resolve) => {
    timer = setTimeout(() => resolve({ done: false }), Math.max(0, ms));
  });
  try {
    return await Promise.race([p.then((value) => ({ done: true as const, value })), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Runs the sidecar until SIGTERM/SIGINT, then drains and exits. Never resolves under the
 * default `exit`; with an injected one it resolves after calling it.
 */
export async function runUntilSignal(opts: RunUntilSignalOptions): Promise<void> {
  const { logger, drainTimeoutMs } = opts;
  let state: State = "starting";
  let fatal = false;
  let drainable: Drainable | undefined;
  let http: SidecarHttp | undefined;
  let exited = false;
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => {
    finish = resolve;
  });

  const exit = (code: number): void => {
    if (exited) return;
    exited = true;
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
    process.off("uncaughtException", onFatal);
    process.off("unhandledRejection", onFatal);
    logger.info({ exitCode: code }, "exiting");
    logger.flush();
    (opts.exit ?? process.exit)(code);
    finish();
  };

  const health = (): SidecarHealth => {
    if (fatal) return { live: false, ready: false, reason: "uncaught exception, shutting down" };
    if (state === "starting") return { live: true, ready: false, reason: "starting" };
    if (state === "draining") return { live: true, ready: false, reason: "draining" };
    try {
      if (drainable?.ready()) return { live: true, ready: true };
      return { live: true, ready: false, reason: "the sidecar reports not ready" };
    } catch (e) {
      return { live: true, ready: false, reason: `ready check failed: ${(e as Error).message}` };
    }
  };

  // Settles once start() has settled, or with "skipped" when a signal came before it was called.
  let settleStart!: (outcome: Drainable | "failed" | "skipped") => void;
  const started = new Promise<Drainable | "failed" | "skipped">((resolve) => {
    settleStart = resolve;
  });

  const shutdown = async (code: number): Promise<void> => {
    const deadline = Date.now() + drainTimeoutMs;
    const d = await within(started, deadline - Date.now());
    if (!d.done) {
      logger.error({ drainTimeoutMs }, "start still pending when the drain bound hit");
      return exit(code === EXIT_OK ? EXIT_FAILED : code);
    }
    // Start failed: the start path logs it and exits 1.
    if (d.value === "failed") return;
    if (d.value === "skipped") {
      await http?.close();
      return exit(code);
    }
    let exitCode = code;
    try {
      const drained = await within(d.value.drain(), deadline - Date.now());
      if (drained.done) logger.info("drained");
      else {
        logger.warn(
          { drainTimeoutMs, inFlight: d.value.inFlight?.() ?? "unknown" },
          "drain timed out; closing with calls still in flight",
        );
      }
    } catch (e) {
      logger.error({ err: e }, "drain failed");
      if (exitCode === EXIT_OK) exitCode = EXIT_FAILED;
    }
    try {
      const closed = await within(d.value.close(), drainTimeoutMs);
      if (closed.done) logger.info("closed");
      else {
        logger.error({ drainTimeoutMs }, "close timed out");
        if (exitCode === EXIT_OK) exitCode = EXIT_FAILED;
      }
    } catch (e) {
      logger.error({ err: e }, "close failed");
      if (exitCode === EXIT_OK) exitCode = EXIT_FAILED;
    }
    await http?.close();
    exit(exitCode);
  };

  function onSignal(signal: NodeJS.Signals): void {
    if (state === "draining") {
      logger.warn({ signal }, "second signal while draining; exiting now");
      exit(EXIT_SECOND_SIGNAL);
      return;
    }
    // Not ready from this instant: the load balancer stops sending before the drain starts.
    state = "draining";
    logger.info({ signal, drainTimeoutMs }, "draining");
    void shutdown(EXIT_OK);
  }

  function onFatal(err: unknown): void {
    logger.fatal({ err }, "uncaught exception");
    if (state === "draining") {
      exit(EXIT_UNCAUGHT);
      return;
    }
    fatal = true;
    state = "draining";
    logger.info({ drainTimeoutMs }, "draining");
    void shutdown(EXIT_UNCAUGHT);
  }

  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  process.on("uncaughtException", onFatal);
  process.on("unhandledRejection", onFatal);

  if (opts.http) {
    try {
      http = await startSidecarHttp({ ...opts.http, health });
      logger.info({ url: http.url }, "health and metrics server listening");
    } catch (e) {
      logger.error({ err: e }, "cannot start the health and metrics server");
      settleStart("failed");
      exit(EXIT_FAILED);
      return finished;
    }
  }
  // A signal may have come while the server was starting (TS cannot see handlers change it).
  if ((state as State) === "draining") {
    settleStart("skipped");
    return finished;
  }

  try {
    drainable = await opts.start(http ? { http } : {});
  } catch (e) {
    logger.error({ err: e }, "start failed");
    settleStart("failed");
    await http?.close();
    exit(EXIT_FAILED);
    return finished;
  }
  settleStart(drainable);
  if (state === "starting") {
    state = "running";
    logger.info("started");
    const task = drainable.task?.bind(drainable);
    if (task) {
      void task()
        .catch((e: unknown) => {
          logger.error({ err: e }, "task failed");
          return EXIT_FAILED;
        })
        .then((code) => {
          if (state !== "running") return;
          state = "draining";
          logger.info({ exitCode: code, drainTimeoutMs }, "task done; draining");
          void shutdown(code);
        });
    }
  }
  return finished;
}
