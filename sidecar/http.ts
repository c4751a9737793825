/**
 * The sidecar's small HTTP server: Kubernetes probes and the Prometheus scrape. It serves
 * three GET paths and nothing else. It is loopback by default because /metrics names
 * sessions and capsules; a pod exposes it deliberately through `http.host`.
 */

import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export interface SidecarHealth {
  readonly live: boolean;
  readonly ready: boolean;
  readonly reason?: string;
}

/** What /metrics serves; SidecarMetrics has this shape. */
export interface MetricsSource {
  readonly contentType: string;
  text(): Promise<string>;
}

export interface SidecarHttpOptions {
  readonly host?: string;
  readonly port: number;
  readonly metrics: MetricsSource;
  readonly health: () => SidecarHealth;
}

export interface SidecarHttp {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** Probes and scrapes send a few short headers; a larger request is not one of them. */
export const MAX_HEADER_BYTES = 8 * 1024;
// A peer that trickles headers must not hold a socket open for minutes.
const HEADERS_TIMEOUT_MS = 5_000;
const REQUEST_TIMEOUT_MS = 10_000;

function send(res: ServerResponse, status: number, body: string, headers = {}): void {
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "cache-control": "no-store",
    ...headers,
  });
  res.end(body);
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers["content-length"];
  return (length !== undefined && length !== "0") || req.headers["transfer-encoding"] !== undefined;
}

/** Calls `health()` and fails closed: a probe that throws reports not live and not ready. */
function readHealth(health: () => SidecarHealth): SidecarHealth {
  try {
    return health();
  } catch (e) {
    const reason = `health check failed: ${(e as Error).message}`;
    return { live: false, ready: false, reason };
  }
}

export function startSidecarHttp(opts: SidecarHttpOptions): Promise<SidecarHttp> {
  const server = createServer(
    {
      maxHeaderSize: MAX_HEADER_BYTES,
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: REQUEST_TIMEOUT_MS,
    },
    (req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if (path !== "/healthz" && path !== "/readyz" && path !== "/metrics") {
        send(res, 404, "not found\n");
        return;
      }
      if (req.method !== "GET" && req.method !== "HEAD") {
        send(res, 405, "method not allowed\n", { allow: "GET, HEAD" });
        return;
      }
      // Nothing here reads a body; refusing one keeps a client from streaming data at us.
      if (hasBody(req)) {
        send(res, 413, "request body not accepted\n", { connection: "close" });
        return;
      }
      if (path === "/metrics") {
        opts.metrics.text().then(
          (text) => send(res, 200, text, { "content-type": opts.metrics.contentType }),
          (e: unknown) => send(res, 500, `metrics failed: ${(e as Error).message}\n`),
        );
        return;
      }
      const h = readHealth(opts.health);
      const ok = path === "/healthz" ? h.live : h.ready;
      const word = path === "/healthz" ? "not live" : "not ready";
      if (ok) send(res, 200, "ok\n");
      else send(res, 503, `${word}${h.reason ? `: ${h.reason}` : ""}\n`);
    },
  );
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, opts.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      const addr = server.address() as AddressInfo;
      const host = addr.family === "IPv6" ? `[${addr.address}]` : addr.address;
      resolve({
        url: `http://${host}:${addr.port}`,
        port: addr.port,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            // Probe clients keep connections alive; without this, close() waits for them.
            server.closeAllConnections();
          }),
      });
    });
  });
}
