/**
 * What a session pod says about the run: pending, running, or finished with a result. The
 * sidecar in task mode writes one JSON line to the termination log (docs/operator-sessions.md)
 * and exits 0 once it got a response, 1 otherwise; the kubelet hands that line back as the
 * container's `terminated.message`. Pure: a Pod in, an outcome out.
 */
import { z } from "zod";
import type { KubeObject } from "../runtime/rest.js";

const usageSchema = z.object({
  inputTokens: z.number().int().min(0),
  outputTokens: z.number().int().min(0),
  costMicroUsd: z
    .union([z.number().int().min(0), z.string().regex(/^(0|[1-9][0-9]{0,18})$/)])
    .optional(),
});

const responseSchema = z.object({
  text: z.string(),
  stopReason: z.string().min(1),
  usage: usageSchema.optional(),
  truncated: z.boolean().optional(),
});

const errorSchema = z.object({
  error: z.object({ code: z.string().min(1), message: z.string() }),
});

export interface SessionUsage {
  inputTokens: number;
  outputTokens: number;
  /** Micro-dollars as a decimal string (int64 in the CRD). */
  costMicroUsd: string;
}

export type SessionOutcome =
  | { phase: "Pending"; message: string }
  | { phase: "Running"; startedAt?: string }
  | {
      phase: "Succeeded" | "Failed";
      reason: string;
      message: string;
      result?: string;
      usage?: SessionUsage;
      startedAt?: string;
      finishedAt?: string;
    };

interface ContainerState {
  running?: { startedAt?: string };
  terminated?: {
    exitCode?: number;
    reason?: string;
    message?: string;
    startedAt?: string;
    finishedAt?: string;
  };
  waiting?: { reason?: string; message?: string };
}

interface PodStatus {
  phase?: string;
  reason?: string;
  message?: string;
  startTime?: string;
  containerStatuses?: { name: string; state?: ContainerState }[];
}

/** `step_limit` → `StepLimit`: a condition reason must be CamelCase letters and digits. */
export function conditionReason(word: string, fallback = "Unknown"): string {
  const r = word
    .split(/[^A-Za-z0-9]+/)
    .filter(Boolean)
    .map((w) => w.charAt(0).toUpperCase() + w.slice(1))
    .join("");
  return /^[A-Za-z]/.test(r) ? r : fallback;
}

function parseJson(text: string | undefined): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text.trim());
  } catch {
    return undefined;
  }
}

function usageOf(u: z.infer<typeof usageSchema> | undefined): SessionUsage | undefined {
  if (!u) return undefined;
  return {
    inputTokens: u.inputTokens,
    outputTokens: u.outputTokens,
    costMicroUsd: String(u.costMicroUsd ?? 0),
  };
}

/** The outcome of the session pod's `container` (the task-mode sidecar). */
export function sessionOutcome(pod: KubeObject, container = "sidecar"): SessionOutcome {
  const status = (pod.status ?? {}) as PodStatus;
  const state = status.containerStatuses?.find((c) => c.name === container)?.state;
  const t = state?.terminated;
  if (t) {
    const times = {
      ...(t.startedAt ? { startedAt: t.startedAt } : {}),
      ...(t.finishedAt ? { finishedAt: t.finishedAt } : {}),
    };
    const raw = parseJson(t.message);
    const exit = t.exitCode ?? -1;
    if (exit === 0) {
      const r = responseSchema.safeParse(raw);
      if (!r.success) {
        return {
          phase: "Failed",
          reason: "InvalidResult",
          message: `the sidecar exited 0 but its termination message is not a task result: ${(t.message ?? "").slice(0, 200) || "(empty)"}`,
          ...times,
        };
      }
      const usage = usageOf(r.data.usage);
      const truncated = r.data.truncated
        ? " (result truncated; the full text is in the audit chain)"
        : "";
      const common = { result: r.data.text, ...(usage ? { usage } : {}), ...times };
      return r.data.stopReason === "done"
        ? {
            phase: "Succeeded",
            reason: "Done",
            message: `the task finished${truncated}`,
            ...common,
          }
        : {
            phase: "Failed",
            reason: conditionReason(r.data.stopReason),
            message: `the orchestrator stopped: ${r.data.stopReason}${truncated}`,
            ...common,
          };
    }
    const e = errorSchema.safeParse(raw);
    if (e.success) {
      return {
        phase: "Failed",
        reason: conditionReason(e.data.error.code, "Error"),
        message: e.data.error.message || `the task failed: ${e.data.error.code}`,
        ...times,
      };
    }
    return {
      phase: "Failed",
      reason: conditionReason(t.reason ?? "", "Error"),
      message: `the sidecar exited with code ${exit}${t.message ? `: ${t.message.slice(0, 200)}` : ""}`,
      ...times,
    };
  }
  if (status.phase === "Failed") {
    // Evicted, deadline exceeded, or an init container (the package fetch) failed.
    return {
      phase: "Failed",
      reason: conditionReason(status.reason ?? "", "PodFailed"),
      message: status.message ?? "the session pod failed before the sidecar ran",
    };
  }
  if (state?.running) {
    return state.running.startedAt
      ? { phase: "Running", startedAt: state.running.startedAt }
      : { phase: "Running" };
  }
  const waiting = state?.waiting;
  return {
    phase: "Pending",
    message: waiting?.reason
      ? `${waiting.reason}${waiting.message ? `: ${waiting.message}` : ""}`
      : "the session pod is not running yet",
  };
}
