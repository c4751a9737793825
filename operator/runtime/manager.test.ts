import { pino } from "pino";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  startControlPlane,
} from "../../test/harness/control-plane.js";
import { Controller, TerminalError } from "./controller.js";
import { forObject } from "./handlers.js";
import { LeaderElector } from "./leader.js";
import { Manager } from "./manager.js";
import { ConfigMaps, type KubeObject, KubeRest, Leases, resourcePath } from "./rest.js";
import { createNamespace, kubeConfigFor, putConfigMap, waitFor } from "./test-support.js";
import { WorkQueue } from "./workqueue.js";

describe("LeaderElector options", () => {
  it("refuses a renew deadline not shorter than the lease", () => {
    expect(
      () =>
        new LeaderElector({} as KubeRest, {
          namespace: "n",
          name: "l",
          identity: "a",
          leaseDurationMs: 1000,
          renewDeadlineMs: 1000,
        }),
    ).toThrow(
      "renewDeadlineMs (1000) must be less than leaseDurationMs (1000): otherwise a leader may still act after others took over",
    );
  });
});

const built = controlPlaneToolsBuilt();
if (!built)
  console.warn("skipping manager tests: control plane binaries not built (run `make tools`)");

describe.skipIf(!built)("Manager against a real API server", () => {
  let cp: ControlPlaneHandle;
  let rest: KubeRest;
  const ns = "manager-test";

  beforeAll(async () => {
    cp = await startControlPlane();
    rest = new KubeRest(kubeConfigFor(cp));
    await createNamespace(rest, ns);
  }, 120_000);

  afterAll(async () => {
    await cp?.stop();
  });

  /** A manager whose controller records, per replica, which keys it reconciled. */
  function replica(identity: string, seen: string[]) {
    const manager = new Manager({
      kubeConfig: kubeConfigFor(cp),
      informerDefaults: { namespace: ns },
      leaderElection: {
        namespace: ns,
        name: "astrid-operator",
        identity,
        leaseDurationMs: 2000,
        renewDeadlineMs: 1500,
        retryPeriodMs: 200,
      },
    });
    const queue = new WorkQueue();
    manager.informer(ConfigMaps).addEventHandler(forObject(queue));
    manager.addController(
      new Controller({
        name: "recorder",
        queue,
        reconcile: async (key) => {
          seen.push(`${identity} ${key}`);
          return undefined;
        },
      }),
    );
    return manager;
  }

  const holderOf = async (name: string) => {
    const lease = await rest.request<KubeObject>("GET", resourcePath(Leases, ns, name));
    return (lease.spec as { holderIdentity?: string }).holderIdentity;
  };
  const holder = () => holderOf("astrid-operator");

  it("only the leader reconciles; a released or expired lease is taken over", async () => {
    const seen: string[] = [];
    const a = replica("a", seen);
    const b = replica("b", seen);
    await a.start();
    await waitFor("a leads", () => a.isLeader);
    await b.start();
    expect(b.isLeader).toBe(false);
    expect(await holder()).toBe("a");

    await putConfigMap(rest, ns, "one", {});
    await waitFor("leader reconciled one", () => seen.includes(`a ${ns}/one`));
    expect(seen.filter((s) => s.startsWith("b "))).toEqual([]);

    // Graceful stop releases the lease: b takes over and reconciles what it finds.
    await a.stop();
    await waitFor("b leads after release", () => b.isLeader);
    expect(await holder()).toBe("b");
    await putConfigMap(rest, ns, "two", {});
    await waitFor("b reconciled two", () => seen.includes(`b ${ns}/two`));
    expect(seen).not.toContain(`a ${ns}/two`);

    // A crash: b goes silent without releasing; c waits for the lease to expire, then leads.
    const c = replica("c", seen);
    await c.start();
    expect(c.isLeader).toBe(false);
    await b.stop({ releaseLease: false });
    expect(await holder()).toBe("b");
    await waitFor("c leads after expiry", () => c.isLeader);
    expect(await holder()).toBe("c");
    await putConfigMap(rest, ns, "three", {});
    await waitFor("c reconciled three", () => seen.includes(`c ${ns}/three`));
    expect(seen.filter((s) => s.endsWith("/three")).map((s) => s.split(" ")[0])).toEqual(["c"]);
    await c.stop();
  }, 60_000);

  it("a leader whose lease was taken steps down (onStoppedLeading) after the renew deadline", async () => {
    const seen: string[] = [];
    const stopped: string[] = [];
    const elector = new LeaderElector(rest, {
      namespace: ns,
      name: "usurped",
      identity: "old-leader",
      leaseDurationMs: 2000,
      renewDeadlineMs: 1500,
      retryPeriodMs: 200,
      onStartedLeading: () => seen.push("started"),
      onStoppedLeading: () => stopped.push("stopped"),
    });
    elector.start();
    await waitFor("old leader leads", () => elector.isLeader);
    const lease = await rest.request<KubeObject>("GET", resourcePath(Leases, ns, "usurped"));
    await rest.request("PUT", resourcePath(Leases, ns, "usurped"), {
      body: {
        ...lease,
        spec: { ...(lease.spec as object), holderIdentity: "usurper", leaseDurationSeconds: 3600 },
      },
    });
    await waitFor("old leader stepped down", () => !elector.isLeader);
    expect(seen).toEqual(["started"]);
    expect(stopped).toEqual(["stopped"]);
    await elector.stop();
    expect(await holderOf("usurped")).toBe("usurper");
  }, 30_000);

  it("serves /healthz, /readyz and /metrics; errors are retried, terminal errors recorded once", async () => {
    const registry = new Registry();
    const manager = new Manager({
      kubeConfig: kubeConfigFor(cp),
      informerDefaults: { namespace: ns },
      registry,
      healthPort: 0,
    });
    const queue = new WorkQueue({ baseDelayMs: 1 });
    manager.informer(ConfigMaps).addEventHandler(forObject(queue));
    const attempts = new Map<string, number>();
    const controller = new Controller({
      name: "flaky",
      queue,
      log: pino({ level: "silent" }),
      registry,
      workers: 2,
      reconcile: async (key) => {
        const n = (attempts.get(key) ?? 0) + 1;
        attempts.set(key, n);
        if (key === `${ns}/flaky` && n < 3) throw new Error("transient");
        if (key === `${ns}/invalid`) throw new TerminalError("spec.replicas must be >= 0");
        return undefined;
      },
    });
    manager.addController(controller);
    await manager.start();
    const base = `http://127.0.0.1:${manager.healthPort}`;
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect(await (await fetch(`${base}/readyz`)).text()).toBe("ok");

    await putConfigMap(rest, ns, "flaky", {});
    await putConfigMap(rest, ns, "invalid", {});
    await waitFor("flaky succeeded on the third attempt", () => attempts.get(`${ns}/flaky`) === 3);
    await waitFor("invalid recorded", () => controller.terminalErrors().get(`${ns}/invalid`));
    expect(controller.terminalErrors().get(`${ns}/invalid`)).toBe("spec.replicas must be >= 0");
    expect(queue.numRequeues(`${ns}/flaky`)).toBe(0);

    const metrics = await (await fetch(`${base}/metrics`)).text();
    expect(metrics).toContain('astrid_operator_reconcile_errors_total{controller="flaky"} 3');
    expect(metrics).toContain(
      'astrid_operator_reconcile_terminal_errors_total{controller="flaky"} 1',
    );
    expect(metrics).toMatch(
      /astrid_operator_reconcile_duration_seconds_count\{controller="flaky"\} \d+/,
    );
    expect(attempts.get(`${ns}/invalid`)).toBe(1);

    await manager.stop();
  }, 60_000);
});
