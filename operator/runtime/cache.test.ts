import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  startControlPlane,
} from "../../test/harness/control-plane.js";
import { Informer } from "./cache.js";
import { Client } from "./client.js";
import { forObject, forOwner } from "./handlers.js";
import {
  ApiError,
  apiErrorFrom,
  ConfigMaps,
  ConflictError,
  GoneError,
  type KubeObject,
  KubeRest,
  Namespaces,
  NotFoundError,
  resourcePath,
} from "./rest.js";
import { createNamespace, kubeConfigFor, putConfigMap, waitFor } from "./test-support.js";

describe("API errors", () => {
  it("are typed by status, with the server's reason and message", () => {
    const gone = apiErrorFrom(
      410,
      { reason: "Expired", message: "too old resource version: 1 (20)" },
      "watch /api/v1/configmaps",
    );
    expect(gone).toBeInstanceOf(GoneError);
    expect(gone.message).toBe(
      "watch /api/v1/configmaps: 410 Expired: too old resource version: 1 (20)",
    );
    const other = apiErrorFrom(422, { reason: "Invalid", message: "bad" }, "PATCH /x");
    expect(other).toBeInstanceOf(ApiError);
    expect(other).not.toBeInstanceOf(ConflictError);
    expect(other.status).toBe(422);
  });
});

const built = controlPlaneToolsBuilt();
if (!built)
  console.warn(
    "skipping operator/runtime cache tests: control plane binaries not built (run `make tools`)",
  );

