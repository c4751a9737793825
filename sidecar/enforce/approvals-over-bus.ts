/**
 * Approvals over the bus (layer 5 in a distributed shape): when the sidecar's broker has a
 * request for a person, it is sent as `approval.v1.request.<session>` to whoever answers for the
 * session (the CLI's prompt, or the operator, which turns it into an Approval object) and the
 * reply is the decision. Nobody answering is a deny, and so is a malformed reply.
 */
import type { Bus } from "../../core/bus/bus.js";
import { decode, encode, expectKind } from "../../core/protocol/envelope.js";
import { subjects } from "../../core/protocol/topics.js";
import type { ApprovalBroker } from "../../core/security/approval/broker.js";
import type { ApprovalDecision, ApprovalRequest } from "../../core/security/approval/request.js";

export interface BusApproverOptions {
  readonly bus: Bus;
  readonly broker: ApprovalBroker;
  /** The sidecar's own capsule id, as the envelope's sender. */
  readonly capsule: string;
  readonly onError?: (err: Error, request: ApprovalRequest) => void;
}

/** Connects the broker to the bus; returns the function that disconnects it. */
export function attachBusApprover(o: BusApproverOptions): () => void {
  return o.broker.attach({
    requested(req) {
      void ask(o, req);
    },
  });
}

async function ask(o: BusApproverOptions, req: ApprovalRequest): Promise<void> {
  const timeoutMs = req.deadline - Date.now();
  if (timeoutMs <= 0) return; // the broker's own timer denies it
  const summary = `${req.capsule} wants ${req.action.kind} ${req.action.target}`;
  let decision: ApprovalDecision = "deny";
  let decidedBy = "no-approver";
  try {
    const wire = encode(
      "approval.request",
      {
        requestId: req.id,
        action: {
          kind: req.action.kind === "capsule_install" ? "capsule_install" : req.action.kind,
          target: req.action.target,
          argsHash: req.action.argsHash,
        },
        reason: req.reason,
        summary,
      },
      { session: req.session, principal: req.principal, capsule: o.capsule },
      { timeoutMs },
    );
    const reply = await o.bus.request(subjects.approvalRequest(req.session), wire, { timeoutMs });
    const answer = expectKind(decode(reply.data, { checkDeadline: false }), "approval.decision");
    if (answer.body.requestId !== req.id) {
      throw new Error(`decision answers request ${answer.body.requestId}, not ${req.id}`);
    }
    decision = answer.body.decision;
    decidedBy = answer.body.decidedBy;
  } catch (err) {
    const e = err as Error;
    // A timeout is the broker's to report (it denies at the deadline with its own reason).
    if (e.name === "RequestTimeoutError") return;
    o.onError?.(e, req);
    decidedBy =
      e.name === "NoRespondersError" ? "no-approver" : `invalid-reply: ${e.message}`.slice(0, 200);
  }
  try {
    o.broker.decide(req.id, decision, decidedBy);
  } catch {
    // Already decided (timed out meanwhile): the broker's answer stands.
  }
}
