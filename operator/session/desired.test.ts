import { verify } from "node:crypto";
import { describe, expect, it } from "vitest";
import { GraphError } from "../../core/manifest/graph.js";
import { parseManifest } from "../../core/manifest/parse.js";
import { generateIssuerKey } from "../../core/security/tokens/keys.js";
import { mintToken } from "../../core/security/tokens/mint.js";
import type { AgentSession } from "../api/agentsession.js";
import type { Capsule } from "../api/capsule.js";
import { capsulePodParts } from "../capsule/desired.js";
import {
  desiredAuditClaim,
  desiredSessionPod,
  desiredTokenSecret,
  normalizedBindings,
  orchestratorBindings,
  type SessionCapsule,
  sessionTokenClaims,
  TOKEN_EXPIRES_ANNOTATION,
  TOKEN_ID_ANNOTATION,
  toolCapsules,
} from "./desired.js";

// biome-ignore lint/suspicious/noExplicitAny: the tests read deep into plain built objects
type Obj = Record<string, any>;

const manifest = (name: string, body: string) => `[package]
name = "${name}"
version = "1.0.0"
description = "test"
${body}
[wasm]
module = "main.js"
`;
const REACT = manifest(
  "react",
  '[imports.astrid]\nllm = "^1.0"\ntool = { version = "^1.0", optional = true }\n',
);
const LLM = manifest("llm", '[exports.astrid]\nllm = "1.0.0"\n');
const FS = manifest("fs", '[exports.astrid]\ntool = "1.0.0"\n');
const SHELL = manifest("shell", '[exports.astrid]\ntool = "1.0.0"\n');

function session(over: Partial<AgentSession["spec"]> = {}): AgentSession {
  return {
    apiVersion: "astrid.dev/v1alpha1",
    kind: "AgentSession",
    metadata: { name: "run1", namespace: "ns", uid: "sess-uid" },
    spec: {
      task: "Summarise README.md",
      orchestrator: "react",
      capsules: ["react", "anthropic", "fs", "shell"],
      mode: "guided",
      budget: {
        maxSessionUsd: "2.00",
        maxCallUsd: "0.25",
        maxSessionTokens: 500000,
        maxCallTokens: 50000,
      },
      principal: "alice@example.com",
      ...over,
    },
  };
}
const capsules: SessionCapsule[] = [
  { name: "react", manifest: parseManifest(REACT) },
  // The object name, not the package name, is what subjects and bindings use.
  { name: "anthropic", manifest: parseManifest(LLM) },
  { name: "fs", manifest: parseManifest(FS) },
  { name: "shell", manifest: parseManifest(SHELL) },
];
const orchestrator: Capsule = {
  apiVersion: "astrid.dev/v1alpha1",
  kind: "Capsule",
  metadata: { name: "react", namespace: "ns", uid: "react-uid" },
  spec: {
    manifest: REACT,
    package: {
      wasmRef: "https://packages.example/react.capsule",
      digest: `sha256:${"b".repeat(64)}`,
    },
    replicas: 1,
  },
};
const workload = { sidecarImage: "astrid/astrid:1.0.0", busUrl: "nats://nats:4222" };

function pod(s = session(), timeoutMs?: number): Obj {
  const bindings = orchestratorBindings(s, capsules);
  return desiredSessionPod(
    s,
    {
      parts: capsulePodParts(orchestrator, bindings, workload),
      toolCapsules: toolCapsules(s, capsules),
    },
    { sidecarImage: workload.sidecarImage, ...(timeoutMs ? { taskTimeoutMs: timeoutMs } : {}) },
  );
}
const envOf = (p: Obj): Record<string, string> =>
  Object.fromEntries((p.spec.containers[0].env as Obj[]).map((e) => [e.name, e.value]));

