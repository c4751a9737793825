/**
 * Approvals end to end on a real etcd + kube-apiserver and a real nats-server: the sidecar's
 * own approval code (ApprovalBroker + attachBusApprover over the NATS bus) asks, the operator's
 * bridge turns the request into an Approval object, and the test answers it the way a person
 * with kubectl would (a patch of spec.decision).
 */
import pino from "pino";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectNatsBus, type NatsBus } from "../../core/bus/nats.js";
import { decode, encode, expectKind } from "../../core/protocol/envelope.js";
import { subjects } from "../../core/protocol/topics.js";
import { ApprovalBroker } from "../../core/security/approval/broker.js";
import type { ApprovalRequest } from "../../core/security/approval/request.js";
import { attachBusApprover } from "../../sidecar/enforce/approvals-over-bus.js";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  startControlPlane,
} from "../../test/harness/control-plane.js";
import { type NatsServerHandle, startNatsServer } from "../../test/harness/nats-server.js";
import { forObject } from "../runtime/handlers.js";
import { Manager } from "../runtime/manager.js";
import { type KubeObject, KubeRest, resourcePath } from "../runtime/rest.js";
import { createNamespace, installCrds, kubeConfigFor, waitFor } from "../runtime/test-support.js";
import { WorkQueue } from "../runtime/workqueue.js";
import { NatsLink } from "../session/nats-link.js";
import { AgentSessions, Approvals } from "../session/resources.js";
import { ApprovalBridge } from "./bridge.js";
import { approvalName, DEADLINE_ANNOTATION, EMPTY_ARGS_HASH } from "./desired.js";
import { ApprovalController, approvalReconciler } from "./reconciler.js";

const built = controlPlaneToolsBuilt();
if (!built)
  console.warn(
    "skipping approval bridge tests: control plane binaries not built (run `make tools`)",
  );

const NS = "astrid-approvals";
const H = "a".repeat(64);
// biome-ignore lint/suspicious/noExplicitAny: the tests read deep into API objects
type Obj = KubeObject & Record<string, any>;