describe.skipIf(!built)("Informer and Client against a real API server", () => {
  let cp: ControlPlaneHandle;
  let rest: KubeRest;
  const ns = "cache-test";

  beforeAll(async () => {
    cp = await startControlPlane();
    rest = new KubeRest(kubeConfigFor(cp));
    await createNamespace(rest, ns);
  }, 120_000);

  afterAll(async () => {
    await cp?.stop();
  });

  it("sees creates, updates and deletes, and indexes by namespace and owner", async () => {
    const informer = new Informer(rest, ConfigMaps, { namespace: ns });
    const events: string[] = [];
    informer.addEventHandler({
      onAdd: (o) => events.push(`add ${o.metadata?.name}`),
      onUpdate: (_a, o) =>
        events.push(`update ${o.metadata?.name} ${o.data && JSON.stringify(o.data)}`),
      onDelete: (o) => events.push(`delete ${o.metadata?.name}`),
    });
    await putConfigMap(rest, ns, "before-start", { a: "1" });
    informer.start();
    await informer.waitForSync();
    expect(informer.get(ns, "before-start")?.data).toEqual({ a: "1" });

    const owner = await putConfigMap(rest, ns, "owner", {});
    await rest.request("POST", resourcePath(ConfigMaps, ns), {
      body: {
        metadata: {
          name: "owned",
          namespace: ns,
          labels: { tier: "child" },
          ownerReferences: [
            {
              apiVersion: "v1",
              kind: "ConfigMap",
              name: "owner",
              uid: owner.metadata.uid,
              controller: true,
            },
          ],
        },
      },
    });
    await waitFor("owned in cache", () => informer.get(ns, "owned"));
    expect(informer.listOwnedBy(owner.metadata.uid).map((o) => o.metadata?.name)).toEqual([
      "owned",
    ]);
    expect(informer.list(ns, { tier: "child" }).map((o) => o.metadata?.name)).toEqual(["owned"]);
    expect(informer.list("elsewhere")).toEqual([]);

    await putConfigMap(rest, ns, "before-start", { a: "2" });
    await waitFor(
      "update seen",
      () => (informer.get(ns, "before-start")?.data as { a?: string })?.a === "2",
    );
    await rest.request("DELETE", resourcePath(ConfigMaps, ns, "before-start"));
    await waitFor("delete seen", () => !informer.get(ns, "before-start"));

    expect(events).toContain("add before-start");
    expect(events).toContain('update before-start {"a":"2"}');
    expect(events).toContain("delete before-start");
    expect(events).toContain("add owned");
    await informer.stop();
  });

  it("resumes after its watch connection drops, and a re-list (as after 410 Gone) reports missed deletes", async () => {
    const informer = new Informer(rest, ConfigMaps, { namespace: ns });
    const deleted: string[] = [];
    informer.addEventHandler({ onDelete: (o) => deleted.push(o.metadata?.name ?? "") });
    informer.start();
    await informer.waitForSync();
    expect(informer.stats.lists).toBe(1);
    await waitFor("first watch opened", () => informer.stats.watches === 1);

    informer.restartWatch();
    await putConfigMap(rest, ns, "after-drop", { x: "1" });
    await waitFor("object created after the drop", () => informer.get(ns, "after-drop"));
    expect(informer.stats.watches).toBeGreaterThanOrEqual(2);
    expect(informer.stats.lists).toBe(1);

    // Stop, delete behind the informer's back, and resume with a re-list (the 410 Gone path):
    // no watch event will ever tell of the delete, only the diff of list against store can.
    await informer.stop();
    await rest.request("DELETE", resourcePath(ConfigMaps, ns, "after-drop"));
    informer.restartWatch({ relist: true });
    informer.start();
    await waitFor("missed delete reported", () => deleted.includes("after-drop"));
    expect(informer.stats.lists).toBe(2);
    expect(informer.get(ns, "after-drop")).toBeUndefined();
    await informer.stop();
  });

  it("lists in pages and keeps serving other handlers when one throws", async () => {
    const informer = new Informer(rest, ConfigMaps, { namespace: ns, pageSize: 1 });
    const names: string[] = [];
    informer.addEventHandler({
      onAdd: () => {
        throw new Error("buggy handler");
      },
    });
    informer.addEventHandler({ onAdd: (o) => names.push(o.metadata?.name ?? "") });
    informer.start();
    await informer.waitForSync();
    const direct = await rest.request<{ items: KubeObject[] }>("GET", resourcePath(ConfigMaps, ns));
    const expected = direct.items.map((o) => o.metadata?.name).sort();
    expect(expected.length).toBeGreaterThanOrEqual(2);
    expect(
      informer
        .list(ns)
        .map((o) => o.metadata?.name)
        .sort(),
    ).toEqual(expected);
    expect(names.sort()).toEqual(expected);
    await informer.stop();
  });

  it("re-announces every cached object as an update on each resync period", async () => {
    const informer = new Informer(rest, ConfigMaps, { namespace: ns, resyncMs: 20 });
    const resynced = new Set<string>();
    informer.addEventHandler({
      onUpdate: (a, b) => {
        if (a === b) resynced.add(b.metadata?.name ?? "");
      },
    });
    informer.start();
    await informer.waitForSync();
    await waitFor("owner and owned resynced", () => resynced.has("owner") && resynced.has("owned"));
    await informer.stop();
  });

  it("maps events to keys: forObject gives the object's key, forOwner the controller owner's", async () => {
    const informer = new Informer(rest, ConfigMaps, { namespace: ns });
    const own: string[] = [];
    const owners: string[] = [];
    informer.addEventHandler(forObject({ add: (k) => own.push(k) }));
    informer.addEventHandler(
      forOwner({ add: (k) => owners.push(k) }, { kind: "ConfigMap", group: "" }),
    );
    informer.start();
    await informer.waitForSync();
    expect(own).toContain(`${ns}/owned`);
    expect(owners).toEqual([`${ns}/owner`]);
    await informer.stop();
  });

  it("reads through the cache and applies with one field manager; conflicts are typed", async () => {
    const client = new Client(rest);
    expect(() => client.get(ConfigMaps, ns, "x")).toThrow(
      "no informer for ConfigMap (v1): reads come from the cache; ask the manager for one first",
    );
    const informer = new Informer(rest, ConfigMaps, { namespace: ns });
    client.registerInformer(informer);
    informer.start();
    await informer.waitForSync();

    const applied: KubeObject = await client.apply(ConfigMaps, {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "managed", namespace: ns },
      data: { owner: "operator" },
    });
    const managers = ((applied.metadata?.managedFields ?? []) as { manager: string }[]).map(
      (m) => m.manager,
    );
    expect(managers).toEqual(["astrid-operator"]);
    await waitFor("applied object cached", () => client.get(ConfigMaps, ns, "managed"));

    const other = new Client(rest, { fieldManager: "someone-else" });
    const err = await other
      .apply(ConfigMaps, {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: "managed", namespace: ns },
        data: { owner: "intruder" },
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).fields).toEqual([".data.owner"]);

    expect(await client.delete(ConfigMaps, ns, "managed")).toBe(true);
    expect(await client.delete(ConfigMaps, ns, "managed")).toBe(false);
    await expect(
      rest.request("GET", resourcePath(ConfigMaps, ns, "managed")),
    ).rejects.toBeInstanceOf(NotFoundError);
    await expect(
      client.apply(ConfigMaps, {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "s", namespace: ns },
      }),
    ).rejects.toThrow(
      "apply ConfigMap s: expected apiVersion v1 and kind ConfigMap, got v1 Secret",
    );
    await informer.stop();
  });

  it("applyStatus writes the status subresource", async () => {
    const client = new Client(rest);
    const out = await client.applyStatus(Namespaces, {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: ns },
      status: {
        conditions: [{ type: "AstridTest", status: "True", reason: "Applied", message: "by test" }],
      },
    });
    const status = out.status as { conditions?: { type: string }[] };
    expect(status.conditions?.map((c) => c.type)).toContain("AstridTest");
  });
});