describe("orchestratorBindings", () => {
  it("resolves the orchestrator's imports to capsule object names, leaving collecting interfaces to tool_capsules", () => {
    expect(orchestratorBindings(session(), capsules)).toEqual({ "astrid.llm": "anthropic" });
  });

  it("lets spec.bindings pick among several exporters, bare interface names meaning astrid.*", () => {
    const two = [
      ...capsules,
      {
        name: "other",
        manifest: parseManifest(manifest("other", '[exports.astrid]\nllm = "1.2.0"\n')),
      },
    ];
    const s = session({
      capsules: ["react", "anthropic", "fs", "shell", "other"],
      bindings: { react: { llm: "other" } },
    });
    expect(orchestratorBindings(s, two)).toEqual({ "astrid.llm": "other" });
    expect(() => orchestratorBindings(session({ capsules: s.spec.capsules }), two)).toThrow(
      'react imports astrid.llm ^1.0 and several capsules export it: anthropic 1.0.0, other 1.2.0; bind one with bindings["react"]["astrid.llm"] = "<name>"',
    );
  });

  it("throws the graph's error when an import has no exporter", () => {
    const s = session({ capsules: ["react", "fs"] });
    const err = (() => {
      try {
        orchestratorBindings(
          s,
          capsules.filter((c) => c.name !== "anthropic" && c.name !== "shell"),
        );
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(GraphError);
    expect((err as GraphError).message).toBe(
      "react imports astrid.llm ^1.0 but no capsule exports it",
    );
  });

  it("normalizes bare interface keys and keeps qualified ones", () => {
    expect(normalizedBindings({ react: { llm: "a", "acme.search": "b" } })).toEqual({
      react: { "astrid.llm": "a", "acme.search": "b" },
    });
  });
});

describe("toolCapsules", () => {
  it("lists the session's capsules that export astrid.tool, in the session's order", () => {
    expect(
      toolCapsules(session({ capsules: ["shell", "react", "anthropic", "fs"] }), capsules),
    ).toEqual(["shell", "fs"]);
  });
});

describe("desiredSessionPod", () => {
  it("runs the orchestrator's package under a task-mode sidecar with the contract's environment", () => {
    const p = pod();
    expect(p.metadata.name).toBe("run1-session");
    expect(p.metadata.labels).toEqual({
      "app.kubernetes.io/part-of": "astrid",
      "app.kubernetes.io/component": "capsule",
      "app.kubernetes.io/name": "react",
      "astrid.dev/capsule": "react",
      "astrid.dev/session": "run1",
    });
    expect(p.metadata.ownerReferences).toEqual([
      {
        apiVersion: "astrid.dev/v1alpha1",
        kind: "AgentSession",
        name: "run1",
        uid: "sess-uid",
        controller: true,
        blockOwnerDeletion: true,
      },
    ]);
    const env = envOf(p);
    expect(env).toMatchObject({
      ASTRID_PACKAGE_DIR: "/var/lib/astrid/package",
      ASTRID_BUS_KIND: "nats",
      ASTRID_BUS_URL: "nats://nats:4222",
      ASTRID_AUDIT_DIR: "/var/lib/astrid/audit",
      ASTRID_IDENTITY_KEY_FILE: "/etc/astrid/identity/key.pem",
      ASTRID_IDENTITY_KEY_ID: "react",
      ASTRID_TRUSTED_ISSUER_KEYS: "/etc/astrid/trust/issuer.pem",
      ASTRID_TOKENS_REQUIRED: "true",
      ASTRID_REVOCATION_KIND: "kv",
      ASTRID_REVOCATION_BUCKET: "astrid-revocations",
      ASTRID_BINDINGS: "astrid.llm=anthropic",
      ASTRID_SETTINGS: "tool_capsules=fs,shell",
      ASTRID_HTTP_HOST: "0.0.0.0",
      ASTRID_HTTP_PORT: "9464",
      ASTRID_SESSION: "run1",
      ASTRID_PRINCIPAL: "alice@example.com",
      ASTRID_MODE: "guided",
      ASTRID_BUDGET_MAX_SESSION_USD: "2.00",
      ASTRID_BUDGET_MAX_CALL_USD: "0.25",
      ASTRID_BUDGET_MAX_SESSION_TOKENS: "500000",
      ASTRID_BUDGET_MAX_CALL_TOKENS: "50000",
      ASTRID_TASK_TEXT: "Summarise README.md",
      ASTRID_TASK_TOKEN_FILE: "/etc/astrid/session/token",
      ASTRID_TASK_RESULT_FILE: "/dev/termination-log",
      ASTRID_TASK_TIMEOUT_MS: "600000",
    });
    // No variable twice: the session's values replace the capsule's, they do not shadow them.
    const names = (p.spec.containers[0].env as Obj[]).map((e) => e.name);
    expect(new Set(names).size).toBe(names.length);
  });

  it("is a one-shot, restricted pod with no service account token and the termination log as the result", () => {
    const p = pod(session(), 120_000);
    expect(p.spec.restartPolicy).toBe("Never");
    expect(p.spec.activeDeadlineSeconds).toBe(420);
    expect(p.spec.automountServiceAccountToken).toBe(false);
    expect(p.spec.securityContext).toMatchObject({
      runAsNonRoot: true,
      seccompProfile: { type: "RuntimeDefault" },
    });
    const c = p.spec.containers[0];
    expect(c.name).toBe("sidecar");
    expect(c.args).toEqual(["dist/astrid-sidecar.js"]);
    expect(c.terminationMessagePath).toBe("/dev/termination-log");
    expect(c.terminationMessagePolicy).toBe("File");
    expect(c.securityContext).toMatchObject({
      readOnlyRootFilesystem: true,
      allowPrivilegeEscalation: false,
      capabilities: { drop: ["ALL"] },
    });
    expect(envOf(p).ASTRID_TASK_TIMEOUT_MS).toBe("120000");
    expect(p.spec.initContainers.map((i: Obj) => i.name)).toEqual(["fetch-package"]);
  });

  it("mounts the audit PVC, the token Secret and the trust ConfigMap, each once", () => {
    const p = pod();
    const vols = Object.fromEntries((p.spec.volumes as Obj[]).map((v) => [v.name, v]));
    expect(vols.audit).toEqual({
      name: "audit",
      persistentVolumeClaim: { claimName: "run1-audit" },
    });
    expect(vols["session-token"]).toEqual({
      name: "session-token",
      secret: { secretName: "run1-session-token", defaultMode: 0o440 },
    });
    expect(vols.trust).toEqual({ name: "trust", configMap: { name: "astrid-trust" } });
    const mounts = p.spec.containers[0].volumeMounts as Obj[];
    expect(mounts.map((m) => m.name).sort()).toEqual([
      "audit",
      "identity",
      "package",
      "session-token",
      "tmp",
      "trust",
    ]);
    expect(mounts.find((m) => m.name === "session-token")).toEqual({
      name: "session-token",
      mountPath: "/etc/astrid/session",
      readOnly: true,
    });
    expect((p.spec.volumes as Obj[]).length).toBe(
      new Set((p.spec.volumes as Obj[]).map((v) => v.name)).size,
    );
  });

  it("keeps other settings of the capsule and replaces a tool_capsules it already had", () => {
    const parts = capsulePodParts(orchestrator, {}, workload);
    parts.sidecarEnv.push({ name: "ASTRID_SETTINGS", value: "tool_capsules=old,max_steps=4" });
    const p = desiredSessionPod(
      session(),
      { parts, toolCapsules: ["fs"] },
      { sidecarImage: "x" },
    ) as Obj;
    expect(envOf(p).ASTRID_SETTINGS).toBe("max_steps=4,tool_capsules=fs");
  });

  it("refuses a session without a uid (no owner reference, nothing would clean up)", () => {
    const s = session();
    s.metadata.uid = undefined;
    expect(() => pod(s)).toThrow("AgentSession run1 must have metadata.uid");
  });
});

describe("the token Secret and the audit claim", () => {
  it("holds a token minted for the principal and session, its id and expiry as annotations", () => {
    const issuer = generateIssuerKey();
    const claims = { ...sessionTokenClaims(session(), 1_000_000), jti: "AAAAAAAAAAAAAAAAAAAAAA" };
    expect(claims).toEqual({
      sub: "alice@example.com",
      res: ["tool:**", "topic:>"],
      perm: ["execute", "publish"],
      ses: "run1",
      iat: 1_000_000,
      exp: 1_000_000 + 24 * 3600,
      jti: "AAAAAAAAAAAAAAAAAAAAAA",
    });
    const token = mintToken(claims, issuer);
    const secret = desiredTokenSecret(session(), {
      token,
      jti: claims.jti,
      exp: claims.exp,
    }) as Obj;
    expect(secret.metadata.name).toBe("run1-session-token");
    expect(secret.metadata.annotations).toEqual({
      [TOKEN_ID_ANNOTATION]: "AAAAAAAAAAAAAAAAAAAAAA",
      [TOKEN_EXPIRES_ANNOTATION]: String(1_000_000 + 24 * 3600),
    });
    const stored = Buffer.from(secret.data.token, "base64").toString();
    const [h, b, sig] = stored.split(".");
    expect(
      verify(null, Buffer.from(`${h}.${b}`), issuer.publicKey, Buffer.from(sig ?? "", "base64url")),
    ).toBe(true);
  });

  it("claims 1Gi ReadWriteOnce for the audit chain unless told otherwise", () => {
    expect((desiredAuditClaim(session(), { sidecarImage: "x" }) as Obj).spec).toEqual({
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: "1Gi" } },
    });
    expect(
      (
        desiredAuditClaim(session(), {
          sidecarImage: "x",
          auditStorage: "5Gi",
          auditStorageClassName: "fast",
        }) as Obj
      ).spec,
    ).toEqual({
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: "5Gi" } },
      storageClassName: "fast",
    });
  });
});
