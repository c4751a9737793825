/**
 * Runs in a pod of the kind cluster (bundled by run.sh into one .mjs for the project's image):
 * serves the scenario's `.capsule` archives and the status page on :8080, and the
 * WIRE-PROTOCOL FAKE of the Anthropic Messages API (test/fixtures/scenario-cli/wire-fakes.ts)
 * on :8081 — the same fixtures the local end-to-end test uses, reachable from other pods.
 */
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { API_KEY, SCENARIO_STATUS_PATH, STATUS_PAGE, scenarioScript } from "../cluster/scenario.js";
import { startAnthropicWireFake } from "../fixtures/scenario-cli/wire-fakes.js";

const dir = process.env.FIXTURES_DIR ?? "/fixtures";
const statusUrl =
  process.env.STATUS_URL ?? `http://fixtures.astrid-e2e.svc:8080${SCENARIO_STATUS_PATH}`;

http
  .createServer((req, res) => {
    const url = req.url ?? "/";
    if (url === SCENARIO_STATUS_PATH) {
      res.writeHead(200, { "content-type": "text/plain" }).end(STATUS_PAGE);
      return;
    }
    const m = /^\/packages\/([a-z0-9.-]+\.capsule)$/.exec(url);
    if (!m?.[1]) {
      res.writeHead(404).end("not found");
      return;
    }
    let archive: Buffer;
    try {
      // ConfigMap keys cannot hold "/": the archives sit flat in the mounted directory.
      archive = readFileSync(path.join(dir, m[1]));
    } catch {
      res.writeHead(404).end("not found");
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream" }).end(archive);
  })
  .listen(8080, "0.0.0.0");

await startAnthropicWireFake(API_KEY, scenarioScript(statusUrl), { host: "0.0.0.0", port: 8081 });
console.log(`fixtures: packages and ${statusUrl} on :8080, Messages API fake on :8081`);
