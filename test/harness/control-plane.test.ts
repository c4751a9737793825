import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import https from "node:https";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ControlPlaneHandle,
  controllerManagerBuilt,
  controlPlaneToolsBuilt,
  findControlPlaneTools,
  findKubeControllerManager,
  findKubectl,
  kubectlBuilt,
  kubeRequest,
  startControlPlane,
  toolsCacheDir,
} from "./control-plane.js";

const toolsBuilt = controlPlaneToolsBuilt();
const cmBuilt = controllerManagerBuilt();
const kubectlReady = kubectlBuilt();
// A skipped test must not look like a passed one: say loudly why and how to fix it.
if (!toolsBuilt) {
  console.warn(
    `control-plane tests SKIPPED: etcd/kube-apiserver are not built in ${toolsCacheDir()}; run \`make tools\` (scripts/build-tools.sh)`,
  );
}
if (!cmBuilt || !kubectlReady) {
  console.warn(
    `controller-manager/kubectl tests SKIPPED: kube-controller-manager or kubectl is not built in ${toolsCacheDir()}; run \`make tools\``,
  );
}

describe("control-plane harness without built tools", () => {
  it("says to run make tools when the binaries are missing", () => {
    const saved = process.env.ASTRID_TOOLS_DIR;
    process.env.ASTRID_TOOLS_DIR = path.join("/nonexistent", "astrid-tools");
    try {
      expect(() => findControlPlaneTools()).toThrow(
        /control plane binaries are not built .*run `make tools`/,
      );
      expect(controlPlaneToolsBuilt()).toBe(false);
      expect(() => findKubectl()).toThrow(
        /^kubectl is not built \(missing \/nonexistent\/astrid-tools\/kubectl-v[\d.]+\/kubectl\): run `make tools`$/,
      );
      expect(() => findKubeControllerManager()).toThrow(
        /^kube-controller-manager is not built \(missing .*\): run `make tools`$/,
      );
      expect(kubectlBuilt()).toBe(false);
      expect(controllerManagerBuilt()).toBe(false);
    } finally {
      if (saved === undefined) delete process.env.ASTRID_TOOLS_DIR;
      else process.env.ASTRID_TOOLS_DIR = saved;
    }
  });
});

/** Polls `check` until it holds; the test's timeout turns a hang into a failure. */
async function until(check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((r) => setTimeout(r, 100));
}

