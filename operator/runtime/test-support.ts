/**
 * Helpers for the runtime's tests against a real control plane: a KubeConfig for it, and
 * waiting for a condition (never for a fixed time — the condition decides, the timeout only
 * turns a hang into a clear failure).
 */
import { KubeConfig } from "@kubernetes/client-node";
import type { ControlPlaneHandle } from "../../test/harness/control-plane.js";
import { ConfigMaps, KubeRest, Namespaces, resourcePath } from "./rest.js";

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
