/**
 * The cluster shape end to end, without Docker: `kubectl apply` of three Capsules and an
 * AgentSession on a real API server; the operator (as the chart runs it) makes StatefulSets,
 * the real controller-manager makes pods, the kubelet harness runs them (package fetched by
 * the init container, the sidecar on a real nats-server); a person answers the approvals
 * with `kubectl patch`; the session finishes with its result and usage in status; every audit
 * chain on the "volumes" verifies with the capsules' identity keys; a real Prometheus scrapes
 * the operator and the sidecars and evaluates every PromQL expression of the chart's alert
 * rules and dashboard; deleting the session revokes its token. The model is a wire-protocol
 * fake (see test/cluster/scenario.ts).
 */
import { spawnSync } from "node:child_process";
import {
  cpSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import { Kvm } from "@nats-io/kv";
import { connect, credsAuthenticator } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse, parseAllDocuments, stringify } from "yaml";
import { decode, encode } from "../core/protocol/envelope.js";
import { subjects } from "../core/protocol/topics.js";
import {
  answerUntilFinished,
  applyScenario,
  condition,
  kubectlJson as kubectlJsonOf,
  type Obj,
  SERVING,
  verifyAuditChains,
} from "./cluster/drive.js";
import { type ClusterRig, repoRoot, startClusterRig } from "./cluster/rig.js";
import { ANSWER, NAMESPACE, prepareScenario, type Scenario, SESSION } from "./cluster/scenario.js";
import { USAGE } from "./fixtures/scenario-cli/wire-fakes.js";
import { controlPlaneToolsBuilt, kubectlBuilt, toolsCacheDir } from "./harness/control-plane.js";
import {
  type PrometheusHandle,
  prometheusMissingReason,
  startPrometheus,
} from "./harness/prometheus.js";

const missing = !controlPlaneToolsBuilt()
  ? "the control plane is not built (make tools)"
  : !kubectlBuilt()
    ? "kubectl is not built (make tools)"
    : undefined;
if (missing) console.log(`skipped cluster e2e: ${missing}`);
const HELM = path.join(toolsCacheDir(), "helm-v3.22.0", "helm");
const promMissing =
  prometheusMissingReason() ??
  (existsSync(HELM) ? undefined : "helm is not built (make tools TOOLS=all)");
if (!missing && promMissing)
  console.log(`skipped Prometheus part of the cluster e2e: ${promMissing}`);

