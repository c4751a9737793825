/**
 * The Capsule reconciler against a real etcd + kube-apiserver with the committed CRDs. No
 * kubelet and no kube-controller-manager run here: no pods become ready (Ready stays False with
 * WorkloadNotReady) and nothing garbage-collects children, so deletion checks only that owner
 * references are set and the finalizer comes off.
 */
import { createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  startControlPlane,
} from "../../test/harness/control-plane.js";
import { IssuerStore } from "../identity/issuer.js";
import { Controller } from "../runtime/controller.js";
import { Manager } from "../runtime/manager.js";
import { ConfigMaps, type KubeObject, KubeRest, resourcePath, Secrets } from "../runtime/rest.js";
import { createNamespace, installCrds, kubeConfigFor, waitFor } from "../runtime/test-support.js";
import { WorkQueue } from "../runtime/workqueue.js";
import { CONFIG_HASH_ANNOTATION, UNENFORCED_HOSTS_ANNOTATION } from "./desired.js";
import { CapsuleIdentities } from "./identity-secret.js";
import { capsuleReconciler, FINALIZER, watchCapsules } from "./reconciler.js";
import { Capsules, NetworkPolicies, StatefulSets } from "./resources.js";
import { secretKeysFrom } from "./secret-refs.js";

const built = controlPlaneToolsBuilt();
if (!built)
  console.warn(
    "skipping Capsule reconciler tests: control plane binaries not built (run `make tools`)",
  );

const repo = (p: string) => new URL(`../../${p}`, import.meta.url);
const NS = "astrid-demo";
const DIGEST = `sha256:${"a".repeat(64)}`;
const PKG = (name: string) => `https://pkg.example/capsules/${name}-1.0.0.capsule`;
const opts = {
  sidecarImage: "registry.example.com/astrid/astrid:1.0.0",
  busUrl: "nats://nats.nats:4222",
};

type Condition = { type: string; status: string; reason: string; message: string };
// biome-ignore lint/suspicious/noExplicitAny: the tests read deep into API objects
type Obj = KubeObject & Record<string, any>;

const manifest = (name: string, extra: string) => `[package]
name = "${name}"
version = "1.0.0"
description = "test capsule"
${extra}
[wasm]
module = "main.js"
`;