describe.skipIf(!toolsBuilt)("control-plane harness (real etcd + kube-apiserver)", () => {
  let cp: ControlPlaneHandle | undefined;
  beforeAll(async () => {
    // With the controller-manager when it is built, so its tests below share this plane.
    cp = await startControlPlane({ controllerManager: cmBuilt });
  }, 120_000);
  afterAll(async () => cp?.stop(), 30_000);

  const plane = (): ControlPlaneHandle => {
    if (!cp) throw new Error("control plane did not start");
    return cp;
  };

  it("creates a namespace and a ConfigMap and lists them back", async () => {
    const ns = "astrid-harness-test";
    const created = await kubeRequest(plane(), "POST", "/api/v1/namespaces", {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: ns },
    });
    expect(created.status).toBe(201);

    const cm = await kubeRequest(plane(), "POST", `/api/v1/namespaces/${ns}/configmaps`, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "greeting" },
      data: { hello: "world" },
    });
    expect(cm.status).toBe(201);

    const namespaces = await kubeRequest(plane(), "GET", "/api/v1/namespaces");
    expect(namespaces.status).toBe(200);
    const nsNames = (namespaces.body as { items: { metadata: { name: string } }[] }).items.map(
      (i) => i.metadata.name,
    );
    expect(nsNames).toContain(ns);

    const list = await kubeRequest(plane(), "GET", `/api/v1/namespaces/${ns}/configmaps`);
    expect(list.status).toBe(200);
    const items = (
      list.body as { items: { metadata: { name: string }; data?: Record<string, string> }[] }
    ).items;
    expect(items.find((i) => i.metadata.name === "greeting")?.data).toEqual({ hello: "world" });
  });

  it("reports the release pinned in tools/control-plane/kubernetes/go.mod at /version", async () => {
    const goMod = readFileSync(
      path.join(import.meta.dirname, "../../tools/control-plane/kubernetes/go.mod"),
      "utf8",
    );
    const pinned = /^\s*k8s\.io\/kubernetes (v\S+)/m.exec(goMod)?.[1];
    const res = await kubeRequest(plane(), "GET", "/version");
    expect(res.status).toBe(200);
    expect((res.body as { gitVersion: string }).gitVersion).toBe(pinned);
  });

  it("validates objects like a real API server (rejects an invalid name)", async () => {
    const res = await kubeRequest(plane(), "POST", "/api/v1/namespaces", {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: "Not_A_Valid_Name" },
    });
    expect(res.status).toBe(422);
    expect((res.body as { reason: string }).reason).toBe("Invalid");
  });

  it("refuses a request without the token", async () => {
    const res = await kubeRequest(
      { ...plane(), token: "wrong-token" },
      "GET",
      "/api/v1/namespaces",
    );
    expect(res.status).toBe(401);
  });

  it("serves a certificate that only the returned CA makes trusted", async () => {
    // Without the CA, Node's default trust store must refuse the self-signed server.
    const err = await new Promise<Error | undefined>((resolve) => {
      https
        .get(`${plane().url}/readyz`, (res) => {
          res.resume();
          resolve(undefined);
        })
        .on("error", resolve);
    });
    expect(err?.message).toMatch(/self[- ]signed certificate/);
  });

  it("writes a kubeconfig naming the server, its CA and the token", () => {
    const c = plane();
    const text = readFileSync(c.kubeconfigPath, "utf8");
    expect(text).toContain(`server: ${c.url}`);
    expect(text).toContain(`token: ${c.token}`);
    expect(text).toContain(
      `certificate-authority-data: ${Buffer.from(c.caPem).toString("base64")}`,
    );
  });

  it.skipIf(!cmBuilt)(
    "runs kube-controller-manager: the garbage collector and the namespace controller act",
    async () => {
      const ns = "astrid-gc-test";
      await kubeRequest(plane(), "POST", "/api/v1/namespaces", { metadata: { name: ns } });
      const owner = await kubeRequest(plane(), "POST", `/api/v1/namespaces/${ns}/configmaps`, {
        metadata: { name: "owner" },
      });
      const uid = (owner.body as { metadata: { uid: string } }).metadata.uid;
      const dep = await kubeRequest(plane(), "POST", `/api/v1/namespaces/${ns}/configmaps`, {
        metadata: {
          name: "dependent",
          ownerReferences: [{ apiVersion: "v1", kind: "ConfigMap", name: "owner", uid }],
        },
      });
      expect(dep.status).toBe(201);
      await kubeRequest(plane(), "DELETE", `/api/v1/namespaces/${ns}/configmaps/owner`);
      await until(
        async () =>
          (await kubeRequest(plane(), "GET", `/api/v1/namespaces/${ns}/configmaps/dependent`))
            .status === 404,
      );
      // Without the namespace controller a deleted namespace stays Terminating forever.
      await kubeRequest(plane(), "DELETE", `/api/v1/namespaces/${ns}`);
      await until(
        async () => (await kubeRequest(plane(), "GET", `/api/v1/namespaces/${ns}`)).status === 404,
      );
    },
    60_000,
  );

  it.skipIf(!kubectlReady)("findKubectl(): the pinned kubectl talks to the plane", () => {
    const out = execFileSync(
      findKubectl(),
      ["--kubeconfig", plane().kubeconfigPath, "version", "-o", "json"],
      { encoding: "utf8" },
    );
    const v = JSON.parse(out) as {
      clientVersion: { gitVersion: string };
      serverVersion: { gitVersion: string };
    };
    expect(v.clientVersion.gitVersion).toBe(v.serverVersion.gitVersion);
    const names = execFileSync(
      findKubectl(),
      ["--kubeconfig", plane().kubeconfigPath, "get", "namespaces", "-o", "name"],
      { encoding: "utf8" },
    );
    expect(names.split("\n")).toContain("namespace/astrid-harness-test");
  });

  // Last on purpose: it stops the plane the tests above share (stop() is idempotent, so
  // afterAll stays safe).
  it("stop() ends etcd and kube-apiserver and removes the temp directory", async () => {
    const c = plane();
    const dir = path.dirname(c.kubeconfigPath);
    expect(existsSync(dir)).toBe(true);
    await c.stop();
    expect(existsSync(dir)).toBe(false);
    await expect(kubeRequest(c, "GET", "/readyz")).rejects.toThrow(/ECONNREFUSED/);
    await expect(fetch(`${c.etcdUrl}/health`)).rejects.toThrow(/fetch failed/);
    if (cmBuilt) {
      expect(c.controllerManagerUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
      await expect(
        kubeRequest({ ...c, url: c.controllerManagerUrl as string, token: "" }, "GET", "/healthz"),
      ).rejects.toThrow(/ECONNREFUSED/);
    }
  }, 60_000);
});