describe.skipIf(missing !== undefined)("cluster shape, end to end", () => {
  let rig: ClusterRig;
  let scenario: Scenario;
  let prom: PrometheusHandle | undefined;
  let session: Obj;
  const approvals: Obj[] = [];
  let intruder: Obj;
  const events: Obj[] = [];
  let eventsConn: Awaited<ReturnType<typeof connect>> | undefined;

  const kubectlJson = (args: string[]) => kubectlJsonOf(rig, args);
  const intrude = async (): Promise<Obj> => {
    const nc = await rig.natsConnect();
    try {
      const wire = encode(
        "tool.execute.request",
        { callId: "intruder-1", tool: "fetch", arguments: { url: scenario.statusUrl } },
        { session: SESSION, principal: "mallory", capsule: "intruder" },
        { timeoutMs: 10_000 },
      );
      const reply = await nc.request(subjects.toolExecute("fetch"), wire, { timeout: 10_000 });
      return decode(reply.data, { checkDeadline: false }) as unknown as Obj;
    } finally {
      await nc.close();
    }
  };
  const cond = condition;
  const credsOf = async (secret: string): Promise<Uint8Array> => {
    const s = await kubectlJson(["get", "secret", secret, "-n", NAMESPACE]);
    return new Uint8Array(Buffer.from(s.data["nats.creds"], "base64"));
  };
  const diagnose = () =>
    `session events: ${JSON.stringify(events)}\noperator log tail:\n${rig.operatorLog().slice(-6000)}\n` +
    `session pod:\n${(() => {
      try {
        return rig.kubelet.logs(NAMESPACE, `${SESSION}-session`, "sidecar").slice(-4000);
      } catch (e) {
        return String(e);
      }
    })()}`;

  beforeAll(async () => {
    rig = await startClusterRig();
    scenario = await prepareScenario(rig);
    // The session's events (status lines, tool calls) as a client of the session would see them.
    eventsConn = await rig.natsConnect();
    const sub = eventsConn.subscribe(subjects.sessionEvents(SESSION));
    void (async () => {
      for await (const m of sub) {
        try {
          events.push(decode(m.data, { checkDeadline: false }).body as Obj);
        } catch {
          events.push({ malformed: m.string() });
        }
      }
    })();
    await applyScenario(rig, scenario).catch((err: Error) => {
      throw new Error(`${err.message}\n${diagnose()}`);
    });

    if (!promMissing) {
      prom = await startPrometheus([
        { job: "astrid-operator", address: `127.0.0.1:${rig.operatorMetricsPort}` },
        ...SERVING.map((c) => ({
          job: "astrid-capsules",
          address: `127.0.0.1:${rig.kubelet.hostPort(NAMESPACE, `${c}-0`, "metrics")}`,
          labels: { pod: `${c}-0` },
        })),
      ]);
    }

    // A person at kubectl: every Approval that appears is looked at and answered.
    const done = await answerUntilFinished(rig, { timeoutMs: 240_000 }).catch((err: Error) => {
      throw new Error(`${err.message}\n${diagnose()}`);
    });
    session = done.session;
    approvals.push(...done.approvals);

    // Someone on the bus calls the tool directly, without a token: the sidecar refuses.
    intruder = await intrude();
  }, 420_000);

  afterAll(async () => {
    await eventsConn?.close();
    await prom?.stop();
    await scenario?.stop();
    await rig?.stop();
  }, 60_000);

  it("finishes the session with the model's answer and the usage of every model call", () => {
    expect(cond(session, "Succeeded")?.status, JSON.stringify(session.status)).toBe("True");
    expect(session.status.result).toContain(ANSWER);
    // Two model turns (the fetch, the answer), each USAGE tokens.
    expect(session.status.usage.inputTokens).toBe(2 * USAGE.input);
    expect(session.status.usage.outputTokens).toBe(2 * USAGE.output);
    expect(Number(session.status.usage.costMicroUsd)).toBeGreaterThan(0);
    expect(session.status.startedAt).toBeDefined();
    expect(session.status.finishedAt).toBeDefined();
    expect(scenario.llm.requests).toHaveLength(2);
  });

  it("asked a person for each tool call and connection, through Approval objects", async () => {
    // The tool call, then the connection it makes.
    expect(
      approvals.map((a) => [a.spec.capsule, a.spec.action.kind, a.spec.action.target]),
    ).toEqual([
      ["http", "tool", "fetch"],
      ["http", "net", expect.stringContaining("127.0.0.1")],
    ]);
    expect(approvals.every((a) => a.spec.session === SESSION)).toBe(true);
    const now = await kubectlJson(["get", "approvals", "-n", NAMESPACE]);
    expect((now.items as Obj[]).map((a) => a.status?.state)).toEqual(["Decided", "Decided"]);
    expect(scenario.statusHits()).toBe(1);
  });

  it("refuses a call on the bus that carries no token, whoever sends it", () => {
    expect(intruder.kind).toBe("error");
    expect(intruder.body).toMatchObject({
      code: "denied",
      layer: "token",
      message: "token: no capability token presented for tool:fetch",
    });
  });

  it("keeps a verifying audit chain on every capsule's volume, signed by its identity key", async () => {
    const entries: Record<string, number> = {};
    for (const r of await verifyAuditChains(rig, (claim) =>
      rig.kubelet.claimPath(NAMESPACE, claim),
    )) {
      expect(r.result.ok, `${r.claim}: ${JSON.stringify(r.result)}`).toBe(true);
      if (r.result.ok) entries[r.claim] = r.result.entries;
    }
    expect(entries[`${SESSION}-audit`]).toBeGreaterThan(0);
    expect(entries["audit-anthropic-0"]).toBeGreaterThan(0);
    const httpChain = readChainText(rig.kubelet.claimPath(NAMESPACE, "audit-http-0"));
    // The intruder's refusal is on the record.
    expect(httpChain).toContain("no capability token presented for tool:fetch");
  });

  it.skipIf(promMissing !== undefined)(
    "lets a real Prometheus evaluate every expression of the chart's alerts and dashboard",
    async () => {
      const p = prom as PrometheusHandle;
      const sess = `session=~"${SESSION}"`;
      // Wait for a scrape after the session finished.
      await p.waitFor(`astrid_budget_spent_tokens{${sess}}`, (s) => s.some((x) => x.value > 0));
      // Rates need several scrapes of each target within their window.
      for (const job of ["astrid-operator", "astrid-capsules"]) {
        await p.waitFor(`count_over_time(up{job="${job}"}[2m]) >= 4`, (x) => x.length > 0);
      }
      // A counter's series appears at its first increment, so a rate needs a second one seen
      // by a later scrape: the intruder tries again once the first refusal was scraped.
      await p.waitFor('astrid_denials_total{layer="token"}', (s) => s.length > 0);
      expect((await intrude()).kind).toBe("error");
      await p.waitFor(
        'increase(astrid_denials_total{layer="token"}[2m])',
        (s) => s.some((x) => x.value > 0),
        60_000,
      );

      const dash = JSON.parse(
        readFileSync(path.join(repoRoot, "charts/astrid/dashboards/astrid.json"), "utf8"),
      ) as { panels: { title: string; targets?: { expr: string }[] }[] };
      const results = new Map<string, Obj[]>();
      for (const panel of dash.panels) {
        for (const t of panel.targets ?? []) {
          const expr = t.expr
            .replaceAll('session=~"$session"', sess)
            .replaceAll("$__rate_interval", "2m");
          results.set(expr, await p.query(expr));
        }
      }
      const of = (needle: string) =>
        [...results.entries()].filter(([e]) => e.includes(needle)).map(([, s]) => s);
      // Money and tokens of the session, per capsule that spent them (the provider).
      for (const s of [...of("astrid_budget_"), ...of("Share")]) {
        expect(s.some((x) => x.metric.capsule === "anthropic")).toBe(true);
      }
      expect(of("astrid_denials_total")[0]?.some((x) => x.metric.layer === "token")).toBe(true);
      expect(of("astrid_approvals_total")[0]?.some((x) => x.metric.outcome === "allow_once")).toBe(
        true,
      );
      expect(of("astrid_sidecar_call_duration_seconds")[0]?.map((x) => x.metric.kind)).toEqual(
        expect.arrayContaining(["llm", "tool"]),
      );
      expect(
        of("astrid_operator_reconcile_duration_seconds")[0]?.map((x) => x.metric.controller),
      ).toEqual(expect.arrayContaining(["capsule", "agentsession"]));
      // No audit write failed: the sum is there, and it is zero.
      expect(of("astrid_audit_write_failures_total")[0]?.map((x) => x.value)).toEqual([0]);

      // The alert rules as the chart renders them, with thresholds at 0 so each fires on
      // what this run produced; a rule that cannot see its series would stay silent.
      // The NATS subchart is not vendored here; the rules do not depend on it.
      const chart = mkdtempSync(path.join(os.tmpdir(), "astrid-chart-"));
      cpSync(path.join(repoRoot, "charts/astrid"), chart, { recursive: true });
      const chartYaml = parse(readFileSync(path.join(chart, "Chart.yaml"), "utf8")) as Obj;
      delete chartYaml.dependencies;
      writeFileSync(path.join(chart, "Chart.yaml"), stringify(chartYaml));
      const rendered = spawnSync(
        HELM,
        [
          "template",
          "r",
          chart,
          "--set",
          "monitoring.rules.enabled=true",
          "--set",
          "monitoring.rules.budgetRatio=0",
          "--set",
          "monitoring.rules.denialRatePerSecond=0",
          "--set",
          "monitoring.rules.reconcileErrorRatePerSecond=-1",
        ],
        { encoding: "utf8" },
      );
      rmSync(chart, { recursive: true, force: true });
      expect(rendered.status, rendered.stderr).toBe(0);
      const rule = parseAllDocuments(rendered.stdout)
        .map((d) => d.toJS() as Obj | null)
        .find((m) => m?.kind === "PrometheusRule") as Obj;
      const alerts = new Map<string, Obj[]>();
      for (const g of rule.spec.groups as Obj[]) {
        for (const r of g.rules as Obj[]) alerts.set(r.alert, await p.query(r.expr));
      }
      expect([...alerts.keys()].sort()).toEqual([
        "AstridAuditWriteFailures",
        "AstridBudgetNearlySpent",
        "AstridDenialSpike",
        "AstridReconcileErrors",
        "AstridTokenBudgetNearlySpent",
      ]);
      for (const name of ["AstridBudgetNearlySpent", "AstridTokenBudgetNearlySpent"]) {
        expect(
          alerts
            .get(name)
            ?.some((x) => x.metric.session === SESSION && x.metric.capsule === "anthropic"),
          name,
        ).toBe(true);
      }
      expect(alerts.get("AstridDenialSpike")?.map((x) => x.metric.layer)).toContain("token");
      expect(alerts.get("AstridAuditWriteFailures")).toEqual([]);
      // With the threshold below zero every controller's error rate (0 here) is shown.
      expect(alerts.get("AstridReconcileErrors")?.length).toBeGreaterThan(0);
    },
    120_000,
  );

  it("gives each capsule pod its own NATS user, which the server holds to the capsule's ACL", async () => {
    for (const c of SERVING) {
      const cap = await kubectlJson(["get", "capsule", c, "-n", NAMESPACE]);
      const secret = await kubectlJson(["get", "secret", `${c}-nats`, "-n", NAMESPACE]);
      expect(cap.status.natsUser).toMatch(/^U[A-Z2-7]{55}$/);
      expect(secret.metadata.annotations["astrid.dev/nats-user"]).toBe(cap.status.natsUser);
    }
    // The provider's own credentials cannot call the http tool: the server refuses the
    // publish before any sidecar sees it.
    const nc = await connect({
      servers: rig.nats.url,
      authenticator: credsAuthenticator(await credsOf(`anthropic-nats`)),
      inboxPrefix: "_INBOX.anthropic",
    });
    try {
      await expect(
        nc.request(subjects.toolExecute("fetch"), "{}", { timeout: 3000 }),
      ).rejects.toThrow(/permission/i);
    } finally {
      await nc.close();
    }
  });

  it("revokes the session's token and NATS user when the session is deleted", async () => {
    const secret = await kubectlJson([
      "get",
      "secret",
      `${SESSION}-session-token`,
      "-n",
      NAMESPACE,
    ]);
    const jti = secret.metadata.annotations["astrid.dev/token-id"] as string;
    expect(jti).toMatch(/.+/);
    const sessionCreds = await credsOf(`${SESSION}-session-nats`);
    // Before: the session pod's user may connect.
    await (
      await connect({ servers: rig.nats.url, authenticator: credsAuthenticator(sessionCreds) })
    ).close();
    const del = await rig.kubectl([
      "delete",
      "agentsession",
      SESSION,
      "-n",
      NAMESPACE,
      "--timeout=60s",
    ]);
    expect(del.code, del.stderr).toBe(0);
    const nc = await rig.natsConnect();
    try {
      const kv = await new Kvm(nc).open("astrid-revocations");
      const entry = await kv.get(jti);
      expect(entry?.string()).toMatch(/^\{"exp":\d+\}$/);
    } finally {
      await nc.close();
    }
    // After: the server refuses its credentials.
    await expect(
      connect({
        servers: rig.nats.url,
        authenticator: credsAuthenticator(sessionCreds),
        reconnect: false,
        timeout: 5000,
      }),
    ).rejects.toThrow(/authorization|revoked/i);
  }, 90_000);
});

function readChainText(dir: string): string {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".jsonl"))
    .map((f) => readFileSync(path.join(dir, f), "utf8"))
    .join("");
}