describe.skipIf(!built)("Capsule reconciler on a real API server", () => {
  let cp: ControlPlaneHandle;
  let rest: KubeRest;
  let manager: Manager;
  let queue: WorkQueue;
  let controller: Controller;
  let writes = 0;
  let identityVersion: string | undefined;
  let identityPem: string | undefined;
  const cleaned: string[] = [];
  const reconciles = new Map<string, number>();

  const get = (type: typeof Capsules, name: string) =>
    rest.request<Obj>("GET", resourcePath(type, NS, name)).catch(() => undefined);
  const condition = (obj: Obj | undefined, type: string): Condition | undefined =>
    (obj?.status?.conditions as Condition[] | undefined)?.find((c) => c.type === type);
  const putCapsule = (name: string, text: string, pkg: Record<string, string>) =>
    rest.request<Obj>("PATCH", resourcePath(Capsules, NS, name), {
      contentType: "application/apply-patch+yaml",
      query: { fieldManager: "test-user", force: true },
      body: {
        apiVersion: "astrid.dev/v1alpha1",
        kind: "Capsule",
        metadata: { name, namespace: NS },
        spec: { manifest: text, package: { digest: DIGEST, ...pkg }, replicas: 1 },
      },
    });

  beforeAll(async () => {
    cp = await startControlPlane();
    rest = new KubeRest(kubeConfigFor(cp));
    await createNamespace(rest, NS);
    await installCrds(rest, NS);

    manager = new Manager({ kubeConfig: kubeConfigFor(cp), informerDefaults: { namespace: NS } });
    // Counts writes that reach the API server: only this shows a reconcile skipped a write.
    const client = manager.client;
    const realApply = client.apply.bind(client);
    const realApplyStatus = client.applyStatus.bind(client);
    client.apply = ((type, obj, o) => {
      writes++;
      return realApply(type, obj, o);
    }) as typeof client.apply;
    client.applyStatus = ((type, obj, o) => {
      writes++;
      return realApplyStatus(type, obj, o);
    }) as typeof client.applyStatus;
    queue = new WorkQueue({ name: "capsule" });
    watchCapsules(
      {
        capsules: manager.informer(Capsules),
        children: [
          manager.informer(ConfigMaps),
          manager.informer(StatefulSets),
          manager.informer(NetworkPolicies),
        ],
      },
      queue,
    );
    const reconcile = capsuleReconciler(client, {
      ...opts,
      issuers: new IssuerStore(manager.rest),
      identities: new CapsuleIdentities(manager.rest),
      secretKeys: secretKeysFrom(manager.rest),
      unresolvedRequeueMs: 60_000,
      missingSecretRequeueMs: 300,
      cleanup: async (c) => {
        cleaned.push(c.metadata.name);
      },
    });
    controller = new Controller({
      name: "capsule",
      queue,
      registry: new Registry(),
      // Counted when finished, so a test can wait for a whole reconcile, writes included.
      reconcile: async (key) => {
        try {
          return await reconcile(key);
        } finally {
          reconciles.set(key, (reconciles.get(key) ?? 0) + 1);
        }
      },
    });
    manager.addController(controller);
    await manager.start();
  }, 120_000);

  afterAll(async () => {
    await manager?.stop();
    await cp?.stop();
  }, 30_000);

  it("turns examples/capsule-fs.yaml into a ConfigMap, a StatefulSet and a NetworkPolicy it owns", async () => {
    const example = parse(readFileSync(repo("examples/capsule-fs.yaml"), "utf8")) as Obj;
    // The example names an OCI artefact, which is not fetched yet (UnsupportedPackageRef).
    example.spec.package.wasmRef = PKG("fs");
    const created = await rest.request<Obj>("POST", resourcePath(Capsules, NS), {
      body: example,
    });
    const uid = created.metadata?.uid;
    const owned = (o: Obj) =>
      o.metadata?.ownerReferences?.[0]?.uid === uid &&
      o.metadata?.ownerReferences?.[0]?.controller === true;

    const cm = await waitFor("manifest ConfigMap", () => get(ConfigMaps, "fs-manifest"));
    expect(owned(cm)).toBe(true);
    expect(cm.data).toEqual({ "Capsule.toml": example.spec.manifest });

    const sts = await waitFor("StatefulSet", () => get(StatefulSets, "fs"));
    expect(owned(sts)).toBe(true);
    const pod = sts.spec.template;
    expect(pod.metadata.labels).toMatchObject({
      "app.kubernetes.io/part-of": "astrid",
      "app.kubernetes.io/component": "capsule",
    });
    expect(pod.metadata.annotations[CONFIG_HASH_ANNOTATION]).toMatch(/^[0-9a-f]{64}$/);
    expect(pod.spec.automountServiceAccountToken).toBe(false);
    // wasmRef: no capsule container, the sidecar runs the module the init container fetched.
    expect(pod.spec.containers.map((c: Obj) => c.name)).toEqual(["sidecar"]);
    expect(pod.spec.containers[0].args).toEqual(["dist/astrid-sidecar.js"]);
    expect(pod.spec.initContainers.map((c: Obj) => [c.name, c.args])).toEqual([
      ["fetch-package", ["dist/astrid-sidecar.js", "fetch-package"]],
    ]);
    expect(pod.spec.containers[0].ports[0]).toMatchObject({ name: "metrics", containerPort: 9464 });
    expect(sts.spec.volumeClaimTemplates[0].metadata.name).toBe("audit");

    const np = await waitFor("NetworkPolicy", () => get(NetworkPolicies, "fs"));
    expect(owned(np)).toBe(true);
    expect(np.spec.policyTypes).toEqual(["Egress"]);
    expect(np.spec.egress).toHaveLength(2); // DNS and NATS: the fs capsule has no net rules

    const status = await waitFor("status written", async () => {
      const c = await get(Capsules, "fs");
      return condition(c, "Ready") ? c : undefined;
    });
    expect(status.metadata?.finalizers).toEqual([FINALIZER]);
    expect(condition(status, "Accepted")).toMatchObject({ status: "True", reason: "Accepted" });
    expect(condition(status, "ResolvedRefs")).toMatchObject({ status: "True" });
    expect(condition(status, "Ready")).toMatchObject({
      status: "False",
      reason: "WorkloadNotReady",
      message: "0/1 replicas ready",
    });
    for (const c of status.status.conditions as Obj[])
      expect(c.observedGeneration).toBe(status.metadata?.generation);
  });

  it("creates the capsule's identity Secret and the namespace's issuer before the pods need them", async () => {
    const fs = (await get(Capsules, "fs")) as Obj;
    const secret = await waitFor("identity Secret", () => get(Secrets, "fs-identity"));
    expect(secret.metadata?.ownerReferences).toEqual([
      {
        apiVersion: "astrid.dev/v1alpha1",
        kind: "Capsule",
        name: "fs",
        uid: fs.metadata?.uid,
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    expect(Object.keys(secret.data)).toEqual(["key.pem"]);
    const pem = Buffer.from(secret.data["key.pem"], "base64").toString();
    expect(pem.startsWith("-----BEGIN PRIVATE KEY-----")).toBe(true);
    expect(createPrivateKey(pem).asymmetricKeyType).toBe("ed25519");
    identityVersion = secret.metadata?.resourceVersion;
    identityPem = pem;

    const sts = (await get(StatefulSets, "fs")) as Obj;
    expect(sts.spec.template.spec.volumes).toContainEqual({
      name: "identity",
      secret: { secretName: "fs-identity", defaultMode: 0o440 },
    });
    expect(sts.spec.template.spec.volumes).toContainEqual({
      name: "trust",
      configMap: { name: "astrid-trust", defaultMode: 0o644 },
    });
    expect((await get(ConfigMaps, "astrid-trust"))?.data["issuer.pem"]).toMatch(
      /^-----BEGIN PUBLIC KEY-----/,
    );
    expect((await get(Secrets, "astrid-issuer"))?.data["key.pem"]).toBeDefined();
  });

  it("writes nothing when reconciling again", async () => {
    const versions = async () =>
      Promise.all([
        get(Capsules, "fs"),
        get(ConfigMaps, "fs-manifest"),
        get(StatefulSets, "fs"),
        get(NetworkPolicies, "fs"),
        get(Secrets, "fs-identity"),
        get(Secrets, "astrid-issuer"),
        get(ConfigMaps, "astrid-trust"),
      ]).then((objs) => objs.map((o) => o?.metadata?.resourceVersion));
    const before = await versions();
    await waitFor(
      "cache caught up",
      () => manager.client.get(Capsules, NS, "fs")?.metadata?.resourceVersion === before[0],
    );
    const writesBefore = writes;
    const n = reconciles.get(`${NS}/fs`) ?? 0;
    queue.add(`${NS}/fs`);
    await waitFor("extra reconcile ran", () => (reconciles.get(`${NS}/fs`) ?? 0) > n);
    expect(writes).toBe(writesBefore);
    expect(await versions()).toEqual(before);
  });

  it("re-creates a deleted StatefulSet", async () => {
    const old = await get(StatefulSets, "fs");
    await rest.request("DELETE", resourcePath(StatefulSets, NS, "fs"));
    const again = await waitFor("StatefulSet re-created", async () => {
      const s = await get(StatefulSets, "fs");
      return s && s.metadata?.uid !== old?.metadata?.uid ? s : undefined;
    });
    expect(again.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION]).toBe(
      old?.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION],
    );
  });

  it("rolls the pods (new config hash) when the manifest changes", async () => {
    const old = await get(StatefulSets, "fs");
    const oldHash = old?.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION];
    const fs = (await get(Capsules, "fs")) as Obj;
    const edited = `${fs.spec.manifest}\n# edited\n`;
    await rest.request("PATCH", resourcePath(Capsules, NS, "fs"), {
      contentType: "application/merge-patch+json",
      body: { spec: { manifest: edited } },
    });
    const rolled = await waitFor("config hash changed", async () => {
      const s = await get(StatefulSets, "fs");
      const h = s?.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION];
      return h && h !== oldHash ? s : undefined;
    });
    expect(rolled.metadata?.uid).toBe(old?.metadata?.uid);
    expect((await get(ConfigMaps, "fs-manifest"))?.data).toEqual({ "Capsule.toml": edited });
    // The key that signs the audit chain stays: a changed Capsule is the same identity.
    const secret = (await get(Secrets, "fs-identity")) as Obj;
    expect(secret.metadata?.resourceVersion).toBe(identityVersion);
    expect(Buffer.from(secret.data["key.pem"], "base64").toString()).toBe(identityPem);
  });

  it("refuses a wasmRef that is not http(s) with Accepted=False, then runs it once it is", async () => {
    const text = manifest("oci", "");
    await putCapsule("oci", text, { wasmRef: "oci://x/oci:1" });
    const message =
      'package.wasmRef "oci://x/oci:1": expected an http(s) URL of a .capsule archive (made by astrid-build); OCI references and other schemes are not fetched yet';
    const refused = await waitFor("Accepted=False", async () => {
      const c = await get(Capsules, "oci");
      return condition(c, "Accepted")?.status === "False" ? c : undefined;
    });
    expect(condition(refused, "Accepted")).toMatchObject({
      reason: "UnsupportedPackageRef",
      message,
    });
    expect(condition(refused, "Ready")).toMatchObject({ status: "False", reason: "NotAccepted" });
    expect(controller.terminalErrors().get(`${NS}/oci`)).toBe(`Capsule ${NS}/oci: ${message}`);
    expect(await get(StatefulSets, "oci")).toBeUndefined();
    expect(await get(Secrets, "oci-identity")).toBeUndefined();

    await putCapsule("oci", text, { wasmRef: PKG("oci") });
    const sts = await waitFor("StatefulSet", () => get(StatefulSets, "oci"));
    expect(sts.spec.template.spec.initContainers[0].env[0]).toEqual({
      name: "ASTRID_FETCH_URL",
      value: PKG("oci"),
    });
    const accepted = await waitFor("Accepted=True", async () => {
      const c = await get(Capsules, "oci");
      return condition(c, "Accepted")?.status === "True" ? c : undefined;
    });
    expect(condition(accepted, "Accepted")?.reason).toBe("Accepted");
  });

  it("is not Ready until the capsules it imports are", async () => {
    // Plays the StatefulSet controller + kubelet: marks a capsule's pods ready.
    const podsReady = async (name: string) => {
      const sts = await waitFor(`StatefulSet ${name}`, () => get(StatefulSets, name));
      await rest.request("PATCH", `${resourcePath(StatefulSets, NS, name)}/status`, {
        contentType: "application/merge-patch+json",
        body: {
          status: {
            replicas: 1,
            readyReplicas: 1,
            availableReplicas: 1,
            observedGeneration: sts?.metadata?.generation,
          },
        },
      });
    };
    const readyOf = async (name: string) => condition(await get(Capsules, name), "Ready");
    await putCapsule("embedder", manifest("embedder", '\n[exports.astrid]\nembed = "1.0.0"\n'), {
      wasmRef: PKG("embedder"),
    });
    await putCapsule("front", manifest("front", '\n[imports.astrid]\nembed = "^1.0.0"\n'), {
      wasmRef: PKG("front"),
    });
    await podsReady("front");
    const waiting = await waitFor("front ImportsNotReady", async () => {
      const r = await readyOf("front");
      return r?.reason === "ImportsNotReady" ? r : undefined;
    });
    expect(waiting).toMatchObject({
      status: "False",
      message: "imports not ready: astrid.embed → embedder",
    });
    // The exporter turning Ready is what wakes its importer.
    await podsReady("embedder");
    await waitFor("embedder Ready", async () => (await readyOf("embedder"))?.status === "True");
    const ready = await waitFor("front Ready", async () => {
      const r = await readyOf("front");
      return r?.status === "True" ? r : undefined;
    });
    expect(ready.reason).toBe("WorkloadReady");
  });

  it("says which Secret spec.env misses, and recovers when it appears", async () => {
    const text = manifest("keyed", '[env.API_KEY]\ntype = "secret"\ndescription = "key"\n');
    await rest.request<Obj>("PATCH", resourcePath(Capsules, NS, "keyed"), {
      contentType: "application/apply-patch+yaml",
      query: { fieldManager: "test-user", force: true },
      body: {
        apiVersion: "astrid.dev/v1alpha1",
        kind: "Capsule",
        metadata: { name: "keyed", namespace: NS },
        spec: {
          manifest: text,
          package: { digest: DIGEST, wasmRef: PKG("keyed") },
          env: [
            { name: "API_KEY", valueFrom: { secretKeyRef: { name: "keyed-creds", key: "k" } } },
          ],
        },
      },
    });
    const reasonIs = (reason: string) => async () => {
      const c = await get(Capsules, "keyed");
      return condition(c, "ResolvedRefs")?.reason === reason ? c : undefined;
    };
    const missing = await waitFor("SecretNotFound", reasonIs("SecretNotFound"));
    expect(condition(missing, "ResolvedRefs")).toMatchObject({
      status: "False",
      message: "API_KEY: Secret keyed-creds not found",
    });
    expect(condition(missing, "Ready")).toMatchObject({
      status: "False",
      reason: "SecretNotFound",
      message: "API_KEY: Secret keyed-creds not found",
    });
    // The workload exists anyway: its pods start by themselves once the Secret is there.
    expect(await get(StatefulSets, "keyed")).toBeDefined();

    const secret = (data: Record<string, string>) => ({
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "keyed-creds", namespace: NS },
      stringData: data,
    });
    await rest.request("POST", resourcePath(Secrets, NS), { body: secret({ other: "x" }) });
    const noKey = await waitFor("no key", async () => {
      const c = await get(Capsules, "keyed");
      return condition(c, "ResolvedRefs")?.message.includes("no key") ? c : undefined;
    });
    expect(condition(noKey, "ResolvedRefs")?.message).toBe(
      "API_KEY: Secret keyed-creds has no key k",
    );

    await rest.request("PUT", resourcePath(Secrets, NS, "keyed-creds"), {
      body: secret({ k: "sk-test" }),
    });
    const resolved = await waitFor("Resolved", reasonIs("Resolved"));
    expect(condition(resolved, "ResolvedRefs")?.status).toBe("True");
    expect(condition(resolved, "Ready")?.reason).toBe("WorkloadNotReady");
  });

  it("marks an invalid manifest Accepted=False with the parser's file:line message, not retried", async () => {
    await putCapsule("bad", manifest("bad", "").replace('version = "1.0.0"', "version = 3"), {
      wasmRef: "oci://x/bad:1",
    });
    const bad = await waitFor("Accepted=False", async () => {
      const c = await get(Capsules, "bad");
      return condition(c, "Accepted")?.status === "False" ? c : undefined;
    });
    expect(condition(bad, "Accepted")).toMatchObject({
      reason: "InvalidManifest",
      message: "Capsule.toml:3: package.version: expected a string, got number 3",
    });
    expect(controller.terminalErrors().get(`${NS}/bad`)).toBe(
      `Capsule ${NS}/bad: Capsule.toml:3: package.version: expected a string, got number 3`,
    );
    expect(await get(StatefulSets, "bad")).toBeUndefined();
  });

  it("reports an import with no exporter, then resolves it when the exporter appears", async () => {
    await putCapsule(
      "web",
      manifest(
        "web",
        '\n[imports.astrid]\nllm = "^1.0.0"\n\n[capabilities]\nnet = ["https://10.1.2.3:443", "https://api.example.com:443"]\n',
      ),
      { image: "registry.example.com/x/web:1" },
    );
    const web = await waitFor("ResolvedRefs=False", async () => {
      const c = await get(Capsules, "web");
      return condition(c, "ResolvedRefs")?.status === "False" ? c : undefined;
    });
    expect(condition(web, "ResolvedRefs")).toMatchObject({
      reason: "MissingExporter",
      message: "web imports astrid.llm ^1.0.0 but no capsule exports it",
    });
    const np = (await get(NetworkPolicies, "web")) as Obj;
    expect(np.spec.egress[2]).toEqual({
      to: [{ ipBlock: { cidr: "10.1.2.3/32" } }],
      ports: [{ protocol: "TCP", port: 443 }],
    });
    expect(np.metadata?.annotations?.[UNENFORCED_HOSTS_ANNOTATION]).toContain(
      "https://api.example.com:443",
    );

    const webHash = async () =>
      (await get(StatefulSets, "web"))?.spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION];
    const unwired = await webHash();
    const bindingsOf = async () =>
      (((await get(StatefulSets, "web"))?.spec.template.spec.containers ?? []) as Obj[])
        .find((c) => c.name === "sidecar")
        ?.env.find((e: Obj) => e.name === "ASTRID_BINDINGS")?.value;
    expect(await bindingsOf()).toBeUndefined();

    // An exporter whose package cannot be fetched cannot serve anything.
    await putCapsule("llmoci", manifest("llmoci", '\n[exports.astrid]\nllm = "1.1.0"\n'), {
      wasmRef: "oci://x/llm:1",
    });
    await waitFor("llmoci refused", async () =>
      condition(await get(Capsules, "llmoci"), "Accepted")?.reason === "UnsupportedPackageRef"
        ? true
        : undefined,
    );
    const n = reconciles.get(`${NS}/web`) ?? 0;
    queue.add(`${NS}/web`);
    await waitFor("web reconciled", () => (reconciles.get(`${NS}/web`) ?? 0) > n);
    expect(condition(await get(Capsules, "web"), "ResolvedRefs")?.reason).toBe("MissingExporter");
    await rest.request("DELETE", resourcePath(Capsules, NS, "llmoci"));

    await putCapsule("llm", manifest("llm", '\n[exports.astrid]\nllm = "1.1.0"\n'), {
      wasmRef: PKG("llm"),
    });
    const resolved = await waitFor("ResolvedRefs=True", async () => {
      const c = await get(Capsules, "web");
      return condition(c, "ResolvedRefs")?.status === "True" ? c : undefined;
    });
    expect(condition(resolved, "ResolvedRefs")?.reason).toBe("Resolved");
    // The wiring reaches the sidecar, and re-wiring rolls the pods.
    await waitFor("ASTRID_BINDINGS set", async () =>
      (await bindingsOf()) === "astrid.llm=llm" ? true : undefined,
    );
    expect(await webHash()).not.toBe(unwired);

    // Losing the exporter is noticed too: its delete wakes the capsules that imported from it.
    await rest.request("DELETE", resourcePath(Capsules, NS, "llm"));
    await waitFor("ResolvedRefs=False again", async () => {
      const c = await get(Capsules, "web");
      return condition(c, "ResolvedRefs")?.reason === "MissingExporter" ? c : undefined;
    });
  });

  it("runs the finalizer on delete; children keep their owner references for the GC", async () => {
    const fs = (await get(Capsules, "fs")) as Obj;
    await rest.request("DELETE", resourcePath(Capsules, NS, "fs"));
    await waitFor("Capsule gone (finalizer removed)", async () =>
      (await get(Capsules, "fs")) === undefined ? true : undefined,
    );
    expect(cleaned).toContain("fs");
    for (const [type, name] of [
      [ConfigMaps, "fs-manifest"],
      [StatefulSets, "fs"],
      [NetworkPolicies, "fs"],
      [Secrets, "fs-identity"],
    ] as const) {
      const child = await get(type, name);
      expect(child?.metadata?.ownerReferences?.[0]?.uid).toBe(fs.metadata?.uid);
    }
  });
});
