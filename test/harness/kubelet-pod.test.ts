import { describe, expect, it } from "vitest";
import {
  containerArgv,
  expandVars,
  fieldRefValue,
  imageName,
  PathMap,
  type Pod,
} from "./kubelet-pod.js";

describe("imageName", () => {
  it("drops the tag and the digest but keeps a registry port", () => {
    expect(imageName("astrid/astrid:0.4.0")).toBe("astrid/astrid");
    expect(imageName("astrid/astrid@sha256:abc")).toBe("astrid/astrid");
    expect(imageName("astrid/astrid:0.4.0@sha256:abc")).toBe("astrid/astrid");
    expect(imageName("localhost:5000/astrid/astrid")).toBe("localhost:5000/astrid/astrid");
    expect(imageName("localhost:5000/astrid/astrid:dev")).toBe("localhost:5000/astrid/astrid");
    expect(imageName("astrid")).toBe("astrid");
  });
});

describe("containerArgv", () => {
  const image = { command: ["node"], args: ["dist/astrid-operator.js"], cwd: "/repo" };
  const c = { name: "c", image: "astrid/astrid:1" };

  it("uses the image's ENTRYPOINT and CMD when the container sets neither", () => {
    expect(containerArgv(c, image)).toEqual(["node", "dist/astrid-operator.js"]);
  });
  it("replaces the CMD with args (the sidecar's `args: [dist/astrid-sidecar.js]`)", () => {
    expect(
      containerArgv({ ...c, args: ["dist/astrid-sidecar.js", "fetch-package"] }, image),
    ).toEqual(["node", "dist/astrid-sidecar.js", "fetch-package"]);
  });
  it("drops the image's CMD when the container sets a command", () => {
    expect(containerArgv({ ...c, command: ["sh", "-c"] }, image)).toEqual(["sh", "-c"]);
    expect(containerArgv({ ...c, command: ["sh"], args: ["-c", "true"] }, image)).toEqual([
      "sh",
      "-c",
      "true",
    ]);
  });
});

describe("expandVars", () => {
  const vars = new Map([
    ["A", "1"],
    ["DIR", "/var/lib/astrid"],
  ]);
  it("expands known $(VAR), keeps unknown ones and unescapes $$", () => {
    expect(expandVars("$(DIR)/audit-$(A)", vars)).toBe("/var/lib/astrid/audit-1");
    expect(expandVars("$(NOPE) and $$(A)", vars)).toBe("$(NOPE) and $(A)");
  });
});

describe("PathMap", () => {
  const paths = new PathMap();
  paths.add("/etc/astrid", "/host/etc");
  paths.add("/etc/astrid/trust/", "/host/trust");
  paths.add("/dev/termination-log", "/host/term/main");

  it("rewrites a mapped path and what lies under it, by the longest prefix", () => {
    expect(paths.rewrite("/etc/astrid/trust/issuer.pem")).toBe("/host/trust/issuer.pem");
    expect(paths.rewrite("/etc/astrid/trust")).toBe("/host/trust");
    expect(paths.rewrite("/etc/astrid/identity/key.pem")).toBe("/host/etc/identity/key.pem");
    expect(paths.rewrite("/dev/termination-log")).toBe("/host/term/main");
  });
  it("leaves values that only share a prefix of characters, or no prefix, alone", () => {
    expect(paths.rewrite("/etc/astridx/key.pem")).toBe("/etc/astridx/key.pem");
    expect(paths.rewrite("/dev/termination-log2")).toBe("/dev/termination-log2");
    expect(paths.rewrite("nats://127.0.0.1:4222")).toBe("nats://127.0.0.1:4222");
  });
});

describe("fieldRefValue", () => {
  const pod: Pod = {
    metadata: { name: "p", namespace: "ns", uid: "u1", labels: { app: "x" } },
    spec: { nodeName: "n", containers: [] },
  };
  it("answers the downward-API fields the harness emulates and nothing else", () => {
    expect(fieldRefValue(pod, "metadata.name", "127.0.0.1")).toBe("p");
    expect(fieldRefValue(pod, "metadata.namespace", "127.0.0.1")).toBe("ns");
    expect(fieldRefValue(pod, "status.podIP", "127.0.0.1")).toBe("127.0.0.1");
    expect(fieldRefValue(pod, "metadata.labels['app']", "127.0.0.1")).toBe("x");
    expect(fieldRefValue(pod, "spec.nodeName", "127.0.0.1")).toBe("n");
    expect(fieldRefValue(pod, "status.hostIPs[0]", "127.0.0.1")).toBeUndefined();
  });
});
