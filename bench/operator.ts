/**
 * Operator benchmark (issue 7): how long N Capsules (default 500) take to reach Ready=True, and
 * the operator's memory with its cache full — against a real etcd + kube-apiserver on loopback,
 * with the operator running alone in its own process (leader election off).
 *
 * The operator is bundled from the current sources with esbuild (the same options as
 * scripts/build.mjs, into node_modules/.cache/astrid-bench/, so dist/ is neither trusted stale
 * nor rewritten under anyone's feet) and run with plain `node`, not tsx, so its memory is the
 * operator's own. A data: URL preload answers SIGUSR2 with two forced GCs and
 * process.memoryUsage() on stderr: the "settled" heap and RSS.
 *
 * No kubelet and no StatefulSet controller run in the test control plane. This bench plays
 * both with one cheap watcher that marks each StatefulSet's status ready (observedGeneration,
 * replicas, readyReplicas, availableReplicas …) as soon as the operator has created it, and
 * reports its own time, so it can be seen not to be the bottleneck.
 *
 * Baselines in the same run: the API server alone accepting the same creates (namespace the
 * operator does not watch, before the operator starts), and the operator's RSS idle.
 *
 * Knobs: ASTRID_BENCH_CAPSULES (default 500), ASTRID_BENCH_CAPSULES_GROWN (default 2000; the
 * second phase grows the namespace to that many Capsules), ASTRID_BENCH_CONCURRENCY (default 16),
 * ASTRID_BENCH_MALLOC_ARENA_MAX (passed to the operator as MALLOC_ARENA_MAX; unset by default).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { build } from "esbuild";
import { parse } from "yaml";
import { Capsules, StatefulSets } from "../operator/capsule/resources.js";
import {
  GoneError,
  type KubeObject,
  KubeRest,
  type ResourceType,
  resourcePath,
} from "../operator/runtime/rest.js";
import { createNamespace, kubeConfigFor, waitFor } from "../operator/runtime/test-support.js";
import { type ControlPlaneHandle, startControlPlane } from "../test/harness/control-plane.js";
import { freePort } from "../test/harness/nats-server.js";

const NS = "astrid-bench";
const BASELINE_NS = "astrid-bench-baseline";
const DIGEST = `sha256:${"b".repeat(64)}`;
const MB = 1024 * 1024;

const intEnv = (name: string, dflt: number): number => {
  const v = Number(process.env[name] ?? dflt);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name}: expected an integer >= 1, got ${v}`);
  return v;
};

/**
 * A small valid manifest whose imports/exports vary with `i`, so that graph resolution has
 * real work: every 10th capsule exports its own `bench.svcK` (and `astrid.tool`, a collecting
 * interface), four in ten import that service, two in ten import `astrid.tool`, one imports a
 * missing optional interface, one in four has an IP egress rule (a NetworkPolicy rule).
 */
export function benchManifest(i: number): string {
  const name = `cap-${i}`;
  const svc = Math.floor(i / 10);
  const lines = ["[package]", `name = "${name}"`, 'version = "1.0.0"', 'description = "bench"'];
  const d = i % 10;
  if (d === 0)
    lines.push("[exports.bench]", `svc${svc} = "1.2.0"`, "[exports.astrid]", 'tool = "1.0.0"');
  if (d >= 1 && d <= 4) lines.push("[imports.bench]", `svc${svc} = "^1.0"`);
  if (d === 5 || d === 6) lines.push("[imports.astrid]", 'tool = "^1.0"');
  if (d === 7) lines.push("[imports.bench]", 'missing = { version = "^1.0", optional = true }');
  lines.push("[capabilities]", `ipc_subscribe = ["tool.v1.execute.${name.replace(/-/g, "_")}"]`);
  if (i % 4 === 0) lines.push(`net = ["10.${(i >> 8) & 255}.${i & 255}.0/24:5432"]`);
  lines.push("[wasm]", 'module = "main.js"', "");
  return lines.join("\n");
}

function capsuleObject(i: number, namespace: string): KubeObject {
  return {
    apiVersion: Capsules.apiVersion,
    kind: Capsules.kind,
    metadata: { name: `cap-${i}`, namespace },
    spec: {
      manifest: benchManifest(i),
      package: { wasmRef: `https://example.org/bench/cap-${i}.capsule`, digest: DIGEST },
      replicas: 1,
    },
  };
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => from + k);

