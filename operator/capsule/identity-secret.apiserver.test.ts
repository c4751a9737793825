/**
 * CapsuleIdentities against a real etcd + kube-apiserver: the `<capsule>-identity` Secret is
 * created once, kept across operator processes, and an existing one is never replaced.
 */
import { createPublicKey } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  startControlPlane,
} from "../../test/harness/control-plane.js";
import type { Capsule } from "../api/capsule.js";
import { newEd25519Pem } from "../identity/key-secret.js";
import { KubeRest, type ObjectMeta, resourcePath, Secrets } from "../runtime/rest.js";
import { createNamespace, kubeConfigFor } from "../runtime/test-support.js";
import { CapsuleIdentities } from "./identity-secret.js";

const built = controlPlaneToolsBuilt();
const NS = "identities";

interface SecretBody {
  metadata: ObjectMeta;
  data: Record<string, string>;
}

const capsule = (name: string, uid: string): Capsule => ({
  apiVersion: "astrid.dev/v1alpha1",
  kind: "Capsule",
  metadata: { name, namespace: NS, uid },
  spec: {
    manifest: "unused",
    package: { wasmRef: "https://pkg.example/x.capsule", digest: `sha256:${"a".repeat(64)}` },
    replicas: 1,
  },
});

describe.skipIf(!built)("CapsuleIdentities on a real API server", () => {
  let cp: ControlPlaneHandle;
  let rest: KubeRest;
  const secret = (name: string) => rest.request<SecretBody>("GET", resourcePath(Secrets, NS, name));
  const putSecret = (name: string, metadata: ObjectMeta, pem: string) =>
    rest.request("POST", resourcePath(Secrets, NS), {
      body: {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name, ...metadata },
        data: { "key.pem": Buffer.from(pem).toString("base64") },
      },
    });

  beforeAll(async () => {
    cp = await startControlPlane();
    rest = new KubeRest(kubeConfigFor(cp));
    await createNamespace(rest, NS);
  }, 120_000);

  afterAll(async () => {
    await cp?.stop();
  }, 30_000);

  it("creates the Secret once, owned by the Capsule; another process keeps it", async () => {
    await new CapsuleIdentities(rest).ensure(capsule("fs", "uid-fs"));
    const first = await secret("fs-identity");
    expect(first.metadata.ownerReferences).toEqual([
      {
        apiVersion: "astrid.dev/v1alpha1",
        kind: "Capsule",
        name: "fs",
        uid: "uid-fs",
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    expect(first.metadata.labels?.["astrid.dev/capsule"]).toBe("fs");
    const pem = Buffer.from(first.data["key.pem"] ?? "", "base64").toString();
    expect(createPublicKey(pem).asymmetricKeyType).toBe("ed25519");

    await new CapsuleIdentities(rest).ensure(capsule("fs", "uid-fs"));
    const again = await secret("fs-identity");
    expect(again.metadata.resourceVersion).toBe(first.metadata.resourceVersion);
    expect(again.data).toEqual(first.data);
  });

  it("keeps a key an admin provisioned without an owner reference", async () => {
    const pem = newEd25519Pem();
    await putSecret("byo-identity", {}, pem);
    await new CapsuleIdentities(rest).ensure(capsule("byo", "uid-byo"));
    const s = await secret("byo-identity");
    expect(Buffer.from(s.data["key.pem"] ?? "", "base64").toString()).toBe(pem);
    expect(s.metadata.ownerReferences).toBeUndefined();
  });

  it("waits out the Secret of an earlier Capsule of the same name instead of adopting it", async () => {
    const earlier = {
      apiVersion: "astrid.dev/v1alpha1",
      kind: "Capsule",
      name: "web",
      uid: "uid-old",
      controller: true,
    };
    await putSecret("web-identity", { ownerReferences: [earlier] }, newEd25519Pem());
    const identities = new CapsuleIdentities(rest);
    const message = `Secret ${NS}/web-identity belongs to an earlier Capsule web (uid uid-old) and goes with it; waiting for the garbage collector before creating this Capsule's key`;
    await expect(identities.ensure(capsule("web", "uid-new"))).rejects.toThrow(message);
    // Not remembered as done: the next reconcile looks again.
    await expect(identities.ensure(capsule("web", "uid-new"))).rejects.toThrow(message);

    await rest.request("DELETE", resourcePath(Secrets, NS, "web-identity"));
    await identities.ensure(capsule("web", "uid-new"));
    expect((await secret("web-identity")).metadata.ownerReferences?.[0]?.uid).toBe("uid-new");
  });

  it("refuses a malformed existing key, naming the Secret, and leaves it alone", async () => {
    await putSecret("broken-identity", {}, "garbage");
    await expect(
      new CapsuleIdentities(rest).ensure(capsule("broken", "uid-broken")),
    ).rejects.toThrow(
      `Secret ${NS}/broken-identity: data["key.pem"]: expected a PKCS#8 PEM Ed25519 private key (-----BEGIN PRIVATE KEY-----), got no PKCS#8 PEM block`,
    );
    expect((await secret("broken-identity")).data["key.pem"]).toBe(
      Buffer.from("garbage").toString("base64"),
    );
  });
});
