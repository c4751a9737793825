import { describe, expect, it } from "vitest";
import { conditionReason, sessionOutcome } from "./outcome.js";

const terminated = (
  exitCode: number,
  message?: string,
  reason = exitCode === 0 ? "Completed" : "Error",
) => ({
  status: {
    phase: exitCode === 0 ? "Succeeded" : "Failed",
    containerStatuses: [
      {
        name: "sidecar",
        state: {
          terminated: {
            exitCode,
            reason,
            ...(message !== undefined ? { message } : {}),
            startedAt: "2026-01-01T00:00:00Z",
            finishedAt: "2026-01-01T00:01:00Z",
          },
        },
      },
    ],
  },
});
const times = { startedAt: "2026-01-01T00:00:00Z", finishedAt: "2026-01-01T00:01:00Z" };

describe("sessionOutcome", () => {
  it("exit 0 with stopReason done is Succeeded with the text and usage (cost as a string)", () => {
    const msg = JSON.stringify({
      text: "Five lines.",
      stopReason: "done",
      usage: { inputTokens: 120, outputTokens: 30, costMicroUsd: 4200 },
      truncated: false,
    });
    expect(sessionOutcome(terminated(0, msg))).toEqual({
      phase: "Succeeded",
      reason: "Done",
      message: "the task finished",
      result: "Five lines.",
      usage: { inputTokens: 120, outputTokens: 30, costMicroUsd: "4200" },
      ...times,
    });
  });

  it("says when the result was cut to fit the termination message", () => {
    const msg = JSON.stringify({
      text: "abc",
      stopReason: "done",
      usage: { inputTokens: 1, outputTokens: 2 },
      truncated: true,
    });
    const o = sessionOutcome(terminated(0, msg));
    expect(o).toMatchObject({
      phase: "Succeeded",
      message: "the task finished (result truncated; the full text is in the audit chain)",
      usage: { inputTokens: 1, outputTokens: 2, costMicroUsd: "0" },
    });
  });

  it("exit 0 with another stopReason is Failed with that reason", () => {
    const msg = JSON.stringify({
      text: "partial",
      stopReason: "step_limit",
      usage: { inputTokens: 5, outputTokens: 6, costMicroUsd: "77" },
    });
    expect(sessionOutcome(terminated(0, msg))).toEqual({
      phase: "Failed",
      reason: "StepLimit",
      message: "the orchestrator stopped: step_limit",
      result: "partial",
      usage: { inputTokens: 5, outputTokens: 6, costMicroUsd: "77" },
      ...times,
    });
  });

  it("exit 1 with an error line is Failed with the error's code and message", () => {
    const msg = JSON.stringify({
      error: { code: "timeout", message: "no response within 600000 ms" },
    });
    expect(sessionOutcome(terminated(1, msg))).toEqual({
      phase: "Failed",
      reason: "Timeout",
      message: "no response within 600000 ms",
      ...times,
    });
  });

  it("exit 1 without a readable line is Failed with the kubelet's reason", () => {
    expect(sessionOutcome(terminated(137, undefined, "OOMKilled"))).toEqual({
      phase: "Failed",
      reason: "OOMKilled",
      message: "the sidecar exited with code 137",
      ...times,
    });
  });

  it("exit 0 with garbage is Failed, never Succeeded", () => {
    expect(sessionOutcome(terminated(0, "not json"))).toEqual({
      phase: "Failed",
      reason: "InvalidResult",
      message: "the sidecar exited 0 but its termination message is not a task result: not json",
      ...times,
    });
  });

  it("a pod that failed before the sidecar ran (the package fetch) is Failed with the pod's reason", () => {
    expect(
      sessionOutcome({
        status: { phase: "Failed", reason: "DeadlineExceeded", message: "too long" },
      }),
    ).toEqual({
      phase: "Failed",
      reason: "DeadlineExceeded",
      message: "too long",
    });
  });

  it("running and waiting containers are Running and Pending", () => {
    expect(
      sessionOutcome({
        status: {
          phase: "Running",
          containerStatuses: [
            { name: "sidecar", state: { running: { startedAt: "2026-01-01T00:00:00Z" } } },
          ],
        },
      }),
    ).toEqual({ phase: "Running", startedAt: "2026-01-01T00:00:00Z" });
    expect(
      sessionOutcome({
        status: {
          phase: "Pending",
          containerStatuses: [
            {
              name: "sidecar",
              state: { waiting: { reason: "ImagePullBackOff", message: "no such image" } },
            },
          ],
        },
      }),
    ).toEqual({ phase: "Pending", message: "ImagePullBackOff: no such image" });
    expect(sessionOutcome({})).toEqual({
      phase: "Pending",
      message: "the session pod is not running yet",
    });
  });
});

describe("conditionReason", () => {
  it("turns wire words into condition reasons and refuses what is not one", () => {
    expect(conditionReason("budget")).toBe("Budget");
    expect(conditionReason("missing-exporter")).toBe("MissingExporter");
    expect(conditionReason("42", "Error")).toBe("Error");
  });
});
