/**
 * Helpers for the runtime's tests against a real control plane: a KubeConfig for it, and
 * waiting for a condition (never for a fixed time — the condition decides, the timeout only
 * turns a hang into a clear failure).
 */
import { readFileSync } from "node:fs";
import { KubeConfig } from "@kubernetes/client-node";
import { parse } from "yaml";
import type { ControlPlaneHandle } from "../../test/harness/control-plane.js";
import { ConfigMaps, KubeRest, Namespaces, resourcePath } from "./rest.js";

const CRD_FILES = ["capsule", "agentsession", "approval"] as const;

export function kubeConfigFor(cp: ControlPlaneHandle): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(cp.kubeconfigPath);
  return kc;
}

export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 30_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Installs crds/*.yaml with server-side apply (as `kubectl apply --server-side` would) and
 * waits until the API server serves all three kinds in `namespace`.
 */
export async function installCrds(rest: KubeRest, namespace: string): Promise<void> {
  for (const file of CRD_FILES) {
    const crd = parse(
      readFileSync(new URL(`../../crds/${file}.yaml`, import.meta.url), "utf8"),
    ) as { metadata: { name: string } };
    await rest.request(
      "PATCH",
      `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`,
      {
        contentType: "application/apply-patch+yaml",
        query: { fieldManager: "test-user", force: true },
        body: crd,
      },
    );
  }
  await waitFor("the astrid.dev kinds served", async () => {
    for (const plural of ["capsules", "agentsessions", "approvals"]) {
      const ok = await rest
        .request("GET", `/apis/astrid.dev/v1alpha1/namespaces/${namespace}/${plural}`)
        .then(() => true)
        .catch(() => false);
      if (!ok) return false;
    }
    return true;
  });
}

export async function createNamespace(rest: KubeRest, name: string): Promise<void> {
  await rest.request("POST", resourcePath(Namespaces), {
    body: { apiVersion: "v1", kind: "Namespace", metadata: { name } },
  });
}

/** Creates or replaces a ConfigMap directly (as a user would), outside the operator's client. */
export async function putConfigMap(
  rest: KubeRest,
  namespace: string,
  name: string,
  data: Record<string, string>,
  labels: Record<string, string> = {},
): Promise<{ metadata: { uid: string; resourceVersion: string } }> {
  return rest.request("PATCH", resourcePath(ConfigMaps, namespace, name), {
    contentType: "application/apply-patch+yaml",
    query: { fieldManager: "test-user", force: true },
    body: { apiVersion: "v1", kind: "ConfigMap", metadata: { name, namespace, labels }, data },
  });
}

export { KubeRest };
