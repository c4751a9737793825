import { describe, expect, it } from "vitest";
import { parseManifest } from "../../core/manifest/parse.js";
import type { Capsule } from "../api/capsule.js";
import {
  CONFIG_HASH_ANNOTATION,
  capsulePodParts,
  configHash,
  desiredChildren,
  desiredNetworkPolicy,
  desiredStatefulSet,
  envProblem,
  packageSource,
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
const opts = {
  sidecarImage: "registry.example.com/astrid/astrid:1.0.0",
  busUrl: "nats://nats.nats:4222",
};

function capsule(over: Partial<Capsule["spec"]> = {}): Capsule {
  return {
    apiVersion: "astrid.dev/v1alpha1",
    kind: "Capsule",
    metadata: { name: "web", namespace: "ns", uid: "uid-1" },
    spec: {
      manifest: WEB_MANIFEST,
      package: { image: "registry.example.com/x/web:1", digest: DIGEST },
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
    expect(container(sts, "capsule")?.image).toBe(`registry.example.com/x/web:1@${DIGEST}`);
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
      capsule({ package: { wasmRef: "https://pkg.example/web.capsule", digest: DIGEST } }),
      opts,
    ) as Obj;
    expect((podSpec(wasm).containers as Obj[]).map((c) => c.name)).toEqual(["sidecar"]);
  });

  // The image's ENTRYPOINT is node and its CMD the operator: without args every capsule pod
  // would have run a second operator instead of the sidecar.
  it("starts the sidecar script, not the image's default command (the operator)", () => {
    expect(container(sts, "sidecar")?.args).toEqual(["dist/astrid-sidecar.js"]);
    expect(container(sts, "capsule")?.args).toBeUndefined();
  });

  it("requires tokens from the namespace issuer, mounted from astrid-trust, with KV revocation", () => {
    const sidecar = container(sts, "sidecar") as Obj;
    const env = Object.fromEntries((sidecar.env as Obj[]).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({
      ASTRID_IDENTITY_KEY_FILE: "/etc/astrid/identity/key.pem",
      ASTRID_IDENTITY_KEY_ID: "web",
      ASTRID_TRUSTED_ISSUER_KEYS: "/etc/astrid/trust/issuer.pem",
      ASTRID_TOKENS_REQUIRED: "true",
      ASTRID_REVOCATION_KIND: "kv",
      ASTRID_REVOCATION_BUCKET: "astrid-revocations",
    });
    expect(env.ASTRID_BINDINGS).toBeUndefined();
    expect(sidecar.volumeMounts).toEqual([
      { name: "package", mountPath: "/etc/astrid/package", readOnly: true },
      { name: "identity", mountPath: "/etc/astrid/identity", readOnly: true },
      { name: "trust", mountPath: "/etc/astrid/trust", readOnly: true },
      { name: "tmp", mountPath: "/tmp" },
      { name: "audit", mountPath: "/var/lib/astrid/audit" },
    ]);
    expect(podSpec(sts).volumes).toEqual([
      { name: "identity", secret: { secretName: "web-identity", defaultMode: 0o440 } },
      { name: "trust", configMap: { name: "astrid-trust" } },
      { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
      { name: "package", configMap: { name: "web-manifest" } },
    ]);
    expect(podSpec(sts).initContainers).toBeUndefined();
  });

  it("passes the resolved imports as ASTRID_BINDINGS, sorted", () => {
    const wired = desiredStatefulSet(capsule(), opts, {
      "astrid.llm": "cache",
      "astrid.embed": "anthropic",
    }) as Obj;
    const env = ((container(wired, "sidecar")?.env ?? []) as Obj[]).find(
      (e) => e.name === "ASTRID_BINDINGS",
    );
    expect(env?.value).toBe("astrid.embed=anthropic,astrid.llm=cache");
  });
});

describe("kv of a capsule", () => {
  it("is kept in JetStream when the manifest declares buckets, shared by the replicas", () => {
    const cache = capsule({
      manifest: WEB_MANIFEST.replace("[capabilities]\n", '[capabilities]\nkv = ["cache"]\n'),
      package: { wasmRef: "https://pkg.example/c.capsule", digest: DIGEST },
    });
    const env = container(desiredStatefulSet(cache, opts) as Obj, "sidecar")?.env as Obj[];
    expect(env).toContainEqual({ name: "ASTRID_KV_KIND", value: "jetstream" });
    const plain = container(desiredStatefulSet(capsule(), opts) as Obj, "sidecar")?.env as Obj[];
    expect(plain.some((e) => e.name === "ASTRID_KV_KIND")).toBe(false);
  });
});

describe("spec.env of a capsule", () => {
  const secretEnv = [
    { name: "ANTHROPIC_API_KEY", valueFrom: { secretKeyRef: { name: "llm", key: "key" } } },
  ];

  it("reaches a WASM guest through the sidecar's environment, after the sidecar's own", () => {
    const wasm = capsule({
      package: { wasmRef: "https://pkg.example/web.capsule", digest: DIGEST },
      env: secretEnv,
    });
    const env = container(desiredStatefulSet(wasm, opts) as Obj, "sidecar")?.env as Obj[];
    expect(env.at(-1)).toEqual(secretEnv[0]);
    expect(env.filter((e) => e.name === "ANTHROPIC_API_KEY")).toHaveLength(1);
  });

  it("stays in the capsule container for an image package", () => {
    const img = capsule({ env: secretEnv });
    const sts = desiredStatefulSet(img, opts) as Obj;
    expect(container(sts, "capsule")?.env).toEqual(secretEnv);
    const sidecarEnv = container(sts, "sidecar")?.env as Obj[];
    expect(sidecarEnv.some((e) => e.name === "ANTHROPIC_API_KEY")).toBe(false);
  });

  it("is refused when it names ASTRID_* (the sidecar's own settings) or an undeclared variable", () => {
    const ref = { secretKeyRef: { name: "s", key: "k" } };
    expect(
      envProblem(capsule({ env: [{ name: "ASTRID_TOKENS_REQUIRED", valueFrom: ref }] }), []),
    ).toBe(
      "spec.env: ASTRID_TOKENS_REQUIRED: names starting with ASTRID_ are reserved for the sidecar",
    );
    expect(
      envProblem(capsule({ env: [{ name: "AWS_SECRET", valueFrom: ref }] }), ["API_KEY"]),
    ).toBe("spec.env: AWS_SECRET not declared by the manifest; declared: API_KEY");
    expect(envProblem(capsule({ env: [{ name: "API_KEY", valueFrom: ref }] }), ["API_KEY"])).toBe(
      undefined,
    );
  });
});

describe("a package fetched from wasmRef", () => {
  const URL_REF = "https://pkg.example/capsules/web-0.1.0.capsule";
  const wasm = capsule({ package: { wasmRef: URL_REF, digest: DIGEST } });
  const sts = desiredStatefulSet(wasm, opts) as Obj;

  it("is downloaded by the fetch-package init container into the package emptyDir", () => {
    expect(podSpec(sts).initContainers).toEqual([
      {
        name: "fetch-package",
        image: opts.sidecarImage,
        args: ["dist/astrid-sidecar.js", "fetch-package"],
        env: [
          { name: "ASTRID_FETCH_URL", value: URL_REF },
          { name: "ASTRID_FETCH_DIGEST", value: DIGEST },
          { name: "ASTRID_FETCH_DEST", value: "/var/lib/astrid/package" },
          { name: "ASTRID_FETCH_MANIFEST", value: "/etc/astrid/manifest/Capsule.toml" },
        ],
        securityContext: {
          runAsNonRoot: true,
          readOnlyRootFilesystem: true,
          allowPrivilegeEscalation: false,
          capabilities: { drop: ["ALL"] },
          seccompProfile: { type: "RuntimeDefault" },
        },
        volumeMounts: [
          { name: "package", mountPath: "/var/lib/astrid/package" },
          { name: "manifest", mountPath: "/etc/astrid/manifest", readOnly: true },
          { name: "tmp", mountPath: "/tmp" },
        ],
      },
    ]);
    expect(podSpec(sts).volumes).toContainEqual({
      name: "package",
      emptyDir: { sizeLimit: "512Mi" },
    });
    expect(podSpec(sts).volumes).toContainEqual({
      name: "manifest",
      configMap: { name: "web-manifest" },
    });
  });

  it("is what the sidecar runs, read-only", () => {
    const sidecar = container(sts, "sidecar") as Obj;
    const env = Object.fromEntries((sidecar.env as Obj[]).map((e) => [e.name, e.value]));
    expect(env.ASTRID_PACKAGE_DIR).toBe("/var/lib/astrid/package");
    expect(sidecar.volumeMounts).toContainEqual({
      name: "package",
      mountPath: "/var/lib/astrid/package",
      readOnly: true,
    });
  });

  it("takes the emptyDir size from the options", () => {
    const parts = capsulePodParts(wasm, {}, { ...opts, packageStorage: "2Gi" });
    expect(parts.volumes).toContainEqual({ name: "package", emptyDir: { sizeLimit: "2Gi" } });
  });

  it("must be an http(s) URL: anything else is refused before a pod is built", () => {
    const oci = capsule({
      package: { wasmRef: "oci://registry.example.com/x/web:1", digest: DIGEST },
    });
    const message =
      'package.wasmRef "oci://registry.example.com/x/web:1": expected an http(s) URL of a .capsule archive (made by astrid-build); OCI references and other schemes are not fetched yet';
    expect(packageSource(oci)).toEqual({ kind: "unsupported", message });
    expect(() => desiredStatefulSet(oci, opts)).toThrow(`Capsule web: ${message}`);
    expect(() => capsulePodParts(oci, {}, opts)).toThrow(`Capsule web: ${message}`);
    expect(packageSource(capsule({ package: { wasmRef: "web.capsule", digest: DIGEST } }))).toEqual(
      {
        kind: "unsupported",
        message:
          'package.wasmRef "web.capsule": expected an http(s) URL of a .capsule archive (made by astrid-build); OCI references and other schemes are not fetched yet',
      },
    );
    expect(
      packageSource(capsule({ package: { wasmRef: "http://10.0.0.5/w.capsule", digest: DIGEST } }))
        .kind,
    ).toBe("fetch");
  });
});

describe("capsulePodParts", () => {
  const parts = capsulePodParts(capsule({ mode: "guided" }), { "astrid.llm": "cache" }, opts);

  it("leaves the audit volume, the mode and the sidecar container to the caller", () => {
    expect(parts.sidecarVolumeMounts.map((m) => m.name)).toEqual([
      "package",
      "identity",
      "trust",
      "tmp",
    ]);
    expect(parts.volumes.map((v) => v.name)).not.toContain("audit");
    expect(parts.sidecarEnv.map((e) => e.name)).not.toContain("ASTRID_MODE");
    expect(parts.sidecarEnv).toContainEqual({
      name: "ASTRID_AUDIT_DIR",
      value: "/var/lib/astrid/audit",
    });
    expect(parts.sidecarEnv).toContainEqual({ name: "ASTRID_BINDINGS", value: "astrid.llm=cache" });
  });

  it("is what desiredStatefulSet builds its pod from", () => {
    const sts = desiredStatefulSet(capsule({ mode: "guided" }), opts, {
      "astrid.llm": "cache",
    }) as Obj;
    expect(container(sts, "sidecar")?.env).toEqual([
      ...parts.sidecarEnv,
      { name: "ASTRID_MODE", value: "guided" },
    ]);
    expect(podSpec(sts).volumes).toEqual(parts.volumes);
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
        capsule({
          package: { image: "registry.example.com/x/web:1", digest: `sha256:${"b".repeat(64)}` },
        }),
      ),
    ).not.toBe(hashOf(capsule()));
  });

  it("does not change with replicas, so scaling does not roll pods", () => {
    expect(hashOf(capsule({ replicas: 3 }))).toBe(hashOf(capsule()));
  });

  it("changes when an import is re-wired, so the sidecars restart with the new binding", () => {
    const wiredHash = (b: Record<string, string>) =>
      (desiredStatefulSet(capsule(), opts, b) as Obj).spec.template.metadata.annotations[
        CONFIG_HASH_ANNOTATION
      ];
    const toCache = wiredHash({ "astrid.llm": "cache", "astrid.embed": "x" });
    expect(toCache).not.toBe(hashOf(capsule()));
    expect(wiredHash({ "astrid.llm": "anthropic", "astrid.embed": "x" })).not.toBe(toCache);
    expect(wiredHash({ "astrid.embed": "x", "astrid.llm": "cache" })).toBe(toCache);
    expect(toCache).toBe(configHash(capsule(), { "astrid.llm": "cache", "astrid.embed": "x" }));
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

  it("lets the pod reach an IP package server, and names a DNS one it cannot open", () => {
    const byIp = desiredNetworkPolicy(
      capsule({ package: { wasmRef: "http://10.9.8.7:8080/web.capsule", digest: DIGEST } }),
      [],
      opts,
    ) as Obj;
    expect(byIp.spec.egress[2]).toEqual({
      to: [{ ipBlock: { cidr: "10.9.8.7/32" } }],
      ports: [{ protocol: "TCP", port: 8080 }],
    });
    expect(byIp.metadata.annotations[UNENFORCED_HOSTS_ANNOTATION]).toBe("");
    const v6 = desiredNetworkPolicy(
      capsule({ package: { wasmRef: "https://[fd00::1]/web.capsule", digest: DIGEST } }),
      [],
      opts,
    ) as Obj;
    expect(v6.spec.egress[2]).toEqual({
      to: [{ ipBlock: { cidr: "fd00::1/128" } }],
      ports: [{ protocol: "TCP", port: 443 }],
    });
    const byName = desiredNetworkPolicy(
      capsule({ package: { wasmRef: "https://pkg.example/web.capsule", digest: DIGEST } }),
      [],
      opts,
    ) as Obj;
    expect(byName.spec.egress).toHaveLength(2);
    expect(byName.metadata.annotations[UNENFORCED_HOSTS_ANNOTATION]).toBe(
      "no egress allowed (a NetworkPolicy cannot match DNS names): https://pkg.example (package fetch)",
    );
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
    expect(resolveImports(web, [llm("anthropic", "1.2.0")])).toEqual({
      ok: true,
      bindings: { "astrid.llm": "anthropic" },
    });
  });

  it("binds no collecting interface: every tool capsule serves it, sessions name them in settings", () => {
    const kernel = {
      package: { name: "react", version: "1.0.0" },
      exports: {},
      imports: {
        astrid: {
          llm: { version: "^1.0.0", optional: false },
          tool: { version: "^1.0.0", optional: false },
        },
      },
    };
    const tool = (name: string) => ({
      package: { name, version: "1.0.0" },
      exports: { astrid: { tool: "1.0.0" } },
      imports: {},
    });
    expect(resolveImports(kernel, [llm("cache", "1.0.0"), tool("fs"), tool("shell")])).toEqual({
      ok: true,
      bindings: { "astrid.llm": "cache" },
    });
  });
});