/** Creates `cap-<id>` for each id; returns when each create was acknowledged, by name. */
async function createCapsules(
  rest: KubeRest,
  ns: string,
  ids: number[],
  limit: number,
): Promise<Map<string, number>> {
  const acked = new Map<string, number>();
  await pool(ids, limit, async (i) => {
    await rest.request("POST", resourcePath(Capsules, ns), { body: capsuleObject(i, ns) });
    acked.set(`cap-${i}`, performance.now());
  });
  return acked;
}

interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: KubeObject;
}

/** List + watch of one kind in one namespace until `signal` aborts; resumes a closed watch. */
async function watchKind(
  rest: KubeRest,
  type: ResourceType,
  ns: string,
  onEvent: (e: WatchEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  let rv = "";
  while (!signal.aborted) {
    if (!rv) {
      const list = await rest.request<{
        metadata: { resourceVersion: string };
        items: KubeObject[];
      }>("GET", resourcePath(type, ns));
      for (const object of list.items) onEvent({ type: "ADDED", object });
      rv = list.metadata.resourceVersion;
    }
    try {
      await rest.stream(
        resourcePath(type, ns),
        { watch: true, resourceVersion: rv, allowWatchBookmarks: true },
        (raw) => {
          const e = raw as WatchEvent;
          if (e.type === "ERROR") throw new GoneError(410, "Expired", "watch expired", e.object);
          rv = e.object.metadata?.resourceVersion ?? rv;
          if (e.type !== "BOOKMARK") onEvent(e);
        },
        signal,
      );
    } catch (err) {
      if (signal.aborted) return;
      // A 410 or a garbled stream: list again; a missed event shows up as the list's state.
      rv = "";
      if (!(err instanceof GoneError)) await new Promise((r) => setTimeout(r, 200));
    }
  }
}

type Condition = { type: string; status: string };
const isReady = (o: KubeObject) =>
  ((o.status as { conditions?: Condition[] } | undefined)?.conditions ?? []).some(
    (c) => c.type === "Ready" && c.status === "True",
  );

/** Watches the bench namespace's Capsules: when each became Ready, and operator writes seen. */
class ReadyTracker {
  readonly readyAt = new Map<string, number>();
  modified = 0;
  private waiter: { n: number; resolve: () => void } | undefined;

  onEvent = (e: WatchEvent): void => {
    if (e.type === "MODIFIED") this.modified++;
    const name = e.object.metadata?.name ?? "";
    if (e.type === "DELETED" || this.readyAt.has(name) || !isReady(e.object)) return;
    this.readyAt.set(name, performance.now());
    if (this.waiter && this.readyAt.size >= this.waiter.n) this.waiter.resolve();
  };

  /**
   * Resolves once `n` Capsules are Ready. Gives up when none more became Ready for `stallMs`
   * (a broken operator shows in minutes, not at the overall limit) or after `timeoutMs`.
   */
  until(n: number, timeoutMs: number, stallMs = 120_000): Promise<void> {
    if (this.readyAt.size >= n) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const start = performance.now();
      let last = start;
      let lastCount = this.readyAt.size;
      const check = setInterval(() => {
        const now = performance.now();
        if (this.readyAt.size > lastCount) [last, lastCount] = [now, this.readyAt.size];
        if (now - last < stallMs && now - start < timeoutMs) return;
        clearInterval(check);
        reject(
          new Error(
            `only ${this.readyAt.size}/${n} Capsules Ready after ${sec(now - start)} (none for ${sec(now - last)})`,
          ),
        );
      }, 1000);
      this.waiter = {
        n,
        resolve: () => {
          clearInterval(check);
          resolve();
        },
      };
    });
  }
}

/**
 * Stands in for the StatefulSet controller and the kubelet: marks every StatefulSet of the
 * namespace ready as soon as it appears (or its generation moves), with at most `limit` status
 * writes in flight. Keeps its own account so its share of the time is visible.
 */
class FakeKubelet {
  private readonly latest = new Map<string, KubeObject>();
  private readonly pending = new Set<string>();
  private inFlight = 0;
  private busySince = 0;
  busyMs = 0;
  writes = 0;
  writeMs = 0;
  private readonly seenAt = new Map<string, number>();
  /** StatefulSet first seen → its first ready status acknowledged, by name. */
  readonly lagMs = new Map<string, number>();

