import { describe, expect, it } from "vitest";
import { parseManifest } from "../../core/manifest/parse.js";
import type { Capsule } from "../api/capsule.js";
import {
  CONFIG_HASH_ANNOTATION,
  configHash,
  desiredChildren,
  desiredNetworkPolicy,
  desiredStatefulSet,
  pinnedImage,
  UNENFORCED_HOSTS_ANNOTATION,
} from "./desired.js";
import { resolveImports } from "./reconciler.js";

const WEB_MANIFEST = `[package]
name = "web"
version = "0.1.0"
description = "fetches pages"

[imports.astrid]
llm = "^1.0.0"

[capabilities]
net = ["https://10.1.2.3:443", "tcp://10.0.0.0/8:*", "https://api.example.com:443"]

[wasm]
module = "main.js"
`;

const DIGEST = `sha256:${"a".repeat(64)}`;
const opts = { sidecarImage: "ghcr.io/astrid-dev/astrid:1.0.0", busUrl: "nats://nats.nats:4222" };

function capsule(over: Partial<Capsule["spec"]> = {}): Capsule {
  return {
    apiVersion: "astrid.dev/v1alpha1",
    kind: "Capsule",
    metadata: { name: "web", namespace: "ns", uid: "uid-1" },
    spec: {
      manifest: WEB_MANIFEST,
      package: { image: "ghcr.io/x/web:1", digest: DIGEST },
      replicas: 1,
      ...over,
    },
  };
}
const net = parseManifest(WEB_MANIFEST).capabilities.net;

// biome-ignore lint/suspicious/noExplicitAny: the tests read deep into plain built objects
type Obj = Record<string, any>;
const podSpec = (sts: Obj) => sts.spec.template.spec;
const container = (sts: Obj, name: string) =>
  (podSpec(sts).containers as Obj[]).find((c) => c.name === name);

describe("desiredChildren", () => {
  it("owns every child through a controller reference to the Capsule", () => {
    const c = desiredChildren(capsule(), net, opts);
    for (const child of [c.configMap, c.statefulSet, c.networkPolicy]) {
      expect(child.metadata?.ownerReferences).toEqual([
        {
          apiVersion: "astrid.dev/v1alpha1",
          kind: "Capsule",
          name: "web",
          uid: "uid-1",
          controller: true,
          blockOwnerDeletion: true,
        },
      ]);
      expect(child.metadata?.namespace).toBe("ns");
    }
    expect(c.configMap.metadata?.name).toBe("web-manifest");
    expect(c.configMap.data).toEqual({ "Capsule.toml": WEB_MANIFEST });
  });

  it("refuses a Capsule without a uid", () => {
    const c = capsule();
    delete c.metadata.uid;
    expect(() => desiredChildren(c, net, opts)).toThrow("Capsule web must have metadata.uid");
  });
});

