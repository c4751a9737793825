import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  startControlPlane,
} from "../../../test/harness/control-plane.js";
import { Controller } from "../controller.js";
import { Manager } from "../manager.js";
import { ConfigMaps, type KubeObject, KubeRest, resourcePath } from "../rest.js";
import { createNamespace, kubeConfigFor, putConfigMap, waitFor } from "../test-support.js";
import { WorkQueue } from "../workqueue.js";
import {
  childConfigMapReconciler,
  desiredChildConfigMap,
  PARENT_LABEL,
  watchParentsAndChildren,
} from "./child-configmap.js";

describe("desiredChildConfigMap (pure builder)", () => {
  it("copies the data and points its controller ownerReference at the parent", () => {
    const child = desiredChildConfigMap({
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "p", namespace: "ns", uid: "u-1", labels: { [PARENT_LABEL]: "true" } },
      data: { k: "v" },
    });
    expect(child).toEqual({
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: {
        name: "p-child",
        namespace: "ns",
        labels: { parent: "p" },
        ownerReferences: [
          {
            apiVersion: "v1",
            kind: "ConfigMap",
            name: "p",
            uid: "u-1",
            controller: true,
            blockOwnerDeletion: true,
          },
        ],
      },
      data: { k: "v" },
    });
  });

  it("refuses a parent without a uid", () => {
    expect(() => desiredChildConfigMap({ metadata: { name: "p" } })).toThrow(
      "parent ConfigMap must have metadata.name and metadata.uid",
    );
  });
});

const built = controlPlaneToolsBuilt();
if (!built)
  console.warn(
    "skipping example controller tests: control plane binaries not built (run `make tools`)",
  );

/** A manager running the example controller, counting reconciles per key. */
function exampleManager(cp: ControlPlaneHandle, ns: string) {
  const manager = new Manager({
    kubeConfig: kubeConfigFor(cp),
    informerDefaults: { namespace: ns },
  });
  const queue = new WorkQueue({ name: "child-configmap" });
  watchParentsAndChildren(manager.informer(ConfigMaps), queue);
  // Counts writes that reach the API server: the server itself drops a no-op apply without a
  // new resourceVersion, so only this count shows the reconciler skipped the write.
  let applies = 0;
  const realApply = manager.client.apply.bind(manager.client);
  manager.client.apply = ((type, obj, opts) => {
    applies++;
    return realApply(type, obj, opts);
  }) as typeof manager.client.apply;
  const reconcile = childConfigMapReconciler(manager.client);
  const counts = new Map<string, number>();
  let gate: Promise<void> | undefined;
  const controller = new Controller({
    name: "child-configmap",
    queue,
    registry: new Registry(),
    reconcile: async (key) => {
      counts.set(key, (counts.get(key) ?? 0) + 1);
      await gate;
      return reconcile(key);
    },
  });
  manager.addController(controller);
  return {
    manager,
    queue,
    count: (key: string) => counts.get(key) ?? 0,
    applies: () => applies,
    hold(): () => void {
      let open = () => {};
      gate = new Promise<void>((r) => {
        open = r;
      });
      return () => {
        gate = undefined;
        open();
      };
    },
  };
}

describe.skipIf(!built)("example controller: a child ConfigMap per parent", () => {
  let cp: ControlPlaneHandle;
  let rest: KubeRest;
  const ns = "example";
  const getChild = () =>
    rest
      .request<KubeObject>("GET", resourcePath(ConfigMaps, ns, "p1-child"))
      .catch(() => undefined);

  beforeAll(async () => {
    cp = await startControlPlane();
    rest = new KubeRest(kubeConfigFor(cp));
    await createNamespace(rest, ns);
  }, 120_000);

  afterAll(async () => {
    await cp?.stop();
  });

  it("creates the child, re-creates it when deleted, never rewrites it unchanged, and dedupes bursts", async () => {
    const a = exampleManager(cp, ns);
    await a.manager.start();
    const parent = await putConfigMap(
      rest,
      ns,
      "p1",
      { greeting: "hello" },
      { [PARENT_LABEL]: "true" },
    );

    const child = await waitFor("child created", getChild);
    expect(child.data).toEqual({ greeting: "hello" });
    expect(child.metadata?.labels).toEqual({ parent: "p1" });
    expect(child.metadata?.ownerReferences?.[0]).toMatchObject({
      uid: parent.metadata.uid,
      controller: true,
    });
    const managers = ((child.metadata?.managedFields ?? []) as { manager: string }[]).map(
      (m) => m.manager,
    );
    expect(managers).toEqual(["astrid-operator"]);

    // Deleted child: the reconciler finds it missing in the cache and applies it again.
    await rest.request("DELETE", resourcePath(ConfigMaps, ns, "p1-child"));
    const recreated = await waitFor("child re-created", async () => {
      const c = await getChild();
      return c && c.metadata?.uid !== child.metadata?.uid ? c : undefined;
    });
    expect(recreated.data).toEqual({ greeting: "hello" });

    // Nothing changed: more reconciles must not write.
    await waitFor(
      "cache holds the re-created child",
      () =>
        a.manager.client.get(ConfigMaps, ns, "p1-child")?.metadata?.uid === recreated.metadata?.uid,
    );
    const before = a.count(`${ns}/p1`);
    const appliesBefore = a.applies();
    a.queue.add(`${ns}/p1`);
    await waitFor("extra reconcile ran", () => a.count(`${ns}/p1`) > before);
    expect(a.applies()).toBe(appliesBefore);
    expect((await getChild())?.metadata?.resourceVersion).toBe(recreated.metadata?.resourceVersion);

    // Ten updates while a reconcile of p1 is held: the queue keeps one pending key.
    const release = a.hold();
    const held = a.count(`${ns}/p1`);
    let lastRv = "";
    for (let i = 0; i < 10; i++) {
      lastRv = (
        await putConfigMap(rest, ns, "p1", { greeting: `v${i}` }, { [PARENT_LABEL]: "true" })
      ).metadata.resourceVersion;
    }
    await waitFor(
      "all ten updates in the cache",
      () => a.manager.client.get(ConfigMaps, ns, "p1")?.metadata?.resourceVersion === lastRv,
    );
    release();
    const updated = await waitFor("child follows the last update", async () => {
      const c = await getChild();
      return (c?.data as Record<string, string> | undefined)?.greeting === "v9" ? c : undefined;
    });
    expect(updated.data).toEqual({ greeting: "v9" });
    const reconcilesForTen = a.count(`${ns}/p1`) - held;
    expect(reconcilesForTen).toBeLessThan(10);
    expect(reconcilesForTen).toBeGreaterThanOrEqual(1);

    // Restart: a fresh manager reconciles everything on start and writes nothing.
    await a.manager.stop();
    const b = exampleManager(cp, ns);
    await b.manager.start();
    await waitFor("restarted manager reconciled p1", () => b.count(`${ns}/p1`) > 0);
    expect(b.applies()).toBe(0);
    expect((await getChild())?.metadata?.resourceVersion).toBe(updated.metadata?.resourceVersion);
    await b.manager.stop();
  }, 60_000);
});