  constructor(
    private readonly rest: KubeRest,
    private readonly ns: string,
    private readonly limit = 8,
  ) {}

  onEvent = (e: WatchEvent): void => {
    const name = e.object.metadata?.name ?? "";
    if (e.type === "DELETED") return;
    this.latest.set(name, e.object);
    if (!this.seenAt.has(name)) this.seenAt.set(name, performance.now());
    const spec = e.object.spec as { replicas?: number };
    const status = (e.object.status ?? {}) as {
      observedGeneration?: number;
      readyReplicas?: number;
    };
    const want = spec.replicas ?? 1;
    if (
      status.observedGeneration === e.object.metadata?.generation &&
      (status.readyReplicas ?? 0) === want
    )
      return;
    this.pending.add(name);
    this.pump();
  };

  private pump(): void {
    while (this.inFlight < this.limit && this.pending.size > 0) {
      const name = this.pending.values().next().value as string;
      this.pending.delete(name);
      const obj = this.latest.get(name);
      if (!obj) continue;
      if (this.inFlight++ === 0) this.busySince = performance.now();
      void this.markReady(name, obj).finally(() => {
        if (--this.inFlight === 0) this.busyMs += performance.now() - this.busySince;
        this.pump();
      });
    }
  }

  private async markReady(name: string, obj: KubeObject): Promise<void> {
    const n = (obj.spec as { replicas?: number }).replicas ?? 1;
    const rev = `${name}-bench`;
    const t = performance.now();
    await this.rest
      .request("PATCH", resourcePath(StatefulSets, this.ns, name, "status"), {
        contentType: "application/merge-patch+json",
        body: {
          status: {
            observedGeneration: obj.metadata?.generation ?? 1,
            replicas: n,
            readyReplicas: n,
            availableReplicas: n,
            currentReplicas: n,
            updatedReplicas: n,
            currentRevision: rev,
            updateRevision: rev,
          },
        },
      })
      .catch((err: Error) => console.error(`fake kubelet: ${name}: ${err.message}`));
    const end = performance.now();
    this.writes++;
    this.writeMs += end - t;
    const seen = this.seenAt.get(name);
    if (seen !== undefined && !this.lagMs.has(name)) this.lagMs.set(name, end - seen);
  }
}

interface ProcessMemory {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

/** The preload: on SIGUSR2, settle the heap (two full GCs) and print memoryUsage(). */
const MEMORY_PROBE = `process.on("SIGUSR2",()=>{globalThis.gc();globalThis.gc();process.stderr.write("ASTRID_BENCH_MEM "+JSON.stringify(process.memoryUsage())+"\\n")});`;

class OperatorProcess {
  private stderrTail = "";
  private stdoutTail = "";
  private memWaiters: ((m: ProcessMemory) => void)[] = [];

