/**
 * Every decision of every layer goes through here into the audit chain. The returned decision
 * is the one the caller must act on: if the entry cannot be made durable, an allow becomes a
 * deny — an action that left no record did not happen (fail closed).
 */
import type { AuditChain } from "../../core/audit/index.js";
import { type Decision, deny, type Layer } from "../../core/security/decision.js";

export interface Who {
  readonly session: string;
  readonly principal: string;
  readonly capsule: string;
}

/** What the log reports to metrics; optional so the log has no metrics dependency. */
export interface DecisionObserver {
  denied?(layer: Layer): void;
  appended?(): void;
  auditFailed?(error: Error): void;
}

export class DecisionLog {
  constructor(
    private readonly audit: AuditChain,
    private readonly observer: DecisionObserver = {},
  ) {}

  /**
   * Appends the decision and resolves once it is durable. `args` are hashed by the chain, never
   * stored, so secrets in arguments stay out of the log.
   */
  async record(
    who: Who,
    decision: Decision,
    action: string,
    target: string,
    args?: unknown,
  ): Promise<Decision> {
    try {
      await this.audit.append({
        session: who.session,
        principal: who.principal,
        capsule: who.capsule,
        layer: decision.layer,
        action,
        target: target.slice(0, 1024),
        decision: decision.allowed ? "allow" : "deny",
        reason: (decision.allowed ? decision.rule : decision.reason).slice(0, 4096),
        ...(args !== undefined ? { args } : {}),
      });
      this.observer.appended?.();
    } catch (err) {
      this.observer.auditFailed?.(err as Error);
      this.observer.denied?.(decision.layer);
      return deny(decision.layer, `audit write failed, action refused: ${(err as Error).message}`);
    }
    if (!decision.allowed) this.observer.denied?.(decision.layer);
    return decision;
  }

  /** An event that is neither allow nor deny (a result, a restart); failures are reported only. */
  async note(who: Who, layer: Layer | "lifecycle", action: string, target: string, reason: string) {
    try {
      await this.audit.append({
        session: who.session,
        principal: who.principal,
        capsule: who.capsule,
        layer,
        action,
        target: target.slice(0, 1024),
        decision: "info",
        reason: reason.slice(0, 4096),
      });
      this.observer.appended?.();
    } catch (err) {
      this.observer.auditFailed?.(err as Error);
      throw err;
    }
  }
}
