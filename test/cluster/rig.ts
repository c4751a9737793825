/**
 * The cluster shape on one machine, without Docker: a real etcd + kube-apiserver +
 * kube-controller-manager (StatefulSets, garbage collection), a real nats-server with
 * JetStream and JWT auth (per-capsule users issued by the operator), the kubelet harness running the project's image `astrid/astrid` as local
 * processes (node in the repository, where scripts/setup.sh built dist/), a package server
 * handing out `.capsule` archives built by astrid-build, and `astrid-operator` as a process —
 * the same bundle and environment the Helm chart runs. Used by test/cluster-e2e.test.ts and
 * `make cluster-demo`.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { Algorithms, encodeUser, fmtCreds } from "@nats-io/jwt";
import { createUser } from "@nats-io/nkeys";
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { startOperatorModeNats } from "../../operator/nats/test-support.js";
import { KubeRest } from "../../operator/runtime/rest.js";
import {
  type ControlPlaneHandle,
  findKubectl,
  startControlPlane,
} from "../harness/control-plane.js";
import { type Kubelet, startKubelet } from "../harness/kubelet.js";
import { freePort, type NatsServerHandle } from "../harness/nats-server.js";

const run = promisify(execFile);
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The image the operator puts in every pod; the kubelet harness runs it from the repository. */
export const IMAGE = "astrid/astrid:e2e";

export interface BuiltPackage {
  readonly name: string;
  /** URL of the `.capsule` archive (the Capsule's `package.wasmRef`). */
  readonly url: string;
  /** The package digest astrid-build printed (the Capsule's `package.digest`). */
  readonly digest: string;
  /** The Capsule.toml inside the package (the Capsule's `spec.manifest`, byte for byte). */
  readonly manifest: string;
}

export interface KubectlResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface ClusterRig {
  readonly cp: ControlPlaneHandle;
  readonly nats: NatsServerHandle;
  readonly kubelet: Kubelet;
  readonly rest: KubeRest;
  /** Loopback port of the operator's /metrics. */
  readonly operatorMetricsPort: number;
  /** Builds capsules/<dir> (optionally with another Capsule.toml) and serves its archive. */
  buildPackage(capsuleDir: string, manifestFile?: string): Promise<BuiltPackage>;
  /** The real kubectl, against the test cluster. Never rejects; read `code`. */
  kubectl(args: readonly string[], stdin?: string): Promise<KubectlResult>;
  /** The operator's output so far (for failure messages). */
  operatorLog(): string;
  /** A NATS connection as the account's admin (the server runs with JWT auth). */
  natsConnect(): Promise<NatsConnection>;
  stop(): Promise<void>;
}

/**
 * Runs kubectl asynchronously and never rejects (read `code`). Asynchronously on purpose: the
 * kubelet harness runs in this process, and a blocked event loop would stop it mid-test.
 */
export function kubectlRunner(
  bin: string,
  baseArgs: readonly string[] = [],
): (args: readonly string[], stdin?: string) => Promise<KubectlResult> {
  return (args, stdin) =>
    new Promise((resolve) => {
      const p = spawn(bin, [...baseArgs, ...args], { stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      p.stdout.on("data", (d) => {
        stdout += d;
      });
      p.stderr.on("data", (d) => {
        stderr += d;
      });
      p.on("error", (err) => resolve({ code: 127, stdout, stderr: `${stderr}${err.message}` }));
      p.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
      p.stdin.end(stdin ?? "");
    });
}

export interface RigOptions {
  /** Progress lines (the demo prints them). */
  readonly log?: (line: string) => void;
}

/** The bundles the pods run must match the sources; CI's setup builds them, a dev tree may be stale. */
async function ensureFreshBundles(log: (l: string) => void): Promise<void> {
  const bundles = ["astrid-sidecar.js", "astrid-operator.js"].map((f) =>
    path.join(repoRoot, "dist", f),
  );
  const oldest = Math.min(...bundles.map((b) => (existsSync(b) ? statSync(b).mtimeMs : 0)));
  const newest = await newestSource(
    ["core", "sidecar", "operator"].map((d) => path.join(repoRoot, d)),
  );
  if (oldest >= newest) return;
  log("building dist/ (sources are newer than the bundles)");
  await run(process.execPath, [path.join(repoRoot, "scripts", "build.mjs")], { cwd: repoRoot });
}

async function newestSource(dirs: string[]): Promise<number> {
  const { readdir } = await import("node:fs/promises");
  let newest = 0;
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.name.endsWith(".ts") && !e.name.endsWith(".test.ts")) {
        newest = Math.max(newest, statSync(p).mtimeMs);
      }
    }
  };
  for (const d of dirs) await walk(d);
  return newest;
}