  private constructor(
    readonly child: ChildProcess,
    readonly port: number,
  ) {
    child.stdout?.setEncoding("utf8");
    child.stdout?.on("data", (d: string) => {
      this.stdoutTail = (this.stdoutTail + d).slice(-8000);
    });
    let buf = "";
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (d: string) => {
      buf += d;
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.startsWith("ASTRID_BENCH_MEM ")) {
          const m = JSON.parse(line.slice("ASTRID_BENCH_MEM ".length)) as ProcessMemory;
          for (const w of this.memWaiters.splice(0)) w(m);
        } else this.stderrTail = `${this.stderrTail + line}\n`.slice(-8000);
        nl = buf.indexOf("\n");
      }
    });
  }

  static async start(cp: ControlPlaneHandle, bundle: string): Promise<OperatorProcess> {
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [
        "--expose-gc",
        "--import",
        `data:text/javascript,${encodeURIComponent(MEMORY_PROBE)}`,
        "--enable-source-maps",
        bundle,
      ],
      {
        env: {
          PATH: process.env.PATH ?? "",
          KUBECONFIG: cp.kubeconfigPath,
          ASTRID_SIDECAR_IMAGE: "example.org/astrid:0.1.0",
          ASTRID_BUS_URL: "nats://nats:4222",
          ASTRID_WATCH_NAMESPACES: NS,
          ASTRID_LEADER_ELECTION: "false",
          ASTRID_HTTP_PORT: String(port),
          // For trying glibc's arena cap on the operator's RSS (see BENCHMARKS.md).
          ...(process.env.ASTRID_BENCH_MALLOC_ARENA_MAX
            ? { MALLOC_ARENA_MAX: process.env.ASTRID_BENCH_MALLOC_ARENA_MAX }
            : {}),
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const op = new OperatorProcess(child, port);
    await waitFor(
      "the operator's /readyz",
      async () => {
        if (child.exitCode !== null)
          throw new Error(`operator exited ${child.exitCode}:\n${op.logs()}`);
        return fetch(`http://127.0.0.1:${port}/readyz`)
          .then((r) => r.status === 200)
          .catch(() => false);
      },
      60_000,
    );
    return op;
  }

  logs(): string {
    return `--- stdout\n${this.stdoutTail}\n--- stderr\n${this.stderrTail}`;
  }

  /** VmRSS (now) or VmHWM (peak so far) as the kernel counts it, without disturbing the process. */
  vm(field: "VmRSS" | "VmHWM" = "VmRSS"): number {
    const status = readFileSync(`/proc/${this.child.pid}/status`, "utf8");
    const kb = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1];
    if (!kb) throw new Error(`no ${field} in /proc/${this.child.pid}/status`);
    return Number(kb) * 1024;
  }

  /** Reconciles done so far and the seconds spent in them, from /metrics. */
  async reconciles(): Promise<{ count: number; seconds: number } | undefined> {
    const text = await this.metrics();
    const count = metricSum(text, "astrid_operator_reconcile_duration_seconds_count");
    const seconds = metricSum(text, "astrid_operator_reconcile_duration_seconds_sum");
    return count === undefined ? undefined : { count, seconds: seconds ?? 0 };
  }

  /**
   * Waits until the reconcile count stops moving for 6 s (the work queue has drained: the
   * re-checks that Capsule events trigger are done); ms from the call, or undefined when the
   * count was still moving after `maxMs` or is not exposed.
   */
  async quiet(maxMs: number): Promise<number | undefined> {
    const start = performance.now();
    let last = await this.reconciles();
    if (!last) return undefined;
    let still = 0;
    let movedAt = start;
    while (performance.now() - start < maxMs) {
      await new Promise((r) => setTimeout(r, 2000));
      const now = await this.reconciles();
      if (now && now.count === last?.count) {
        if (++still >= 3) return movedAt - start;
      } else [still, last, movedAt] = [0, now, performance.now()];
    }
    return undefined;
  }

  /** Forces two full GCs in the operator and returns its memoryUsage() after them. */
  settled(): Promise<ProcessMemory> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error("no memory probe answer within 120 s (event loop busy?)")),
        120_000,
      );
      this.memWaiters.push((m) => {
        clearTimeout(t);
        resolve(m);
      });
      this.child.kill("SIGUSR2");
    });
  }

  async metrics(): Promise<string> {
    return fetch(`http://127.0.0.1:${this.port}/metrics`)
      .then((r) => r.text())
      .catch(() => "");
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGTERM");
    const t = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(t);
  }
}

/** Bundles operator/main.ts as scripts/build.mjs does, next to node_modules so packages resolve. */
async function bundleOperator(): Promise<string> {
  const outdir = path.resolve("node_modules/.cache/astrid-bench");
  mkdirSync(outdir, { recursive: true });
  const outfile = path.join(outdir, "astrid-operator.mjs");
  await build({
    entryPoints: ["operator/main.ts"],
    outfile,
    bundle: true,
    format: "esm",
    platform: "node",
    target: "node20",
    packages: "external",
    sourcemap: "linked",
    logLevel: "warning",
  });
  return outfile;
}

async function installCrds(rest: KubeRest): Promise<void> {
  for (const file of ["capsule", "agentsession", "approval"]) {
    const crd = parse(readFileSync(path.resolve(`crds/${file}.yaml`), "utf8")) as KubeObject;
    await rest.request(
      "PATCH",
      `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata?.name}`,
      {
        contentType: "application/apply-patch+yaml",
        query: { fieldManager: "bench", force: true },
        body: crd,
      },
    );
  }
}

