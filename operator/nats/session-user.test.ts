import { describe, expect, it } from "vitest";
import { parseManifest } from "../../core/manifest/parse.js";
import { sessionNatsUserSpec } from "./session-user.js";

const manifest = parseManifest(`[package]
name = "react"
version = "1.0.0"
description = "orchestrator"

[capabilities]
ipc_publish = ["llm.v1.chat.*"]
ipc_subscribe = ["session.v1.prompt.*"]

[wasm]
module = "main.js"
`);
const owner = { apiVersion: "astrid.dev/v1alpha1", kind: "AgentSession", name: "s-1", uid: "u-1" };

describe("sessionNatsUserSpec", () => {
  it("gives the session pod its orchestrator's ACL plus its own session's prompt, in <session>-session-nats", () => {
    const spec = sessionNatsUserSpec(
      { name: "s-1", namespace: "ns", owner },
      { name: "react", manifest },
    );
    expect(spec.secretName).toBe("s-1-session-nats");
    expect(spec.owner).toBe(owner);
    const pub = spec.permissions.publish.allow ?? [];
    expect(pub).toContain("session.v1.prompt.s-1");
    expect(pub).not.toContain("session.v1.prompt.s-2");
    expect(pub).toContain("llm.v1.chat.*");
    expect(spec.permissions.subscribe.allow).toContain("_INBOX.react.>");
  });
});
