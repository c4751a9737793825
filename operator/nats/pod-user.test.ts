/** The NATS part of the pod builders: only present when a user was issued (the feature is off otherwise). */
import { describe, expect, it } from "vitest";
import type { Capsule } from "../api/capsule.js";
import { capsulePodParts, desiredStatefulSet } from "../capsule/desired.js";
import { NATS_USER_ANNOTATION } from "./names.js";

const capsule: Capsule = {
  apiVersion: "astrid.dev/v1alpha1",
  kind: "Capsule",
  metadata: { name: "echo", namespace: "ns", uid: "u-1" },
  spec: {
    manifest: `[package]\nname = "echo"\nversion = "1.0.0"\ndescription = "d"\n[wasm]\nmodule = "main.js"\n`,
    package: { wasmRef: "https://pkg.example/echo.capsule", digest: `sha256:${"a".repeat(64)}` },
    replicas: 1,
  },
};
const opts = { sidecarImage: "astrid/astrid:1", busUrl: "nats://nats:4222" };
const nats = { secretName: "echo-nats", user: `U${"A".repeat(55)}` };

describe("capsulePodParts with a NATS user", () => {
  it("gives no credentials when no user is issued", () => {
    const parts = capsulePodParts(capsule, {}, opts);
    expect(parts.sidecarEnv.map((e) => e.name)).not.toContain("ASTRID_BUS_CREDS_FILE");
    expect(parts.volumes.map((v) => v.name)).not.toContain("nats");
    const sts = desiredStatefulSet(capsule, opts) as {
      spec: { template: { metadata: { annotations: Record<string, string> } } };
    };
    expect(sts.spec.template.metadata.annotations[NATS_USER_ANNOTATION]).toBeUndefined();
  });

  it("mounts the user's Secret read-only and points the sidecar at its creds", () => {
    const parts = capsulePodParts(capsule, {}, opts, nats);
    expect(parts.sidecarEnv).toContainEqual({
      name: "ASTRID_BUS_CREDS_FILE",
      value: "/etc/astrid/nats/nats.creds",
    });
    expect(parts.volumes).toContainEqual({
      name: "nats",
      secret: { secretName: "echo-nats", defaultMode: 0o440 },
    });
    expect(parts.sidecarVolumeMounts).toContainEqual({
      name: "nats",
      mountPath: "/etc/astrid/nats",
      readOnly: true,
    });
    const sts = desiredStatefulSet(capsule, opts, {}, nats) as {
      spec: { template: { metadata: { annotations: Record<string, string> } } };
    };
    expect(sts.spec.template.metadata.annotations[NATS_USER_ANNOTATION]).toBe(nats.user);
  });
});
