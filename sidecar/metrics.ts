/**
 * The sidecar's Prometheus series. Names and labels are a contract with the Helm chart's
 * dashboards and alerts: change them only together with the chart.
 *
 * Each sidecar has its own Registry (not prom-client's global one) so an in-process daemon
 * can host many sidecars without their series colliding, and tests see only their own.
 * Every label combination of a bounded set is created at construction: a series that first
 * appears on the first denial makes `rate()` and absence alerts blind until then.
 */

import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { Layer } from "../core/security/decision.js";

export const CALL_KINDS = ["tool", "llm", "context", "host"] as const;
export type CallKind = (typeof CALL_KINDS)[number];

export const CALL_OUTCOMES = ["ok", "error", "denied"] as const;
export type CallOutcome = (typeof CALL_OUTCOMES)[number];

export const DENIAL_LAYERS = [
  "sandbox",
  "gate",
  "acl",
  "token",
  "budget",
  "approval",
] as const satisfies readonly Layer[];

export const APPROVAL_OUTCOMES = [
  "allow_once",
  "allow_session",
  "allow_workspace",
  "allow_always",
  "deny",
  "timeout",
] as const;
export type ApprovalOutcome = (typeof APPROVAL_OUTCOMES)[number];

/** From 50 µs (an in-process host call) to 60 s (a slow LLM completion). */
export const CALL_DURATION_BUCKETS: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
  5, 10, 30, 60,
];

/** What the budget gauges read; core's BudgetSnapshot has these fields. */
export interface BudgetGaugeSnapshot {
  readonly spentMicroUsd: number;
  readonly limitMicroUsdSession: number;
  readonly spentTokens: number;
  readonly limitTokensSession: number;
}

/** Ends one call; a second call is ignored so a finally-block after a catch cannot count twice. */
export type EndCall = (outcome: CallOutcome) => void;

export class SidecarMetrics {
  readonly registry = new Registry();
  private readonly calls: Counter<"capsule" | "kind" | "outcome">;
  private readonly duration: Histogram<"capsule" | "kind">;
  private readonly inFlight: Gauge<"capsule">;
  private readonly denials: Counter<"capsule" | "layer">;
  private readonly approvals: Counter<"capsule" | "outcome">;
  private readonly budgetGauges: {
    readonly spentMicroUsd: Gauge<"session" | "capsule">;
    readonly limitMicroUsd: Gauge<"session" | "capsule">;
    readonly spentTokens: Gauge<"session" | "capsule">;
    readonly limitTokens: Gauge<"session" | "capsule">;
  };
  private readonly auditAppends: Counter<"capsule">;
  private readonly auditFailures: Counter<"capsule">;
  private readonly engineRestarts: Counter<"capsule" | "engine">;

