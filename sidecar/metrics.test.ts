import { describe, expect, it } from "vitest";
import { SidecarMetrics } from "./metrics.js";

/** The sample lines of one series name (no # HELP/# TYPE lines), from a real scrape. */
function samples(text: string, name: string): string[] {
  return text.split("\n").filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
}

describe("SidecarMetrics", () => {
  it("exposes every contracted series, at zero, before anything happened", async () => {
    const m = new SidecarMetrics("github", { defaultMetrics: false });
    const text = await m.text();
    for (const [name, type] of [
      ["astrid_sidecar_calls_total", "counter"],
      ["astrid_sidecar_call_duration_seconds", "histogram"],
      ["astrid_sidecar_in_flight", "gauge"],
      ["astrid_denials_total", "counter"],
      ["astrid_approvals_total", "counter"],
      ["astrid_budget_spent_micro_usd", "gauge"],
      ["astrid_budget_limit_micro_usd", "gauge"],
      ["astrid_budget_spent_tokens", "gauge"],
      ["astrid_budget_limit_tokens", "gauge"],
      ["astrid_audit_appends_total", "counter"],
      ["astrid_audit_write_failures_total", "counter"],
      ["astrid_engine_restarts_total", "counter"],
    ]) {
      expect(text, name).toContain(`# TYPE ${name} ${type}\n`);
    }
    expect(samples(text, "astrid_sidecar_calls_total")).toHaveLength(12);
    expect(text).toContain(
      'astrid_sidecar_calls_total{capsule="github",kind="llm",outcome="denied"} 0\n',
    );
    expect(samples(text, "astrid_denials_total")).toEqual([
      'astrid_denials_total{capsule="github",layer="sandbox"} 0',
      'astrid_denials_total{capsule="github",layer="gate"} 0',
      'astrid_denials_total{capsule="github",layer="acl"} 0',
      'astrid_denials_total{capsule="github",layer="token"} 0',
      'astrid_denials_total{capsule="github",layer="budget"} 0',
      'astrid_denials_total{capsule="github",layer="approval"} 0',
    ]);
    expect(samples(text, "astrid_approvals_total")).toHaveLength(6);
    expect(samples(text, "astrid_sidecar_in_flight")).toEqual([
      'astrid_sidecar_in_flight{capsule="github"} 0',
    ]);
    expect(text).toContain(
      'astrid_sidecar_call_duration_seconds_bucket{le="0.00005",capsule="github",kind="tool"} 0\n',
    );
    expect(text).toContain(
      'astrid_sidecar_call_duration_seconds_bucket{le="60",capsule="github",kind="tool"} 0\n',
    );
  });

  it("counts a call once, tracks in-flight and its duration", async () => {
    const m = new SidecarMetrics("github", { defaultMetrics: false });
    const end = m.callStarted("tool");
    const other = m.callStarted("llm");
    expect(samples(await m.text(), "astrid_sidecar_in_flight")).toEqual([
      'astrid_sidecar_in_flight{capsule="github"} 2',
    ]);
    end("ok");
    end("error"); // a second end (finally after catch) must not count again
    other("denied");
    const text = await m.text();
    expect(samples(text, "astrid_sidecar_in_flight")).toEqual([
      'astrid_sidecar_in_flight{capsule="github"} 0',
    ]);
    expect(text).toContain(
      'astrid_sidecar_calls_total{capsule="github",kind="tool",outcome="ok"} 1\n',
    );
    expect(text).toContain(
      'astrid_sidecar_calls_total{capsule="github",kind="tool",outcome="error"} 0\n',
    );
    expect(text).toContain(
      'astrid_sidecar_calls_total{capsule="github",kind="llm",outcome="denied"} 1\n',
    );
    expect(text).toContain(
      'astrid_sidecar_call_duration_seconds_count{capsule="github",kind="tool"} 1\n',
    );
    expect(text).toContain(
      'astrid_sidecar_call_duration_seconds_bucket{le="+Inf",capsule="github",kind="llm"} 1\n',
    );
  });

  it("counts denials, approvals, audit appends and failures, engine restarts", async () => {
    const m = new SidecarMetrics("fs", { defaultMetrics: false });
    m.denied("acl");
    m.denied("acl");
    m.denied("budget");
    m.approval("allow_session");
    m.approval("timeout");
    m.auditAppended();
    m.auditAppended();
    m.auditAppended();
    m.auditFailed();
    m.engineRestarted("mcp");
    const text = await m.text();
    expect(text).toContain('astrid_denials_total{capsule="fs",layer="acl"} 2\n');
    expect(text).toContain('astrid_denials_total{capsule="fs",layer="budget"} 1\n');
    expect(text).toContain('astrid_approvals_total{capsule="fs",outcome="allow_session"} 1\n');
    expect(text).toContain('astrid_approvals_total{capsule="fs",outcome="timeout"} 1\n');
    expect(text).toContain('astrid_audit_appends_total{capsule="fs"} 3\n');
    expect(text).toContain('astrid_audit_write_failures_total{capsule="fs"} 1\n');
    expect(samples(text, "astrid_engine_restarts_total")).toEqual([
      'astrid_engine_restarts_total{capsule="fs",engine="mcp"} 1',
    ]);
  });

  it("sets budget gauges per session and forgets a finished session", async () => {
    const m = new SidecarMetrics("llm", { defaultMetrics: false });
    const snap = {
      spentMicroUsd: 1_250_000,
      limitMicroUsdSession: 5_000_000,
      spentTokens: 4200,
      limitTokensSession: 100_000,
    };
    m.budget("s-1", snap);
    m.budget("s-2", { ...snap, spentTokens: 7 });
    let text = await m.text();
    expect(samples(text, "astrid_budget_spent_micro_usd")).toEqual([
      'astrid_budget_spent_micro_usd{session="s-1",capsule="llm"} 1250000',
      'astrid_budget_spent_micro_usd{session="s-2",capsule="llm"} 1250000',
    ]);
    expect(text).toContain('astrid_budget_limit_micro_usd{session="s-1",capsule="llm"} 5000000\n');
    expect(text).toContain('astrid_budget_spent_tokens{session="s-2",capsule="llm"} 7\n');
    expect(text).toContain('astrid_budget_limit_tokens{session="s-1",capsule="llm"} 100000\n');
    m.forgetSession("s-1");
    text = await m.text();
    expect(text).not.toContain('session="s-1"');
    expect(text).toContain('astrid_budget_spent_tokens{session="s-2",capsule="llm"} 7\n');
  });

  it("adds the default process metrics under astrid_sidecar_, in its own registry", async () => {
    const a = new SidecarMetrics("a");
    const b = new SidecarMetrics("b");
    a.denied("gate");
    const text = await a.text();
    expect(text).toContain("# TYPE astrid_sidecar_process_cpu_seconds_total counter");
    expect(text).toContain("# TYPE astrid_sidecar_nodejs_heap_size_used_bytes gauge");
    expect(text).not.toContain('capsule="b"');
    expect(await b.text()).toContain('astrid_denials_total{capsule="b",layer="gate"} 0\n');
    expect(a.contentType).toBe("text/plain; version=0.0.4; charset=utf-8");
  });
});