describe("desiredStatefulSet", () => {
  const sts = desiredStatefulSet(capsule({ mode: "guided" }), opts) as Obj;

  it("runs the pinned capsule image and the sidecar, both restricted", () => {
    expect(container(sts, "capsule")?.image).toBe(`ghcr.io/x/web:1@${DIGEST}`);
    for (const name of ["capsule", "sidecar"]) {
      expect(container(sts, name)?.securityContext).toEqual({
        runAsNonRoot: true,
        readOnlyRootFilesystem: true,
        allowPrivilegeEscalation: false,
        capabilities: { drop: ["ALL"] },
        seccompProfile: { type: "RuntimeDefault" },
      });
    }
    expect(podSpec(sts).automountServiceAccountToken).toBe(false);
    expect(podSpec(sts).securityContext.runAsNonRoot).toBe(true);
  });

  it("configures the sidecar per docs/sidecar.md with probes on the metrics port", () => {
    const sidecar = container(sts, "sidecar") as Obj;
    expect(sidecar.image).toBe(opts.sidecarImage);
    const env = Object.fromEntries((sidecar.env as Obj[]).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({
      ASTRID_PACKAGE_DIR: "/etc/astrid/package",
      ASTRID_BUS_KIND: "nats",
      ASTRID_BUS_URL: "nats://nats.nats:4222",
      ASTRID_AUDIT_DIR: "/var/lib/astrid/audit",
      ASTRID_HTTP_HOST: "0.0.0.0",
      ASTRID_HTTP_PORT: "9464",
      ASTRID_MODE: "guided",
    });
    expect(sidecar.ports).toEqual([{ name: "metrics", containerPort: 9464, protocol: "TCP" }]);
    expect(sidecar.readinessProbe.httpGet).toEqual({ path: "/readyz", port: "metrics" });
    expect(sidecar.livenessProbe.httpGet).toEqual({ path: "/healthz", port: "metrics" });
    expect(sidecar.volumeMounts).toContainEqual({
      name: "audit",
      mountPath: "/var/lib/astrid/audit",
    });
    expect(sts.spec.volumeClaimTemplates[0].metadata.name).toBe("audit");
  });

  it("labels pods as docs/helm.md's PodMonitor and baseline policy select them", () => {
    expect(sts.spec.template.metadata.labels).toMatchObject({
      "app.kubernetes.io/part-of": "astrid",
      "app.kubernetes.io/component": "capsule",
    });
  });

  it("has no capsule container for a WASM package: the sidecar runs it", () => {
    const wasm = desiredStatefulSet(
      capsule({ package: { wasmRef: "oci://x/web:1", digest: DIGEST } }),
      opts,
    ) as Obj;
    expect((podSpec(wasm).containers as Obj[]).map((c) => c.name)).toEqual(["sidecar"]);
  });

  it("keeps an image that is already pinned", () => {
    expect(pinnedImage(`x/web@${DIGEST}`, DIGEST)).toBe(`x/web@${DIGEST}`);
  });
});

describe("config hash", () => {
  const hashOf = (c: Capsule) =>
    (desiredStatefulSet(c, opts) as Obj).spec.template.metadata.annotations[CONFIG_HASH_ANNOTATION];

  it("is the sha256 of what the pods run", () => {
    expect(hashOf(capsule())).toMatch(/^[0-9a-f]{64}$/);
    expect(hashOf(capsule())).toBe(configHash(capsule()));
  });

  it("changes with the manifest or the artefact digest", () => {
    expect(hashOf(capsule({ manifest: `${WEB_MANIFEST}\n# edited\n` }))).not.toBe(
      hashOf(capsule()),
    );
    expect(
      hashOf(
        capsule({ package: { image: "ghcr.io/x/web:1", digest: `sha256:${"b".repeat(64)}` } }),
      ),
    ).not.toBe(hashOf(capsule()));
  });

  it("does not change with replicas, so scaling does not roll pods", () => {
    expect(hashOf(capsule({ replicas: 3 }))).toBe(hashOf(capsule()));
  });
});

describe("desiredNetworkPolicy", () => {
  const np = desiredNetworkPolicy(capsule(), net, { ...opts, natsPort: 4333 }) as Obj;

  it("denies all egress but DNS, NATS and the manifest's IP and CIDR hosts", () => {
    expect(np.spec.policyTypes).toEqual(["Egress"]);
    expect(np.spec.podSelector).toEqual({ matchLabels: { "astrid.dev/capsule": "web" } });
    expect(np.spec.egress).toEqual([
      {
        ports: [
          { protocol: "UDP", port: 53 },
          { protocol: "TCP", port: 53 },
        ],
      },
      {
        to: [
          {
            namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "nats" } },
            podSelector: { matchLabels: { "app.kubernetes.io/name": "nats" } },
          },
        ],
        ports: [{ protocol: "TCP", port: 4333 }],
      },
      { to: [{ ipBlock: { cidr: "10.1.2.3/32" } }], ports: [{ protocol: "TCP", port: 443 }] },
      { to: [{ ipBlock: { cidr: "10.0.0.0/8" } }] },
    ]);
  });

  it("allows nothing for DNS-name hosts and says so (fail closed)", () => {
    expect(np.metadata.annotations[UNENFORCED_HOSTS_ANNOTATION]).toBe(
      "no egress allowed (a NetworkPolicy cannot match DNS names): https://api.example.com:443",
    );
    const none = desiredNetworkPolicy(capsule(), [], opts) as Obj;
    expect(none.metadata.annotations[UNENFORCED_HOSTS_ANNOTATION]).toBe("");
  });
});

describe("resolveImports", () => {
  const web = parseManifest(WEB_MANIFEST);
  const llm = (name: string, version: string) => ({
    package: { name, version: "1.0.0" },
    exports: { astrid: { llm: version } },
    imports: { astrid: { missing: { version: "^1.0.0", optional: false } } },
  });

  it("names the missing exporter", () => {
    const r = resolveImports(web, []);
    expect(r).toEqual({
      ok: false,
      reason: "MissingExporter",
      message: expect.stringContaining("astrid.llm"),
    });
  });

  it("is satisfied by another capsule's export, whatever that capsule itself imports", () => {
    expect(resolveImports(web, [llm("anthropic", "1.2.0")])).toEqual({ ok: true });
  });
});
