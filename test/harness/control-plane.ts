/**
 * Starts a real Kubernetes control plane (etcd + kube-apiserver) on free loopback ports for
 * a test — the envtest pattern — and stops it. The binaries are built from the Go module
 * proxy by `make tools` (scripts/build-tools.sh) at the versions pinned in
 * tools/control-plane/*\/go.mod, and cached outside the repo by version.
 *
 * On request (`controllerManager`) kube-controller-manager runs beside them with only the
 * controllers the tests need (StatefulSet, garbage collector, namespace). No kubelet and no
 * scheduler run: a test that needs Pods to run starts test/harness/kubelet.ts.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "./nats-server.js";

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

export interface ControlPlaneTools {
  readonly etcd: string;
  readonly kubeApiserver: string;
}

export interface ControlPlaneHandle {
  /** `https://127.0.0.1:<port>` of kube-apiserver. */
  readonly url: string;
  /** Bearer token of a `system:masters` user (bypasses RBAC). */
  readonly token: string;
  /** `http://127.0.0.1:<port>` of the etcd that holds the API server's state. */
  readonly etcdUrl: string;
  /** A kubeconfig (server, CA, token) for clients that read one, e.g. kubectl or the operator. */
  readonly kubeconfigPath: string;
  /** The API server's self-signed CA bundle; trust it instead of turning verification off. */
  readonly caPem: string;
  /** `https://127.0.0.1:<port>` of kube-controller-manager (its /healthz), when it runs. */
  readonly controllerManagerUrl?: string;
  /** Stop kube-controller-manager, kube-apiserver and etcd and delete their temp directory. */
  stop(): Promise<void>;
}

export interface KubeResponse {
  readonly status: number;
  readonly body: unknown;
}

/** The directory that scripts/build-tools.sh builds into (same rule as the script). */
export function toolsCacheDir(): string {
  if (process.env.ASTRID_TOOLS_DIR) return process.env.ASTRID_TOOLS_DIR;
  const cache = process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache");
  return path.join(cache, "astrid", "tools");
}

/** The version the tools module pins for `modulePath`, read from its go.mod. */
function pinnedVersion(moduleDir: string, modulePath: string): string {
  const goMod = readFileSync(
    path.join(repoRoot, "tools/control-plane", moduleDir, "go.mod"),
    "utf8",
  );
  const escaped = modulePath.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
  const m = new RegExp(`^\\s*${escaped}\\s+(v\\S+)`, "m").exec(goMod);
  if (!m?.[1]) {
    throw new Error(`tools/control-plane/${moduleDir}/go.mod does not require ${modulePath}`);
  }
  return m[1];
}

function toolPath(tool: string, version: string): string {
  return path.join(toolsCacheDir(), `${tool}-${version}`, tool);
}

/** The pinned kube-controller-manager / kubectl, built from the same k8s.io/kubernetes module. */
function kubernetesToolPath(tool: "kube-controller-manager" | "kubectl"): string {
  return toolPath(tool, pinnedVersion("kubernetes", "k8s.io/kubernetes"));
}

function findKubernetesTool(tool: "kube-controller-manager" | "kubectl"): string {
  const p = kubernetesToolPath(tool);
  if (!existsSync(p)) throw new Error(`${tool} is not built (missing ${p}): run \`make tools\``);
  return p;
}

/** True when the pinned kube-controller-manager is in the cache. */
export function controllerManagerBuilt(): boolean {
  return existsSync(kubernetesToolPath("kube-controller-manager"));
}

/** True when the pinned kubectl is in the cache. */
export function kubectlBuilt(): boolean {
  return existsSync(kubernetesToolPath("kubectl"));
}

/** Path of the pinned kubectl (same release as the API server); throws if it is not built. */
export function findKubectl(): string {
  return findKubernetesTool("kubectl");
}

/** Path of the pinned kube-controller-manager; throws if it is not built. */
export function findKubeControllerManager(): string {
  return findKubernetesTool("kube-controller-manager");
}

