/**
 * Starts a real Prometheus server (Debian's `prometheus` package) on a free loopback port,
 * scraping the targets a test names every second, and queries it over its HTTP API — so the
 * PromQL of the chart's alert rules and dashboard is evaluated by Prometheus itself against
 * series the operator and sidecars really exported, not matched as text.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { stringify } from "yaml";
import { freePort } from "./nats-server.js";

export interface ScrapeTarget {
  /** The `job` label of the series. */
  readonly job: string;
  /** `host:port` of the /metrics endpoint. */
  readonly address: string;
  /** Extra labels put on every series of the target (e.g. the pod's capsule). */
  readonly labels?: Readonly<Record<string, string>>;
  readonly metricsPath?: string;
}

export interface PromSample {
  readonly metric: Record<string, string>;
  readonly value: number;
}

export interface PrometheusHandle {
  readonly url: string;
  /** Instant query; rejects with Prometheus' own error text when the expression is invalid. */
  query(expr: string): Promise<PromSample[]>;
  /** Polls `query(expr)` until `accept` holds for the samples; throws with the last samples. */
  waitFor(
    expr: string,
    accept: (samples: PromSample[]) => boolean,
    timeoutMs?: number,
  ): Promise<PromSample[]>;
  /** The scrape health of every target, as Prometheus reports it. */
  targets(): Promise<{ job: string; health: string; lastError: string }[]>;
  stop(): Promise<void>;
}

/** Why Prometheus cannot run here, or undefined when it can. */
export function prometheusMissingReason(): string | undefined {
  const r = spawnSync("prometheus", ["--version"], { encoding: "utf8" });
  return r.error
    ? "prometheus is not installed (Debian package `prometheus`, installed by scripts/setup-test-tools.sh)"
    : undefined;
}

export async function startPrometheus(targets: readonly ScrapeTarget[]): Promise<PrometheusHandle> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "astrid-prom-"));
  const config = {
    global: { scrape_interval: "1s", evaluation_interval: "1s", scrape_timeout: "900ms" },
    scrape_configs: targets.map((t, i) => ({
      job_name: t.job,
      metrics_path: t.metricsPath ?? "/metrics",
      static_configs: [
        { targets: [t.address], labels: { ...(t.labels ?? {}), target: String(i) } },
      ],
    })),
  };
  // Jobs must be unique in a Prometheus config; several targets of one job share one entry.
  const byJob = new Map<string, (typeof config.scrape_configs)[number]>();
  for (const sc of config.scrape_configs) {
    const prev = byJob.get(sc.job_name);
    if (prev) prev.static_configs.push(...sc.static_configs);
    else byJob.set(sc.job_name, sc);
  }
  config.scrape_configs = [...byJob.values()];
  writeFileSync(path.join(dir, "prometheus.yml"), stringify(config));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  let log = "";
  const proc: ChildProcess = spawn(
    "prometheus",
    [
      `--config.file=${path.join(dir, "prometheus.yml")}`,
      `--storage.tsdb.path=${path.join(dir, "data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const keep = (d: Buffer) => {
    log = (log + d.toString()).slice(-8000);
  };
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);

  const stop = async (): Promise<void> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise<void>((r) => proc.once("exit", () => r()));
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) {
      await stop();
      throw new Error(`prometheus exited with ${proc.exitCode} while starting:\n${log}`);
    }
    const ok = await fetch(`${url}/-/ready`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`prometheus did not become ready within 30 s:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  const query = async (expr: string): Promise<PromSample[]> => {
    const res = await fetch(`${url}/api/v1/query?${new URLSearchParams({ query: expr })}`);
    const body = (await res.json()) as {
      status: string;
      error?: string;
      data?: {
        resultType: string;
        result: { metric: Record<string, string>; value: [number, string] }[];
      };
    };
    if (body.status !== "success" || !body.data) {
      throw new Error(`prometheus rejected ${JSON.stringify(expr)}: ${body.error ?? res.status}`);
    }
    if (body.data.resultType === "scalar") {
      const v = body.data.result as unknown as [number, string];
      return [{ metric: {}, value: Number(v[1]) }];
    }
    return body.data.result.map((r) => ({ metric: r.metric, value: Number(r.value[1]) }));
  };

  return {
    url,
    query,
    async waitFor(expr, accept, timeoutMs = 30_000) {
      const end = Date.now() + timeoutMs;
      let last: PromSample[] = [];
      for (;;) {
        last = await query(expr);
        if (accept(last)) return last;
        if (Date.now() > end) {
          throw new Error(
            `prometheus: ${expr} did not reach the expected value in ${timeoutMs} ms; last: ${JSON.stringify(last)}`,
          );
        }
        await new Promise((r) => setTimeout(r, 500));
      }
    },
    async targets() {
      const res = await fetch(`${url}/api/v1/targets`);
      const body = (await res.json()) as {
        data: { activeTargets: { labels: { job: string }; health: string; lastError: string }[] };
      };
      return body.data.activeTargets.map((t) => ({
        job: t.labels.job,
        health: t.health,
        lastError: t.lastError,
      }));
    },
    stop,
  };
}
