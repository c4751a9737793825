/**
 * The Approval reconciler: key in, the held bus request answered when spec.decision is set,
 * and status.state made to say Pending, Decided or Expired. It runs with the bridge on the
 * leader only (ApprovalController), because the held requests live in the leader's memory.
 */
import type { Logger } from "pino";
import type { Approval } from "../api/approval.js";
import type { Condition } from "../api/common.js";
import { type Client, isSubset } from "../runtime/client.js";
import { Controller, type ControllerOptions, type Result } from "../runtime/controller.js";
import { splitKey } from "../runtime/keys.js";
import type { KubeObject } from "../runtime/rest.js";
import { Approvals } from "../session/resources.js";
import type { ApprovalBridge } from "./bridge.js";
import { DEADLINE_ANNOTATION } from "./desired.js";

type ApprovalObject = Approval & KubeObject;
type State = "Pending" | "Decided" | "Expired";

/** What status.state should be, and for how long that holds (ms), from the object alone. */
export function approvalState(
  a: ApprovalObject,
  nowMs: number,
): { state: State; untilMs?: number } {
  if (a.status?.state === "Expired") return { state: "Expired" };
  if (a.spec.decision !== undefined) return { state: "Decided" };
  const deadline = a.metadata.annotations?.[DEADLINE_ANNOTATION];
  // No deadline: a question created by hand waits for as long as it takes.
  if (!deadline) return { state: "Pending" };
  const left = Date.parse(deadline) - nowMs;
  if (!(left > 0)) return { state: "Expired" };
  return { state: "Pending", untilMs: left };
}

export function approvalReconciler(
  client: Client,
  bridge: ApprovalBridge,
  opts: { log: Logger; now?: () => Date },
): (key: string) => Promise<Result | undefined> {
  const now = opts.now ?? (() => new Date());
  return async (key) => {
    const { namespace, name } = splitKey(key);
    const a = client.get<ApprovalObject>(Approvals, namespace, name);
    if (!a) {
      // Deleting the question is no consent: the waiting call is denied now instead of later.
      bridge.answer(key, "deny", "astrid-operator", "the Approval was deleted");
      return undefined;
    }
    const at = now();
    const { state, untilMs } = approvalState(a, at.getTime());
    if (state === "Decided" && a.spec.decision !== undefined)
      bridge.answer(key, a.spec.decision, a.spec.decidedBy ?? "unknown");
    if (state === "Expired" && bridge.holds(key)) {
      // The deadline passed on this clock before the bridge's timer fired: the sidecar has
      // given up (and denied) by now, an answer would find nobody.
      bridge.answer(key, "deny", "astrid-operator", "the approval expired");
    }
    const generation = (a.metadata.generation as number | undefined) ?? 0;
    const message = {
      Pending: "waiting for a person to set spec.decision",
      Decided: `decided ${a.spec.decision ?? ""} by ${a.spec.decidedBy ?? "unknown"}`,
      Expired: "nobody decided before the deadline; the call was denied",
    }[state];
    const prev = a.status?.conditions?.find((c) => c.type === "Ready");
    const ready: Condition = {
      type: "Ready",
      status: state === "Pending" ? "False" : "True",
      reason: state,
      message,
      observedGeneration: generation,
      lastTransitionTime:
        prev && prev.status === (state === "Pending" ? "False" : "True")
          ? prev.lastTransitionTime
          : at.toISOString(),
    };
    const status = { state, observedGeneration: generation, conditions: [ready] };
    if (!isSubset(status, a.status ?? {})) {
      await client.applyStatus(Approvals, {
        apiVersion: a.apiVersion,
        kind: a.kind,
        metadata: { name, namespace },
        status,
      });
    }
    return untilMs !== undefined ? { requeueAfter: untilMs } : undefined;
  };
}

/**
 * The Approval controller with the bridge attached: the Manager starts controllers only while
 * leading and stops them when the lease is lost, so subscribing here makes the bridge
 * leader-only without a second mechanism.
 */
export class ApprovalController extends Controller {
  constructor(
    opts: ControllerOptions,
    private readonly bridge: ApprovalBridge,
  ) {
    super(opts);
  }

  override start(): void {
    super.start();
    this.bridge.start();
  }

  override async stop(): Promise<void> {
    await this.bridge.stop();
    await super.stop();
  }
}
