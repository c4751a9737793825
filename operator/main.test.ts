/**
 * `astrid-operator` as a process against a real etcd + kube-apiserver: configured by the
 * chart's environment, it takes its Lease, reconciles a Capsule into its StatefulSet, answers
 * /readyz, and exits 0 on SIGTERM. Bad configuration exits 2 naming every problem.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  startControlPlane,
} from "../test/harness/control-plane.js";
import { freePort } from "../test/harness/nats-server.js";
import { Capsules, StatefulSets } from "./capsule/resources.js";
import { operatorEnv } from "./operator.js";
import { type KubeObject, KubeRest, resourcePath } from "./runtime/rest.js";
import { createNamespace, kubeConfigFor, waitFor } from "./runtime/test-support.js";

const run = promisify(execFile);
const MAIN = new URL("./main.ts", import.meta.url).pathname;
const NS = "astrid-op";
const built = controlPlaneToolsBuilt();
if (!built) console.warn("skipping astrid-operator process test: run `make tools` first");

describe("operatorEnv", () => {
  it("names every problem of the chart's environment at once", () => {
    expect(() =>
      operatorEnv({ ASTRID_HTTP_PORT: "99999", ASTRID_LEADER_ELECTION: "maybe" }),
    ).toThrow(
      [
        'ASTRID_HTTP_PORT: expected a port 0-65535, got "99999"',
        'ASTRID_LEADER_ELECTION: expected true or false, got "maybe"',
        "ASTRID_SIDECAR_IMAGE is required",
        "ASTRID_BUS_URL is required",
      ].join("\n"),
    );
  });

  it("exits 2 with the message when run without its settings", async () => {
    const r = await run(process.execPath, ["--import", "tsx", MAIN], {
      env: { PATH: process.env.PATH ?? "" },
    }).catch((e) => e);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("astrid-operator: ASTRID_SIDECAR_IMAGE is required");
  });
});

describe.skipIf(!built)("astrid-operator process", () => {
  let cp: ControlPlaneHandle;
  let rest: KubeRest;
  let child: ChildProcess;
  let port: number;

  beforeAll(async () => {
    cp = await startControlPlane();
    rest = new KubeRest(kubeConfigFor(cp));
    await createNamespace(rest, NS);
    for (const file of ["capsule", "agentsession", "approval"]) {
      const crd = parse(readFileSync(new URL(`../crds/${file}.yaml`, import.meta.url), "utf8"));
      await rest.request(
        "PATCH",
        `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`,
        {
          contentType: "application/apply-patch+yaml",
          query: { fieldManager: "test", force: true },
          body: crd,
        },
      );
    }
    await waitFor("Capsule kind served", () =>
      rest
        .request("GET", resourcePath(Capsules, NS))
        .then(() => true)
        .catch(() => false),
    );
    port = await freePort();
    child = spawn(process.execPath, ["--import", "tsx", MAIN], {
      env: {
        PATH: process.env.PATH ?? "",
        KUBECONFIG: cp.kubeconfigPath,
        ASTRID_SIDECAR_IMAGE: "example.org/astrid:0.1.0",
        ASTRID_BUS_URL: "nats://nats:4222",
        ASTRID_WATCH_NAMESPACES: NS,
        ASTRID_POD_NAMESPACE: NS,
        ASTRID_POD_NAME: "operator-0",
        ASTRID_HTTP_PORT: String(port),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
  }, 120_000);

  afterAll(async () => {
    child?.kill("SIGKILL");
    await cp?.stop();
  });

  it("takes the lease, reconciles a Capsule into its StatefulSet and answers /readyz", async () => {
    const example = parse(
      readFileSync(new URL("../examples/capsule-fs.yaml", import.meta.url), "utf8"),
    );
    await rest.request("PATCH", resourcePath(Capsules, NS, example.metadata.name), {
      contentType: "application/apply-patch+yaml",
      query: { fieldManager: "test", force: true },
      body: { ...example, metadata: { ...example.metadata, namespace: NS } },
    });
    await waitFor("the StatefulSet", () =>
      rest
        .request<KubeObject>("GET", resourcePath(StatefulSets, NS, example.metadata.name))
        .then(() => true)
        .catch(() => false),
    );
    const lease = await rest.request<{ spec: { holderIdentity: string } }>(
      "GET",
      `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/astrid-operator`,
    );
    expect(lease.spec.holderIdentity).toBe("operator-0");
    await waitFor("/readyz", () =>
      fetch(`http://127.0.0.1:${port}/readyz`)
        .then((r) => r.status === 200)
        .catch(() => false),
    );
  });

  it("stops on SIGTERM with exit code 0", async () => {
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