function expectedTools(): ControlPlaneTools {
  return {
    etcd: toolPath("etcd", pinnedVersion("etcd", "go.etcd.io/etcd/server/v3")),
    kubeApiserver: toolPath("kube-apiserver", pinnedVersion("kubernetes", "k8s.io/kubernetes")),
  };
}

/** True when both binaries of the pinned versions are in the cache. */
export function controlPlaneToolsBuilt(): boolean {
  const t = expectedTools();
  return existsSync(t.etcd) && existsSync(t.kubeApiserver);
}

/** Paths of the pinned etcd and kube-apiserver; throws, saying how to build them, if missing. */
export function findControlPlaneTools(): ControlPlaneTools {
  const t = expectedTools();
  const missing = [t.etcd, t.kubeApiserver].filter((p) => !existsSync(p));
  if (missing.length > 0) {
    throw new Error(
      `control plane binaries are not built (missing ${missing.join(", ")}): run \`make tools\``,
    );
  }
  return t;
}

/** A child process whose recent output is kept for error messages. */
interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  log(): string;
}

function startChild(name: string, bin: string, args: string[]): Child {
  const proc = spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (d: Buffer) => {
    // Only the tail matters for a failure message; the API server logs a lot while starting.
    output = (output + d.toString()).slice(-16_000);
  };
  proc.stdout?.on("data", keep);
  proc.stderr?.on("data", keep);
  proc.on("error", (err) => keep(Buffer.from(`spawn error: ${err.message}\n`)));
  return { name, proc, log: () => output };
}

async function stopChild(c: Child): Promise<void> {
  const p = c.proc;
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once("exit", () => r()));
  p.kill("SIGTERM");
  const timer = setTimeout(() => p.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}

