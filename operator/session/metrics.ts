/**
 * Per-session budget figures from the operator's point of view: the limits from the spec at
 * once, the spend from status.usage when the run ends. The live series (while the run goes)
 * are the sidecar's `astrid_budget_*{session,capsule}`, which the chart's budget alerts use;
 * these have their own names so a dashboard summing by session never counts a run twice, and
 * they outlive the session pod, which Prometheus stops scraping when it exits.
 */
import { Gauge, type Registry } from "prom-client";

type Labels = "namespace" | "session";

export class SessionMetrics {
  readonly limitMicroUsd: Gauge<Labels>;
  readonly spentMicroUsd: Gauge<Labels>;
  readonly limitTokens: Gauge<Labels>;
  readonly spentTokens: Gauge<Labels>;
  readonly pendingApprovals: Gauge<Labels>;

  constructor(registry: Registry) {
    const gauge = (name: string, help: string): Gauge<Labels> =>
      (registry.getSingleMetric(name) as Gauge<Labels> | undefined) ??
      new Gauge({ name, help, labelNames: ["namespace", "session"], registers: [registry] });
    this.limitMicroUsd = gauge(
      "astrid_session_budget_limit_micro_usd",
      "An AgentSession's money limit (spec.budget.maxSessionUsd), in millionths of a US dollar.",
    );
    this.spentMicroUsd = gauge(
      "astrid_session_budget_spent_micro_usd",
      "Money an AgentSession spent (status.usage.costMicroUsd), in millionths of a US dollar.",
    );
    this.limitTokens = gauge(
      "astrid_session_budget_limit_tokens",
      "An AgentSession's token limit (spec.budget.maxSessionTokens).",
    );
    this.spentTokens = gauge(
      "astrid_session_budget_spent_tokens",
      "Tokens an AgentSession used (status.usage input + output).",
    );
    this.pendingApprovals = gauge(
      "astrid_session_pending_approvals",
      "Approvals of an AgentSession waiting for a person.",
    );
  }

  set(
    labels: Record<Labels, string>,
    v: {
      limitMicroUsd: number;
      limitTokens: number;
      spentMicroUsd: number;
      spentTokens: number;
      pending: number;
    },
  ): void {
    this.limitMicroUsd.set(labels, v.limitMicroUsd);
    this.limitTokens.set(labels, v.limitTokens);
    this.spentMicroUsd.set(labels, v.spentMicroUsd);
    this.spentTokens.set(labels, v.spentTokens);
    this.pendingApprovals.set(labels, v.pending);
  }

  /** Drops a deleted session's series, so the registry does not grow with every run. */
  remove(labels: Record<Labels, string>): void {
    for (const g of [
      this.limitMicroUsd,
      this.spentMicroUsd,
      this.limitTokens,
      this.spentTokens,
      this.pendingApprovals,
    ])
      g.remove(labels);
  }
}