  constructor(
    readonly capsule: string,
    opts: { readonly defaultMetrics?: boolean } = {},
  ) {
    const registers = [this.registry];
    this.calls = new Counter({
      name: "astrid_sidecar_calls_total",
      help: "Calls handled by the sidecar, by kind (tool, llm, context, host) and outcome (ok, error, denied).",
      labelNames: ["capsule", "kind", "outcome"],
      registers,
    });
    this.duration = new Histogram({
      name: "astrid_sidecar_call_duration_seconds",
      help: "Time from a call's arrival at the sidecar to its answer, enforcement included.",
      labelNames: ["capsule", "kind"],
      buckets: [...CALL_DURATION_BUCKETS],
      registers,
    });
    this.inFlight = new Gauge({
      name: "astrid_sidecar_in_flight",
      help: "Calls started and not yet answered.",
      labelNames: ["capsule"],
      registers,
    });
    this.denials = new Counter({
      name: "astrid_denials_total",
      help: "Actions denied, by the security layer that denied them.",
      labelNames: ["capsule", "layer"],
      registers,
    });
    this.approvals = new Counter({
      name: "astrid_approvals_total",
      help: "Approval requests answered, by answer (timeout: nobody answered in time, so denied).",
      labelNames: ["capsule", "outcome"],
      registers,
    });
    const budgetGauge = (name: string, help: string): Gauge<"session" | "capsule"> =>
      new Gauge({ name, help, labelNames: ["session", "capsule"], registers });
    this.budgetGauges = {
      spentMicroUsd: budgetGauge(
        "astrid_budget_spent_micro_usd",
        "Money a session has spent (settled), in millionths of a US dollar.",
      ),
      limitMicroUsd: budgetGauge(
        "astrid_budget_limit_micro_usd",
        "A session's money limit, in millionths of a US dollar.",
      ),
      spentTokens: budgetGauge("astrid_budget_spent_tokens", "LLM tokens a session has spent."),
      limitTokens: budgetGauge("astrid_budget_limit_tokens", "A session's LLM token limit."),
    };
    this.auditAppends = new Counter({
      name: "astrid_audit_appends_total",
      help: "Entries appended to the audit chain.",
      labelNames: ["capsule"],
      registers,
    });
    this.auditFailures = new Counter({
      name: "astrid_audit_write_failures_total",
      help: "Audit writes that failed (the action they recorded was stopped).",
      labelNames: ["capsule"],
      registers,
    });
    this.engineRestarts = new Counter({
      name: "astrid_engine_restarts_total",
      help: "Capsule engine restarts (a crashed MCP server, a WASM instance torn down).",
      labelNames: ["capsule", "engine"],
      registers,
    });

    for (const kind of CALL_KINDS) {
      for (const outcome of CALL_OUTCOMES) this.calls.inc({ capsule, kind, outcome }, 0);
      this.duration.zero({ capsule, kind });
    }
    this.inFlight.set({ capsule }, 0);
    for (const layer of DENIAL_LAYERS) this.denials.inc({ capsule, layer }, 0);
    for (const outcome of APPROVAL_OUTCOMES) this.approvals.inc({ capsule, outcome }, 0);
    this.auditAppends.inc({ capsule }, 0);
    this.auditFailures.inc({ capsule }, 0);

    if (opts.defaultMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: "astrid_sidecar_" });
    }
  }

  /** Starts timing one call; the returned function records its outcome exactly once. */
  callStarted(kind: CallKind): EndCall {
    const { capsule } = this;
    const started = process.hrtime.bigint();
    this.inFlight.inc({ capsule });
    let ended = false;
    return (outcome) => {
      if (ended) return;
      ended = true;
      this.inFlight.dec({ capsule });
      this.calls.inc({ capsule, kind, outcome });
      this.duration.observe({ capsule, kind }, Number(process.hrtime.bigint() - started) / 1e9);
    };
  }

  denied(layer: Layer): void {
    this.denials.inc({ capsule: this.capsule, layer });
  }

  approval(outcome: ApprovalOutcome): void {
    this.approvals.inc({ capsule: this.capsule, outcome });
  }

  budget(session: string, snapshot: BudgetGaugeSnapshot): void {
    const labels = { session, capsule: this.capsule };
    this.budgetGauges.spentMicroUsd.set(labels, snapshot.spentMicroUsd);
    this.budgetGauges.limitMicroUsd.set(labels, snapshot.limitMicroUsdSession);
    this.budgetGauges.spentTokens.set(labels, snapshot.spentTokens);
    this.budgetGauges.limitTokens.set(labels, snapshot.limitTokensSession);
  }

  /** Drops a finished session's budget series: one series per session ever seen would grow forever. */
  forgetSession(session: string): void {
    const labels = { session, capsule: this.capsule };
    for (const g of Object.values(this.budgetGauges)) g.remove(labels);
  }

  auditAppended(): void {
    this.auditAppends.inc({ capsule: this.capsule });
  }

  auditFailed(): void {
    this.auditFailures.inc({ capsule: this.capsule });
  }

  engineRestarted(engine: string): void {
    this.engineRestarts.inc({ capsule: this.capsule, engine });
  }

  /** The Content-Type of `text()`: Prometheus text exposition 0.0.4. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The text exposition a scrape receives. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}