/** One HTTPS request to the API server, trusting only its own CA. */
export function kubeRequest(
  cp: Pick<ControlPlaneHandle, "url" | "token" | "caPem">,
  method: string,
  apiPath: string,
  body?: unknown,
): Promise<KubeResponse> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request(
      new URL(apiPath, cp.url),
      {
        method,
        ca: cp.caPem,
        headers: {
          // An empty token sends no credential (health endpoints that allow anonymous reads).
          ...(cp.token ? { authorization: `Bearer ${cp.token}` } : {}),
          accept: "application/json",
          ...(payload === undefined
            ? {}
            : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          let parsed: unknown = text;
          try {
            parsed = JSON.parse(text);
          } catch {
            // /readyz and friends answer in plain text.
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      },
    );
    req.on("error", reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitUntil(
  what: string,
  children: Child[],
  timeoutMs: number,
  ready: () => Promise<boolean>,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    for (const c of children) {
      if (c.proc.exitCode !== null || c.proc.signalCode !== null) {
        throw new Error(
          `${c.name} exited (${c.proc.exitCode ?? c.proc.signalCode}) before ${what}:\n${c.log()}`,
        );
      }
    }
    if (await ready().catch(() => false)) return;
    if (Date.now() > deadline) {
      const logs = children.map((c) => `--- ${c.name}\n${c.log()}`).join("\n");
      throw new Error(`${what} did not happen within ${timeoutMs / 1000} s:\n${logs}`);
    }
    await sleep(200);
  }
}

function kubeconfig(url: string, caPem: string, token: string): string {
  return [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: astrid-test",
    "  cluster:",
    `    server: ${url}`,
    `    certificate-authority-data: ${Buffer.from(caPem).toString("base64")}`,
    "users:",
    "- name: admin",
    "  user:",
    `    token: ${token}`,
    "contexts:",
    "- name: astrid-test",
    "  context:",
    "    cluster: astrid-test",
    "    user: admin",
    "current-context: astrid-test",
    "",
  ].join("\n");
}

/**
 * The controllers started when `controllerManager` is true: what a StatefulSet needs to get
 * Pods (and their PersistentVolumeClaims), what deletes dependents after their owner goes,
 * and what empties and removes a deleted namespace (without it one stays Terminating forever).
 * The ServiceAccount controllers are left out on purpose: the API server runs without the
 * ServiceAccount admission plugin, so Pods need no `default` ServiceAccount.
 */
export const DEFAULT_CONTROLLERS: readonly string[] = [
  "statefulset-controller",
  "garbage-collector-controller",
  "namespace-controller",
];

export interface ControllerManagerOptions {
  /** kube-controller-manager `--controllers` names; DEFAULT_CONTROLLERS when absent. */
  controllers?: readonly string[];
}

export interface ControlPlaneOptions {
  /** How long etcd + kube-apiserver may take to become ready; 90 s by default (2 shared cores). */
  startTimeoutMs?: number;
  /**
   * Also run kube-controller-manager (leader election off, the admin kubeconfig) with
   * DEFAULT_CONTROLLERS, or the ones named; stopped by `stop()` with the rest.
   */
  controllerManager?: boolean | ControllerManagerOptions;
}

async function startControllerManager(
  bin: string,
  controllers: readonly string[],
  dir: string,
  kubeconfigPath: string,
): Promise<{ child: Child; url: string; healthy: () => Promise<boolean> }> {
  const port = await freePort();
  const certDir = path.join(dir, "controller-manager-certs");
  mkdirSync(certDir);
  const child = startChild("kube-controller-manager", bin, [
    `--kubeconfig=${kubeconfigPath}`,
    // One instance per test plane: electing a leader would only add a Lease round trip.
    "--leader-elect=false",
    `--controllers=${controllers.join(",")}`,
    // All controllers act with the admin identity of the kubeconfig; per-controller
    // ServiceAccounts would need the token controller and its signing key.
    "--use-service-account-credentials=false",
    "--bind-address=127.0.0.1",
    `--secure-port=${port}`,
    // Self-signed serving cert written here; /healthz is read trusting only it.
    `--cert-dir=${certDir}`,
    "--profiling=false",
  ]);
  const caFile = path.join(certDir, "kube-controller-manager.crt");
  const healthy = async () => {
    if (!existsSync(caFile)) return false;
    const caPem = readFileSync(caFile, "utf8");
    // /healthz is in the always-allowed paths, so no token is needed (nor sent).
    const res = await kubeRequest(
      { url: `https://127.0.0.1:${port}`, token: "", caPem },
      "GET",
      "/healthz",
    );
    return res.status === 200;
  };
  return { child, url: `https://127.0.0.1:${port}`, healthy };
}

export async function startControlPlane(
  opts: ControlPlaneOptions = {},
): Promise<ControlPlaneHandle> {
  const tools = findControlPlaneTools();
  const cmOpts =
    opts.controllerManager === true ? {} : opts.controllerManager ? opts.controllerManager : null;
  // Resolved before anything starts, so a missing binary fails fast with the fix in the message.
  const controllerManagerBin = cmOpts ? findKubeControllerManager() : null;
  const timeoutMs = opts.startTimeoutMs ?? 90_000;
  const dir = mkdtempSync(path.join(os.tmpdir(), "astrid-control-plane-"));
  const children: Child[] = [];
  // A test process that dies without stop() must not leave etcd and the servers running.
  const exitHook = () => {
    for (const c of children) c.proc.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("exit", exitHook);
  const stop = async () => {
    // API server first: it would otherwise log etcd connection errors while shutting down.
    for (const c of [...children].reverse()) await stopChild(c);
    process.off("exit", exitHook);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const [etcdClient, etcdPeer, apiPort] = [await freePort(), await freePort(), await freePort()];
    const etcdUrl = `http://127.0.0.1:${etcdClient}`;
    const peerUrl = `http://127.0.0.1:${etcdPeer}`;
    const etcd = startChild("etcd", tools.etcd, [
      "--name=astrid-test",
      `--data-dir=${path.join(dir, "etcd")}`,
      `--listen-client-urls=${etcdUrl}`,
      `--advertise-client-urls=${etcdUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=astrid-test=${peerUrl}`,
      // Test data is thrown away; fsync only costs time on a shared disk.
      "--unsafe-no-fsync",
      "--log-level=warn",
    ]);
    children.push(etcd);
    await waitUntil("etcd answered /health", children, timeoutMs, async () => {
      const res = await fetch(`${etcdUrl}/health`);
      return res.ok && ((await res.json()) as { health?: string }).health === "true";
    });

    // The admin token is the only credential; system:masters bypasses RBAC so tests can set
    // up any object, while RBAC stays on for the identities the code under test uses.
    const token = randomBytes(32).toString("hex");
    const tokenFile = path.join(dir, "tokens.csv");
    writeFileSync(tokenFile, `${token},astrid-test-admin,astrid-test-admin,"system:masters"\n`, {
      mode: 0o600,
    });
    // Service-account tokens are signed and verified by this key pair; the API server refuses
    // to start without one.
    const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "prime256v1" });
    const saKey = path.join(dir, "sa.key");
    const saPub = path.join(dir, "sa.pub");
    writeFileSync(saKey, privateKey.export({ type: "pkcs8", format: "pem" }), { mode: 0o600 });
    writeFileSync(saPub, publicKey.export({ type: "spki", format: "pem" }));
    const certDir = path.join(dir, "certs");
    mkdirSync(certDir);

    const url = `https://127.0.0.1:${apiPort}`;
    const apiserver = startChild("kube-apiserver", tools.kubeApiserver, [
      `--etcd-servers=${etcdUrl}`,
      "--bind-address=127.0.0.1",
      "--advertise-address=127.0.0.1",
      `--secure-port=${apiPort}`,
      // No --tls-cert-file: the server writes a self-signed CA + serving cert for
      // 127.0.0.1 here, which is what the kubeconfig then trusts.
      `--cert-dir=${certDir}`,
      `--token-auth-file=${tokenFile}`,
      "--anonymous-auth=false",
      "--authorization-mode=RBAC",
      "--service-cluster-ip-range=10.0.0.0/24",
      `--service-account-issuer=${url}`,
      `--service-account-key-file=${saPub}`,
      `--service-account-signing-key-file=${saKey}`,
      // No controller-manager runs, so no namespace ever gets its "default" ServiceAccount;
      // with this admission plugin on, every Pod create would be rejected for lacking it.
      "--disable-admission-plugins=ServiceAccount",
      // The default "lease" reconciler refuses a loopback advertise address (it would
      // publish 127.0.0.1 as the kubernetes Service's endpoint); nothing in a test needs it.
      "--endpoint-reconciler-type=none",
      "--allow-privileged=true",
      "--profiling=false",
    ]);
    children.push(apiserver);

    const caFile = path.join(certDir, "apiserver.crt");
    let caPem = "";
    await waitUntil("kube-apiserver answered /readyz", children, timeoutMs, async () => {
      // Read again on every try: a first read may catch the file half written.
      if (!existsSync(caFile)) return false;
      caPem = readFileSync(caFile, "utf8");
      const res = await kubeRequest({ url, token, caPem }, "GET", "/readyz");
      return res.status === 200;
    });

    const kubeconfigPath = path.join(dir, "kubeconfig");
    writeFileSync(kubeconfigPath, kubeconfig(url, caPem, token), { mode: 0o600 });
    if (controllerManagerBin && cmOpts) {
      const cm = await startControllerManager(
        controllerManagerBin,
        cmOpts.controllers ?? DEFAULT_CONTROLLERS,
        dir,
        kubeconfigPath,
      );
      children.push(cm.child);
      await waitUntil("kube-controller-manager answered /healthz", children, timeoutMs, cm.healthy);
      return { url, etcdUrl, token, kubeconfigPath, caPem, controllerManagerUrl: cm.url, stop };
    }
    return { url, etcdUrl, token, kubeconfigPath, caPem, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
