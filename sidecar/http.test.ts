import { request } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import {
  MAX_HEADER_BYTES,
  type SidecarHealth,
  type SidecarHttp,
  startSidecarHttp,
} from "./http.js";
import { SidecarMetrics } from "./metrics.js";

interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** A raw request, so tests can send what fetch would refuse to (bodies on GET, huge headers). */
function call(
  url: string,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      { method: opts.method ?? "GET", headers: opts.headers, agent: false },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => {
          body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

let server: SidecarHttp | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function start(health: () => SidecarHealth): Promise<SidecarHttp> {
  const metrics = new SidecarMetrics("probe-test", { defaultMetrics: false });
  metrics.denied("token");
  server = await startSidecarHttp({ port: 0, metrics, health });
  return server;
}

describe("startSidecarHttp", () => {
  it("listens on loopback by default, on the port it was given or a free one", async () => {
    const s = await start(() => ({ live: true, ready: true }));
    expect(s.url).toBe(`http://127.0.0.1:${s.port}`);
    expect(s.port).toBeGreaterThan(0);
  });

  it("answers healthz and readyz 200 when live and ready", async () => {
    const s = await start(() => ({ live: true, ready: true }));
    expect(await call(s.url, "/healthz")).toMatchObject({ status: 200, body: "ok\n" });
    expect(await call(s.url, "/readyz")).toMatchObject({ status: 200, body: "ok\n" });
  });

  it("answers readyz 503 with the reason while not ready, and follows the state on each request", async () => {
    let health: SidecarHealth = { live: true, ready: false, reason: "starting" };
    const s = await start(() => health);
    expect(await call(s.url, "/readyz")).toMatchObject({
      status: 503,
      body: "not ready: starting\n",
    });
    expect((await call(s.url, "/healthz")).status).toBe(200);
    health = { live: true, ready: true };
    expect((await call(s.url, "/readyz")).status).toBe(200);
    health = { live: true, ready: false, reason: "draining" };
    expect(await call(s.url, "/readyz")).toMatchObject({
      status: 503,
      body: "not ready: draining\n",
    });
  });

  it("answers healthz 503 with the reason when not live", async () => {
    const s = await start(() => ({ live: false, ready: false, reason: "audit chain unwritable" }));
    expect(await call(s.url, "/healthz")).toMatchObject({
      status: 503,
      body: "not live: audit chain unwritable\n",
    });
  });

  it("fails closed when the health function throws", async () => {
    const s = await start(() => {
      throw new Error("state unavailable");
    });
    expect(await call(s.url, "/healthz")).toMatchObject({
      status: 503,
      body: "not live: health check failed: state unavailable\n",
    });
    expect((await call(s.url, "/readyz")).status).toBe(503);
  });

  it("serves the Prometheus text format at /metrics", async () => {
    const s = await start(() => ({ live: true, ready: true }));
    const r = await call(s.url, "/metrics?name[]=x");
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(r.body).toContain('astrid_denials_total{capsule="probe-test",layer="token"} 1\n');
  });

  it("answers 404 for any other path and 405 for other methods", async () => {
    const s = await start(() => ({ live: true, ready: true }));
    expect(await call(s.url, "/")).toMatchObject({ status: 404, body: "not found\n" });
    expect((await call(s.url, "/healthz/extra")).status).toBe(404);
    const post = await call(s.url, "/readyz", { method: "POST" });
    expect(post).toMatchObject({ status: 405, body: "method not allowed\n" });
    expect(post.headers.allow).toBe("GET, HEAD");
    expect(await call(s.url, "/readyz", { method: "HEAD" })).toMatchObject({
      status: 200,
      body: "",
    });
  });

  it("accepts no request body", async () => {
    const s = await start(() => ({ live: true, ready: true }));
    expect(
      await call(s.url, "/healthz", {
        headers: { "content-length": "5" },
        body: "hello",
      }),
    ).toMatchObject({ status: 413, body: "request body not accepted\n" });
    expect(
      await call(s.url, "/metrics", {
        headers: { "transfer-encoding": "chunked" },
        body: "hello",
      }),
    ).toMatchObject({ status: 413 });
  });

  it("refuses headers beyond the size bound", async () => {
    const s = await start(() => ({ live: true, ready: true }));
    const r = await call(s.url, "/healthz", { headers: { "x-big": "a".repeat(MAX_HEADER_BYTES) } });
    expect(r.status).toBe(431);
    expect(
      (await call(s.url, "/healthz", { headers: { "x-small": "a".repeat(1000) } })).status,
    ).toBe(200);
  });

  it("binds where it is told and reports a port in use as an error", async () => {
    const s = await start(() => ({ live: true, ready: true }));
    const metrics = new SidecarMetrics("x", { defaultMetrics: false });
    await expect(
      startSidecarHttp({ port: s.port, metrics, health: () => ({ live: true, ready: true }) }),
    ).rejects.toThrow(`listen EADDRINUSE: address already in use 127.0.0.1:${s.port}`);
  });

  it("closes even while a client holds a keep-alive connection", async () => {
    const s = await start(() => ({ live: true, ready: true }));
    const r = await fetch(`${s.url}/healthz`);
    expect(r.status).toBe(200);
    await s.close();
    server = undefined;
    await expect(fetch(`${s.url}/healthz`)).rejects.toThrow("fetch failed");
  });
});
