/**
 * `astrid-operator` as a process against a real etcd + kube-apiserver and a real nats-server:
 * configured by the chart's environment, it takes its Lease, reconciles a Capsule into its
 * StatefulSet and an AgentSession into its status, answers approval requests on the bus,
 * answers /readyz, and exits 0 on SIGTERM. Bad configuration exits 2 naming every problem.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { connectNatsBus } from "../core/bus/nats.js";
import { decode, encode, expectKind } from "../core/protocol/envelope.js";
import { subjects } from "../core/protocol/topics.js";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  startControlPlane,
} from "../test/harness/control-plane.js";
import { freePort, type NatsServerHandle, startNatsServer } from "../test/harness/nats-server.js";
import { Capsules, StatefulSets } from "./capsule/resources.js";
import { operatorEnv } from "./operator.js";
import { type KubeObject, KubeRest, resourcePath } from "./runtime/rest.js";
import { createNamespace, installCrds, kubeConfigFor, waitFor } from "./runtime/test-support.js";
import { AgentSessions } from "./session/resources.js";

const run = promisify(execFile);
const MAIN = new URL("./main.ts", import.meta.url).pathname;
const NS = "astrid-op";
const built = controlPlaneToolsBuilt();
if (!built) console.warn("skipping astrid-operator process test: run `make tools` first");

describe("operatorEnv", () => {
  it("names every problem of the chart's environment at once", () => {
    expect(() =>
      operatorEnv({ ASTRID_HTTP_PORT: "99999", ASTRID_LEADER_ELECTION: "maybe" }),
    ).toThrow(
      [
        'ASTRID_HTTP_PORT: expected a port 0-65535, got "99999"',
        'ASTRID_LEADER_ELECTION: expected true or false, got "maybe"',
        "ASTRID_SIDECAR_IMAGE is required",
        "ASTRID_BUS_URL is required",
      ].join("\n"),
    );
  });

  it("takes the operator's own NATS credentials file when given, none otherwise", () => {
    const base = { ASTRID_SIDECAR_IMAGE: "i", ASTRID_BUS_URL: "nats://n:4222" };
    expect(operatorEnv(base).busCredsFile).toBeUndefined();
    expect(
      operatorEnv({ ...base, ASTRID_BUS_CREDS_FILE: "/etc/astrid/nats/operator.creds" })
        .busCredsFile,
    ).toBe("/etc/astrid/nats/operator.creds");
  });

  it("exits 2 with the message when run without its settings", async () => {
    const r = await run(process.execPath, ["--import", "tsx", MAIN], {
      env: { PATH: process.env.PATH ?? "" },
    }).catch((e) => e);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("astrid-operator: ASTRID_SIDECAR_IMAGE is required");
  });
});

describe.skipIf(!built)("astrid-operator process", () => {
  let cp: ControlPlaneHandle;
  let nats: NatsServerHandle;
  let rest: KubeRest;
  let child: ChildProcess;
  let port: number;

  beforeAll(async () => {
    [cp, nats] = await Promise.all([startControlPlane(), startNatsServer()]);
    rest = new KubeRest(kubeConfigFor(cp));
    await createNamespace(rest, NS);
    await installCrds(rest, NS);
    port = await freePort();
    child = spawn(process.execPath, ["--import", "tsx", MAIN], {
      env: {
        PATH: process.env.PATH ?? "",
        KUBECONFIG: cp.kubeconfigPath,
        ASTRID_SIDECAR_IMAGE: "example.org/astrid:0.1.0",
        ASTRID_BUS_URL: nats.url,
        ASTRID_WATCH_NAMESPACES: NS,
        ASTRID_POD_NAMESPACE: NS,
        ASTRID_POD_NAME: "operator-0",
        ASTRID_HTTP_PORT: String(port),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
  }, 120_000);

  afterAll(async () => {
    child?.kill("SIGKILL");
    await Promise.all([cp?.stop(), nats?.dispose()]);
  });

  it("takes the lease, reconciles a Capsule into its StatefulSet and answers /readyz", async () => {
    const example = parse(
      readFileSync(new URL("../examples/capsule-fs.yaml", import.meta.url), "utf8"),
    );
    await rest.request("PATCH", resourcePath(Capsules, NS, example.metadata.name), {
      contentType: "application/apply-patch+yaml",
      query: { fieldManager: "test", force: true },
      body: { ...example, metadata: { ...example.metadata, namespace: NS } },
    });
    await waitFor("the StatefulSet", () =>
      rest
        .request<KubeObject>("GET", resourcePath(StatefulSets, NS, example.metadata.name))
        .then(() => true)
        .catch(() => false),
    );
    const lease = await rest.request<{ spec: { holderIdentity: string } }>(
      "GET",
      `/apis/coordination.k8s.io/v1/namespaces/${NS}/leases/astrid-operator`,
    );
    expect(lease.spec.holderIdentity).toBe("operator-0");
    await waitFor("/readyz", () =>
      fetch(`http://127.0.0.1:${port}/readyz`)
        .then((r) => r.status === 200)
        .catch(() => false),
    );
  });

  it("reconciles an AgentSession: finalizer on, Accepted=False naming the missing capsule", async () => {
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
          budget: { maxSessionUsd: "1", maxCallUsd: "0.1", maxSessionTokens: 10, maxCallTokens: 1 },
          principal: "alice",
        },
      },
    });
    type Session = KubeObject & {
      status?: { conditions?: { type: string; status: string; reason: string; message: string }[] };
    };
    const s = await waitFor("the session's Accepted condition", async () => {
      const obj = await rest.request<Session>("GET", resourcePath(AgentSessions, NS, "run1"));
      return obj.status?.conditions?.find((c) => c.type === "Accepted") ? obj : undefined;
    });
    expect(s.metadata?.finalizers).toEqual(["astrid.dev/revoke-session-token"]);
    expect(s.status?.conditions?.find((c) => c.type === "Accepted")).toMatchObject({
      status: "False",
      reason: "CapsulesNotFound",
      message: "capsules not found: react",
    });
  });

  it("answers approval requests on the bus as leader: a question for an unknown session is denied", async () => {
    const bus = await connectNatsBus({ servers: nats.url, name: "test-sidecar" });
    try {
      const ask = () =>
        bus.request(
          subjects.approvalRequest("ghost"),
          encode(
            "approval.request",
            {
              requestId: "r1",
              action: { kind: "tool", target: "shell", argsHash: null },
              reason: "r",
              summary: "s",
            },
            { session: "ghost", principal: "alice", capsule: "fs" },
            { timeoutMs: 2000 },
          ),
          { timeoutMs: 2000 },
        );
      // The bridge subscribes in the background once the lease is held.
      const reply = await waitFor("an answer from the operator", () =>
        ask().catch(() => undefined),
      );
      const answer = expectKind(decode(reply.data, { checkDeadline: false }), "approval.decision");
      expect(answer.body).toMatchObject({
        requestId: "r1",
        decision: "deny",
        decidedBy: "astrid-operator",
        note: "no AgentSession named ghost",
      });
    } finally {
      await bus.close();
    }
  });

  it("exports the reconcile metrics of the controllers and the session budget gauges", async () => {
    const text = await waitFor("metrics of the approval controller", async () => {
      const t = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text());
      return t.includes('controller="agentsession"') ? t : undefined;
    });
    expect(text).toContain(
      'astrid_operator_reconcile_duration_seconds_count{controller="capsule"}',
    );
    expect(text).toContain("astrid_session_budget_limit_micro_usd");
  });

  it("stops on SIGTERM with exit code 0", async () => {
    const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