const quantile = (xs: number[], q: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
};
const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const mb = (b: number) => `${(b / MB).toFixed(0)} MB`;

/** Sum of a Prometheus counter/histogram `_count` series over its labels, if exposed. */
function metricSum(text: string, name: string): number | undefined {
  let sum: number | undefined;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== " " && rest[0] !== "{") continue;
    sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

interface Snapshot {
  rssAtReady: number;
  peak: number;
  quietMs: number | undefined;
  settled: ProcessMemory;
  reconciles: { count: number; seconds: number } | undefined;
  since: { count: number; seconds: number } | undefined;
}

/**
 * Memory the moment all are Ready, then (once the work queue has drained) after two forced
 * GCs; the peak RSS so far; reconciles since the previous snapshot.
 */
async function snapshot(
  op: OperatorProcess,
  quietMaxMs: number,
  since?: { count: number; seconds: number },
): Promise<Snapshot> {
  const rssAtReady = op.vm("VmRSS");
  const quietMs = await op.quiet(quietMaxMs);
  const settled = await op.settled();
  return {
    rssAtReady,
    peak: op.vm("VmHWM"),
    quietMs,
    settled,
    reconciles: await op.reconciles(),
    since,
  };
}

function snapshotRows(
  s: Snapshot,
  capsules: number,
  added: number,
  idleRaw: number,
  idle: ProcessMemory,
): [string, string, string, string][] {
  const r = s.reconciles;
  const d = r && {
    count: r.count - (s.since?.count ?? 0),
    seconds: r.seconds - (s.since?.seconds ?? 0),
  };
  return [
    [
      `operator RSS when ${capsules} Capsules are Ready (${capsules * 4} objects cached) / peak`,
      `${mb(s.rssAtReady)} / ${mb(s.peak)}`,
      "< 300 MB",
      `idle, empty cache: ${mb(idleRaw)}`,
    ],
    [
      "  queue drained, 2 forced GCs: RSS / heapUsed / heapTotal / external",
      `${mb(s.settled.rss)} / ${mb(s.settled.heapUsed)} / ${mb(s.settled.heapTotal)} / ${mb(s.settled.external)}`,
      "< 300 MB",
      `idle: ${mb(idle.rss)} / ${mb(idle.heapUsed)} / ${mb(idle.heapTotal)} / ${mb(idle.external)}`,
    ],
    [
      "  reconciles in this phase (/metrics), mean duration",
      d
        ? `${d.count} (${(d.count / added).toFixed(1)} per Capsule added), ${((d.seconds / Math.max(1, d.count)) * 1000).toFixed(0)} ms`
        : "not exposed",
      "",
      s.quietMs === undefined
        ? "queue still busy when measured"
        : `queue drained ${sec(s.quietMs)} after the last Capsule became Ready`,
    ],
  ];
}