export async function startClusterRig(opts: RigOptions = {}): Promise<ClusterRig> {
  const log = opts.log ?? (() => undefined);
  const work = mkdtempSync(path.join(os.tmpdir(), "astrid-cluster-"));
  const stops: (() => Promise<void>)[] = [];
  const stopAll = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
  };
  try {
    await ensureFreshBundles(log);
    log("starting etcd, kube-apiserver, kube-controller-manager and nats-server (JWT auth)");
    const [cp, opNats] = await Promise.all([
      startControlPlane({ controllerManager: true }),
      startOperatorModeNats(),
    ]);
    const nats = opNats.server;
    stops.push(
      () => cp.stop(),
      () => nats.stop(),
    );
    // NATS in operator mode, as a production install: every client needs a user JWT. The
    // operator gets the account's signing key to issue one per capsule and session pod, and
    // the operator signing key + a system user to revoke them; it and the test connect as an
    // account admin.
    const admin = createUser();
    const adminCreds = fmtCreds(
      await encodeUser("astrid-admin", admin, opNats.account, {}, { algorithm: Algorithms.v2 }),
      admin,
    );
    const secretFile = (name: string, content: string | Uint8Array) => {
      const f = path.join(work, name);
      writeFileSync(f, content, { mode: 0o600 });
      return f;
    };
    const natsEnv = {
      ASTRID_BUS_CREDS_FILE: secretFile("admin.creds", adminCreds),
      ASTRID_NATS_ACCOUNT: opNats.account.getPublicKey(),
      ASTRID_NATS_ACCOUNT_SEED_FILE: secretFile(
        "account.seed",
        opNats.seedOf(opNats.accountSigningKey),
      ),
      ASTRID_NATS_OPERATOR_SEED_FILE: secretFile(
        "operator.seed",
        opNats.seedOf(opNats.operatorSigningKey),
      ),
      ASTRID_NATS_SYSTEM_CREDS_FILE: secretFile("system.creds", opNats.systemCreds),
    };
    const natsConnect = () =>
      connect({ servers: nats.url, authenticator: credsAuthenticator(adminCreds) });
    const kc = new KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
    const rest = new KubeRest(kc);
    const kubectl = kubectlRunner(findKubectl(), [`--kubeconfig=${cp.kubeconfigPath}`]);

    log("installing the CRDs with kubectl apply --server-side");
    const crds = await kubectl(["apply", "--server-side", "-f", path.join(repoRoot, "crds")]);
    if (crds.code !== 0) throw new Error(`kubectl apply crds/: ${crds.stderr}`);
    const est = await kubectl([
      "wait",
      "--for=condition=Established",
      "--timeout=60s",
      "crd/capsules.astrid.dev",
      "crd/agentsessions.astrid.dev",
      "crd/approvals.astrid.dev",
    ]);
    if (est.code !== 0) throw new Error(`CRDs not established: ${est.stderr}`);

    log("starting the kubelet harness (image astrid/astrid → node in the repository)");
    const kubelet = await startKubelet(cp, {
      images: {
        "astrid/astrid": {
          command: ["node"],
          args: ["dist/astrid-operator.js"],
          cwd: repoRoot,
          portEnv: { metrics: "ASTRID_HTTP_PORT" },
        },
      },
    });
    stops.push(() => kubelet.stop());

    // Packages: astrid-build archives, served over HTTP as an artefact server would.
    const served = new Map<string, Buffer>();
    const server = http.createServer((req, res) => {
      const body = served.get(req.url ?? "");
      if (!body) {
        res.writeHead(404).end("not found");
        return;
      }
      res.writeHead(200, { "content-type": "application/octet-stream" }).end(body);
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    stops.push(() => new Promise<void>((r) => server.close(() => r())));
    const pkgBase = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const buildPackage = async (capsuleDir: string, manifestFile?: string) => {
      const src = path.join(work, "src", path.basename(capsuleDir));
      const { cp: copy } = await import("node:fs/promises");
      await copy(path.resolve(repoRoot, capsuleDir), src, { recursive: true });
      if (manifestFile) {
        await copy(path.resolve(repoRoot, manifestFile), path.join(src, "Capsule.toml"));
      }
      const { stdout } = await run(
        path.join(repoRoot, "bin", "astrid-build"),
        [src, "--out", path.join(work, "out"), "--archive", "--json"],
        { cwd: repoRoot },
      );
      const r = JSON.parse(stdout) as { name: string; digest: string; archive: string };
      const file = `/${path.basename(r.archive)}`;
      served.set(file, readFileSync(r.archive));
      return {
        name: r.name,
        url: `${pkgBase}${file}`,
        digest: r.digest,
        manifest: readFileSync(path.join(src, "Capsule.toml"), "utf8"),
      };
    };

    log("starting astrid-operator (dist/astrid-operator.js, the chart's environment)");
    const operatorMetricsPort = await freePort();
    let opLog = "";
    const op: ChildProcess = spawn(
      process.execPath,
      [path.join(repoRoot, "dist", "astrid-operator.js")],
      {
        cwd: repoRoot,
        env: {
          PATH: process.env.PATH ?? "",
          KUBECONFIG: cp.kubeconfigPath,
          ASTRID_SIDECAR_IMAGE: IMAGE,
          ASTRID_BUS_URL: nats.url,
          ASTRID_LEADER_ELECTION: "false",
          ASTRID_HTTP_PORT: String(operatorMetricsPort),
          ASTRID_LOG_LEVEL: "info",
          ...natsEnv,
        },
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    const keep = (d: Buffer) => {
      opLog = (opLog + d.toString()).slice(-64_000);
    };
    op.stdout?.on("data", keep);
    op.stderr?.on("data", keep);
    stops.push(async () => {
      if (op.exitCode !== null) return;
      const exited = new Promise<void>((r) => op.once("exit", () => r()));
      op.kill("SIGTERM");
      const t = setTimeout(() => op.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(t);
    });
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (op.exitCode !== null) throw new Error(`astrid-operator exited ${op.exitCode}:\n${opLog}`);
      const ok = await fetch(`http://127.0.0.1:${operatorMetricsPort}/readyz`).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) break;
      if (Date.now() > deadline) throw new Error(`astrid-operator not ready in 30 s:\n${opLog}`);
      await new Promise((r) => setTimeout(r, 200));
    }

    return {
      cp,
      nats,
      kubelet,
      rest,
      operatorMetricsPort,
      buildPackage,
      kubectl,
      operatorLog: () => opLog,
      natsConnect,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
