/**
 * The namespace issuer against a real etcd + kube-apiserver: the Secret and the trust ConfigMap
 * are created once, shared by every store (every operator process) and never regenerated.
 */
import { createPublicKey } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TrustedKeys } from "../../core/security/tokens/keys.js";
import { mintToken } from "../../core/security/tokens/mint.js";
import { MemoryRevocationSet } from "../../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../../core/security/tokens/verifier.js";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  startControlPlane,
} from "../../test/harness/control-plane.js";
import { ConfigMaps, KubeRest, resourcePath, Secrets } from "../runtime/rest.js";
import { createNamespace, kubeConfigFor } from "../runtime/test-support.js";
import { ISSUER_PEM, ISSUER_SECRET, IssuerStore, TRUST_CONFIGMAP } from "./issuer.js";
import { newEd25519Pem } from "./key-secret.js";

const built = controlPlaneToolsBuilt();

interface Body {
  metadata: { uid: string; resourceVersion: string; labels?: Record<string, string> };
  data?: Record<string, string>;
}

describe.skipIf(!built)("IssuerStore on a real API server", () => {
  let cp: ControlPlaneHandle;
  let rest: KubeRest;
  let n = 0;
  const namespace = async () => {
    const ns = `issuer-${++n}`;
    await createNamespace(rest, ns);
    return ns;
  };
  const secret = (ns: string) =>
    rest.request<Body>("GET", resourcePath(Secrets, ns, ISSUER_SECRET));
  const trust = (ns: string) =>
    rest.request<Body>("GET", resourcePath(ConfigMaps, ns, TRUST_CONFIGMAP));
  const putSecret = (ns: string, data: Record<string, string>) =>
    rest.request("POST", resourcePath(Secrets, ns), {
      body: { apiVersion: "v1", kind: "Secret", metadata: { name: ISSUER_SECRET }, data },
    });
  const b64 = (s: string) => Buffer.from(s).toString("base64");

  beforeAll(async () => {
    cp = await startControlPlane();
    rest = new KubeRest(kubeConfigFor(cp));
  }, 120_000);

  afterAll(async () => {
    await cp?.stop();
  }, 30_000);

  it("creates the key Secret and the trust ConfigMap; pods trusting the ConfigMap accept its tokens", async () => {
    const ns = await namespace();
    const key = await new IssuerStore(rest).ensure(ns);

    const s = await secret(ns);
    expect(s.metadata.labels).toEqual({
      "app.kubernetes.io/part-of": "astrid",
      "app.kubernetes.io/managed-by": "astrid-operator",
    });
    const pem = Buffer.from(s.data?.["key.pem"] ?? "", "base64").toString();
    expect(pem.startsWith("-----BEGIN PRIVATE KEY-----")).toBe(true);
    expect(createPublicKey(pem).export({ format: "jwk" }).x).toBe(
      Buffer.from(key.publicKeyRaw).toString("base64url"),
    );

    // What the sidecar does with ASTRID_TRUSTED_ISSUER_KEYS=/etc/astrid/trust/issuer.pem.
    const cm = await trust(ns);
    const keys = new TrustedKeys([createPublicKey(cm.data?.[ISSUER_PEM] ?? "")]);
    expect(keys.get(key.kid)).toBeDefined();
    const verifier = new TokenVerifier({ keys, revocations: new MemoryRevocationSet() });
    const token = mintToken(
      {
        sub: "alice",
        res: ["tool:**"],
        perm: ["execute"],
        exp: Math.floor(Date.now() / 1000) + 60,
      },
      key,
    );
    const decision = await verifier.verify(token, {
      principal: "alice",
      resource: "tool:fs/read_file",
      permission: "execute",
    });
    expect(decision.allowed).toBe(true);
  });

  it("caches per namespace and never regenerates: a second store (another process) gets the same key", async () => {
    const ns = await namespace();
    const store = new IssuerStore(rest);
    const first = await store.ensure(ns);
    expect(await store.ensure(ns)).toBe(first);
    const before = await secret(ns);

    const other = await new IssuerStore(rest).ensure(ns);
    expect(other.kid).toBe(first.kid);
    expect((await secret(ns)).metadata.resourceVersion).toBe(before.metadata.resourceVersion);
  });

  it("two stores racing on an empty namespace agree on one key", async () => {
    const ns = await namespace();
    const [a, b] = await Promise.all([
      new IssuerStore(rest).ensure(ns),
      new IssuerStore(rest).ensure(ns),
    ]);
    expect(a.kid).toBe(b.kid);
    const cm = await trust(ns);
    expect(
      new TrustedKeys([createPublicKey(cm.data?.[ISSUER_PEM] ?? "")]).get(a.kid),
    ).toBeDefined();
  });

  it("keeps a key an admin provisioned and sets a trust ConfigMap naming another key back to it", async () => {
    const ns = await namespace();
    const pem = newEd25519Pem();
    await putSecret(ns, { "key.pem": b64(pem) });
    const stranger = createPublicKey(newEd25519Pem()).export({ type: "spki", format: "pem" });
    await rest.request("POST", resourcePath(ConfigMaps, ns), {
      body: {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: TRUST_CONFIGMAP },
        data: { [ISSUER_PEM]: stranger.toString() },
      },
    });

    const key = await new IssuerStore(rest).ensure(ns);
    expect(Buffer.from((await secret(ns)).data?.["key.pem"] ?? "", "base64").toString()).toBe(pem);
    const expected = createPublicKey(pem).export({ type: "spki", format: "pem" }).toString();
    expect((await trust(ns)).data?.[ISSUER_PEM]).toBe(expected);
    expect(key.publicKey.export({ type: "spki", format: "pem" }).toString()).toBe(expected);
  });

  it("refuses a malformed existing key, naming the Secret, and leaves it as it was", async () => {
    const ns = await namespace();
    await putSecret(ns, { "key.pem": b64("not a key") });
    const store = new IssuerStore(rest);
    const message = `Secret ${ns}/astrid-issuer: data["key.pem"]: expected a PKCS#8 PEM Ed25519 private key (-----BEGIN PRIVATE KEY-----), got no PKCS#8 PEM block`;
    await expect(store.ensure(ns)).rejects.toThrow(message);
    expect((await secret(ns)).data).toEqual({ "key.pem": b64("not a key") });
    await expect(trust(ns)).rejects.toThrow("404");

    // Failures are not cached: once a human fixes the Secret, the next ensure succeeds.
    const pem = newEd25519Pem();
    await rest.request("PATCH", resourcePath(Secrets, ns, ISSUER_SECRET), {
      contentType: "application/merge-patch+json",
      body: { data: { "key.pem": b64(pem) } },
    });
    const key = await store.ensure(ns);
    expect(key.publicKey.export({ type: "spki", format: "pem" })).toEqual(
      createPublicKey(pem).export({ type: "spki", format: "pem" }),
    );
  });

  it("refuses an existing Secret without key.pem", async () => {
    const ns = await namespace();
    await putSecret(ns, { other: b64("x") });
    await expect(new IssuerStore(rest).ensure(ns)).rejects.toThrow(
      `Secret ${ns}/astrid-issuer: data["key.pem"]: expected a PKCS#8 PEM Ed25519 private key, got no such key`,
    );
  });
});