export async function main(): Promise<void> {
  const n = intEnv("ASTRID_BENCH_CAPSULES", 500);
  const grown = Math.max(n, intEnv("ASTRID_BENCH_CAPSULES_GROWN", 2000));
  const conc = intEnv("ASTRID_BENCH_CONCURRENCY", 16);
  const bundle = await bundleOperator();
  const cp = await startControlPlane();
  const stop = new AbortController();
  let op: OperatorProcess | undefined;
  const watches: Promise<void>[] = [];
  try {
    const rest = new KubeRest(kubeConfigFor(cp));
    await createNamespace(rest, NS);
    await createNamespace(rest, BASELINE_NS);
    await installCrds(rest);
    await waitFor("Capsule kind served", () =>
      rest
        .request("GET", resourcePath(Capsules, NS))
        .then(() => true)
        .catch(() => false),
    );

    // Baseline: the API server alone takes the same creates, in a namespace nobody watches,
    // after a warm-up (the first requests for a new CRD pay for building its handlers).
    await createCapsules(rest, BASELINE_NS, range(1_000_000, 1_000_050), conc);
    const b0 = performance.now();
    await createCapsules(rest, BASELINE_NS, range(0, n), conc);
    const baselineMs = performance.now() - b0;

    op = await OperatorProcess.start(cp, bundle);
    await new Promise((r) => setTimeout(r, 1000));
    const idleRaw = op.vm("VmRSS");
    const idle = await op.settled();

    const tracker = new ReadyTracker();
    const kubelet = new FakeKubelet(rest, NS);
    watches.push(watchKind(rest, Capsules, NS, tracker.onEvent, stop.signal));
    watches.push(watchKind(rest, StatefulSets, NS, kubelet.onEvent, stop.signal));

    // Phase 1: N Capsules from nothing to Ready=True.
    const t0 = performance.now();
    const acked = await createCapsules(rest, NS, range(0, n), conc);
    const createdMs = performance.now() - t0;
    await tracker.until(n, 15 * 60_000);
    const readyMs = performance.now() - t0;
    const p1 = await snapshot(op, 3 * 60_000);
    const kubelet1 = { writes: kubelet.writes, writeMs: kubelet.writeMs, busyMs: kubelet.busyMs };
    const capsuleWrites1 = tracker.modified;
    const lag1 = [...kubelet.lagMs.values()];
    const sinceCreate = range(0, n).map(
      (i) =>
        (tracker.readyAt.get(`cap-${i}`) ?? Number.NaN) - (acked.get(`cap-${i}`) ?? Number.NaN),
    );
    const rows: [string, string, string, string][] = [
      [
        `${n} Capsules: first create → all Ready=True`,
        sec(readyMs),
        "< 60 s",
        `API server alone accepts the ${n} creates: ${sec(baselineMs)}`,
      ],
      [
        `${n} creates accepted while the operator runs`,
        sec(createdMs),
        "",
        `baseline above (${sec(baselineMs)})`,
      ],
      [
        "one Capsule, its create acknowledged → Ready=True, p50 / p99",
        `${sec(quantile(sinceCreate, 0.5))} / ${sec(quantile(sinceCreate, 0.99))}`,
        "",
        "",
      ],
      ...snapshotRows(p1, n, n, idleRaw, idle),
      [
        `fake kubelet (StatefulSet status writer, phase 1): ${kubelet1.writes} writes`,
        `busy ${sec(kubelet1.busyMs)} of ${sec(readyMs)}`,
        "not the bottleneck",
        `sum of write latencies ${sec(kubelet1.writeMs)}, ≤ 8 in flight; StatefulSet seen → ready written p50 ${quantile(lag1, 0.5).toFixed(0)} ms`,
      ],
      [
        "Capsule updates seen by the bench's watch (phase 1)",
        String(capsuleWrites1),
        "",
        `${(capsuleWrites1 / n).toFixed(1)} per Capsule (finalizer + status writes)`,
      ],
    ];

    // Phase 2: grow the namespace to `grown` Capsules (4 cached objects each).
    if (grown > n) {
      const t1 = performance.now();
      try {
        await createCapsules(rest, NS, range(n, grown), conc);
        await tracker.until(grown, 20 * 60_000);
        const ms = performance.now() - t1;
        const p2 = await snapshot(op, 6 * 60_000, p1.reconciles);
        rows.push(
          [`grow ${n} → ${grown} Capsules: creates → all Ready=True`, sec(ms), "", ""],
          ...snapshotRows(p2, grown, grown - n, idleRaw, idle),
        );
      } catch (err) {
        rows.push([`grow to ${grown} Capsules`, `failed: ${(err as Error).message}`, "", ""]);
      }
    }
    const hasRss = /resident_memory_bytes/.test(await op.metrics());
    rows.push([
      "process_resident_memory_bytes on /metrics",
      hasRss ? "exposed" : "not exposed",
      "",
      "RSS above is read from /proc/<pid>/status",
    ]);
    const header = ["figure", "measured", "goal (issue 7)", "baseline / note (same run)"];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (cells: string[]) =>
      `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
    console.log(
      `\n### Operator: ${n} Capsules to Ready, memory with a full cache (operator bundled by esbuild, run with node; the bench plays the StatefulSet controller + kubelet)\n`,
    );
    console.log(line(header));
    console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
    for (const r of rows) console.log(line(r));
    console.log(
      `\nCached by the operator (namespace ${NS} only): Capsules, ConfigMaps, StatefulSets, NetworkPolicies — one of each per Capsule.`,
    );
  } catch (err) {
    if (op) console.error(op.logs());
    throw err;
  } finally {
    stop.abort();
    await op?.stop();
    await Promise.allSettled(watches);
    await cp.stop();
  }
}
