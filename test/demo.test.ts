import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);

describe("make demo (kernel/demo.ts)", () => {
  it("wires orchestrator → cache → provider by configuration, serves the repeat from the cache, denies and audits a foreign publish", async () => {
    const { stdout } = await run(process.execPath, ["--import", "tsx", "kernel/demo.ts"], {
      timeout: 30_000,
    });
    expect(stdout).toContain("start order: replay → cache → react");
    expect(stdout).toMatch(/turn 1 \[cache miss\]: \(replay provider/);
    expect(stdout).toMatch(/turn 2 \[cache hit\]: \(replay provider/);
    expect(stdout).toContain("provider saw 1 request(s) for 2 identical turns");
    expect(stdout).toContain(
      'cache → tool.v1.execute.shell: denied by IPC ACL: publish to "tool.v1.execute.shell" is not allowed',
    );
    expect(stdout).toMatch(/audit chain verified: 6 entries/);
  });
});