describe.skipIf(!built)("approval bridge on a real API server and NATS", () => {
  let cp: ControlPlaneHandle;
  let nats: NatsServerHandle;
  let rest: KubeRest;
  let manager: Manager;
  let controller: ApprovalController;
  let link: NatsLink;
  let bus: NatsBus;
  const broker = new ApprovalBroker();
  let n = 0;

  const get = (name: string) =>
    rest.request<Obj>("GET", resourcePath(Approvals, NS, name)).catch(() => undefined);
  const ask = (over: Partial<ApprovalRequest> = {}) => {
    const now = Date.now();
    return broker.request({
      id: `req-${++n}`,
      session: "run1",
      principal: "alice@example.com",
      capsule: "fs",
      action: { kind: "fs_write", target: `/workspace/file-${n}.md`, argsHash: H },
      reason: "guided mode: writes ask",
      createdAt: now,
      deadline: now + 30_000,
      ...over,
    });
  };
  /** What `kubectl edit approval <name>` does: a patch of spec.decision and decidedBy. */
  const decide = (name: string, decision: string, decidedBy: string) =>
    rest.request("PATCH", resourcePath(Approvals, NS, name), {
      contentType: "application/merge-patch+json",
      body: { spec: { decision, decidedBy } },
    });

  beforeAll(async () => {
    [cp, nats] = await Promise.all([startControlPlane(), startNatsServer()]);
    rest = new KubeRest(kubeConfigFor(cp));
    await createNamespace(rest, NS);
    await installCrds(rest, NS);
    await rest.request("POST", resourcePath(AgentSessions, NS), {
      body: {
        apiVersion: "astrid.dev/v1alpha1",
        kind: "AgentSession",
        metadata: { name: "run1", namespace: NS },
        spec: {
          task: "t",
          orchestrator: "react",
          capsules: ["react", "fs"],
          mode: "guided",
          budget: {
            maxSessionUsd: "1",
            maxCallUsd: "0.1",
            maxSessionTokens: 1000,
            maxCallTokens: 100,
          },
          principal: "alice@example.com",
        },
      },
    });

    const log = pino({ level: "warn" });
    manager = new Manager({
      kubeConfig: kubeConfigFor(cp),
      informerDefaults: { namespace: NS },
      registry: new Registry(),
    });
    link = new NatsLink({ servers: nats.url });
    const queue = new WorkQueue({ name: "approval" });
    manager.informer(AgentSessions);
    manager.informer(Approvals).addEventHandler(forObject(queue));
    const bridge = new ApprovalBridge({
      link,
      client: manager.client,
      log,
      onExpired: (k) => queue.add(k),
    });
    controller = new ApprovalController(
      {
        name: "approval",
        queue,
        log,
        reconcile: approvalReconciler(manager.client, bridge, { log }),
      },
      bridge,
    );
    manager.addController(controller);
    await manager.start();

    bus = await connectNatsBus({ servers: nats.url, name: "sidecar-fs" });
    attachBusApprover({ bus, broker, capsule: "fs" });
    // The bridge subscribes in the background once leading: wait until a request gets an answer.
    await waitFor("bridge subscribed", async () => {
      const reply = await bus
        .request(subjects.approvalRequest("run1"), new TextEncoder().encode("{}"), {
          timeoutMs: 500,
        })
        .catch(() => undefined);
      return reply !== undefined;
    });
  }, 120_000);

  afterAll(async () => {
    await manager?.stop();
    await link?.close();
    await bus?.close();
    await Promise.all([cp?.stop(), nats?.dispose()]);
  }, 30_000);

  it("turns a request into a Pending Approval and answers it when a person sets spec.decision", async () => {
    const outcome = ask();
    const name = approvalName("run1", `req-${n}`);
    const pending = await waitFor("Approval Pending", async () => {
      const a = await get(name);
      return a?.status?.state === "Pending" ? a : undefined;
    });
    expect(pending.spec).toEqual({
      session: "run1",
      capsule: "fs",
      action: { kind: "fs_write", target: `/workspace/file-${n}.md`, argsHash: H },
      reason: "guided mode: writes ask",
    });
    expect(Date.parse(pending.metadata?.annotations?.[DEADLINE_ANNOTATION] ?? "")).toBeGreaterThan(
      Date.now(),
    );
    expect(pending.status.conditions[0]).toMatchObject({
      type: "Ready",
      status: "False",
      reason: "Pending",
    });

    await decide(name, "allow_once", "bob@example.com");
    const answer = (await outcome).answer;
    expect(answer).toMatchObject({ decision: "allow_once", decidedBy: "bob@example.com" });
    const decided = await waitFor("Approval Decided", async () => {
      const a = await get(name);
      return a?.status?.state === "Decided" ? a : undefined;
    });
    expect(decided.status.conditions[0]).toMatchObject({
      status: "True",
      reason: "Decided",
      message: "decided allow_once by bob@example.com",
    });
  });

  it("answers at once from a pre-approval for the same session, capsule and action", async () => {
    await rest.request("POST", resourcePath(Approvals, NS), {
      body: {
        apiVersion: "astrid.dev/v1alpha1",
        kind: "Approval",
        metadata: { name: "pre-summary", namespace: NS },
        spec: {
          session: "run1",
          capsule: "fs",
          action: { kind: "fs_write", target: "/workspace/SUMMARY.md", argsHash: H },
          reason: "GitOps",
          decision: "allow_session",
          decidedBy: "gitops:platform-team",
        },
      },
    });
    await waitFor(
      "pre-approval cached and Decided",
      async () => (await get("pre-summary"))?.status?.state === "Decided",
    );
    const outcome = await ask({
      action: { kind: "fs_write", target: "/workspace/SUMMARY.md", argsHash: H },
    });
    expect(outcome.answer).toMatchObject({
      decision: "allow_session",
      decidedBy: "gitops:platform-team",
    });
    expect(await get(approvalName("run1", `req-${n}`))).toBeUndefined();

    // Other arguments are another question: it waits for a person.
    const other = ask({
      action: { kind: "fs_write", target: "/workspace/SUMMARY.md", argsHash: "b".repeat(64) },
    });
    const name = approvalName("run1", `req-${n}`);
    await waitFor("a new Approval", async () => (await get(name))?.status?.state === "Pending");
    await decide(name, "deny", "bob@example.com");
    expect((await other).answer).toMatchObject({ decision: "deny", decidedBy: "bob@example.com" });
  });

  it("marks an Approval nobody decided Expired at the deadline; the sidecar denied it", async () => {
    const now = Date.now();
    const outcome = ask({ createdAt: now, deadline: now + 2000 });
    const name = approvalName("run1", `req-${n}`);
    expect((await outcome).answer).toMatchObject({ decision: "deny", decidedBy: "timeout" });
    const expired = await waitFor("Approval Expired", async () => {
      const a = await get(name);
      return a?.status?.state === "Expired" ? a : undefined;
    });
    expect(expired.status.conditions[0]).toMatchObject({
      status: "True",
      reason: "Expired",
      message: "nobody decided before the deadline; the call was denied",
    });
  });

  it("denies what it cannot check: an unknown session, a capsule outside the session", async () => {
    const unknown = await ask({ session: "nope" });
    // The sidecar asks on its own session's subject; the operator knows no such session.
    expect(unknown.answer).toMatchObject({ decision: "deny", decidedBy: "astrid-operator" });
    const stranger = new ApprovalBroker();
    const detach = attachBusApprover({ bus, broker: stranger, capsule: "shell" });
    const now = Date.now();
    const out = await stranger.request({
      id: "req-stranger",
      session: "run1",
      principal: "alice@example.com",
      capsule: "shell",
      action: { kind: "process", target: "rm -rf /", argsHash: H },
      reason: "r",
      createdAt: now,
      deadline: now + 30_000,
    });
    detach();
    expect(out.answer).toMatchObject({ decision: "deny", decidedBy: "astrid-operator" });
    expect(await get(approvalName("run1", "req-stranger"))).toBeUndefined();
  });

  it("records a request without arguments under the sha256 of the empty string", async () => {
    const wire = encode(
      "approval.request",
      {
        requestId: "req-noargs",
        action: { kind: "net", target: "api.example.com:443", argsHash: null },
        reason: "r",
        summary: "fs wants net api.example.com:443",
      },
      { session: "run1", principal: "alice@example.com", capsule: "fs" },
      { timeoutMs: 30_000 },
    );
    const reply = bus.request(subjects.approvalRequest("run1"), wire, { timeoutMs: 30_000 });
    const name = approvalName("run1", "req-noargs");
    const a = await waitFor("Approval", () => get(name));
    expect(a.spec.action).toEqual({
      kind: "net",
      target: "api.example.com:443",
      argsHash: EMPTY_ARGS_HASH,
    });
    await decide(name, "allow_always", "carol");
    const answer = expectKind(
      decode((await reply).data, { checkDeadline: false }),
      "approval.decision",
    );
    expect(answer.body).toEqual({
      requestId: "req-noargs",
      decision: "allow_always",
      decidedBy: "carol",
    });
    expect(answer.capsule).toBe("operator");
  });

  it("stops answering when its controller stops (leader only): the sidecar denies with no-approver", async () => {
    await controller.stop();
    const outcome = await ask();
    expect(outcome.answer).toMatchObject({ decision: "deny", decidedBy: "no-approver" });
  });
});
