import http from "node:http";
import type { AddressInfo } from "node:net";
import { Counter, Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type PrometheusHandle, prometheusMissingReason, startPrometheus } from "./prometheus.js";

const missing = prometheusMissingReason();
if (missing) console.log(`skipped: ${missing}`);

describe.skipIf(missing !== undefined)("prometheus harness", () => {
  const registry = new Registry();
  const denials = new Counter({
    name: "astrid_test_denials_total",
    help: "test series",
    labelNames: ["layer"],
    registers: [registry],
  });
  let server: http.Server;
  let prom: PrometheusHandle;

  beforeAll(async () => {
    denials.inc({ layer: "gate" }, 3);
    server = http.createServer(async (_req, res) => {
      res.setHeader("content-type", registry.contentType);
      res.end(await registry.metrics());
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const { port } = server.address() as AddressInfo;
    prom = await startPrometheus([
      { job: "app", address: `127.0.0.1:${port}`, labels: { capsule: "fs" } },
      // Nothing listens here: the target must show as down, not break the others.
      { job: "gone", address: "127.0.0.1:1" },
    ]);
  }, 60_000);

  afterAll(async () => {
    await prom?.stop();
    server?.close();
  });

  it("scrapes a real /metrics endpoint and evaluates PromQL over it", async () => {
    const got = await prom.waitFor(
      'sum by (layer, capsule) (astrid_test_denials_total{job="app"})',
      (s) => s.length === 1,
    );
    expect(got[0]?.metric).toEqual({ layer: "gate", capsule: "fs" });
    expect(got[0]?.value).toBe(3);
    // A target is "unknown" until its first scrape; wait for that, then it must be down.
    let gone: string | undefined = "unknown";
    for (let i = 0; i < 100 && gone === "unknown"; i++) {
      gone = (await prom.targets()).find((t) => t.job === "gone")?.health;
      if (gone === "unknown") await new Promise((r) => setTimeout(r, 200));
    }
    expect(gone).toBe("down");
  }, 60_000);

  it("rejects an invalid expression with Prometheus' own parse error", async () => {
    await expect(prom.query("sum by (layer (x)")).rejects.toThrow(
      /prometheus rejected .*parse error/,
    );
  });
});
