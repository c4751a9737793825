/**
 * Issue 5's latency goals for the local shape: from `bin/astrid -p` being started to the first
 * request reaching the model provider, with astrid-daemon already running (warm: a new session,
 * so its sidecars start) and not running (cold: the CLI autostarts the daemon first). The
 * provider is the Anthropic Messages API test double on loopback, which marks when each request
 * has arrived. Each is measured for `bin/astrid` (the dist/ bundle when built) and for the
 * sources run through tsx. Baselines, measured the same way (spawn to exit): a bare
 * `node -e ""` and `node --import tsx -e ""`, the floor any CLI run through tsx pays.
 *
 * The bundle is rebuilt first (scripts/build.mjs, what `make setup` runs): bin/astrid falls back
 * to tsx when a source is newer than dist/, and a row labelled "dist bundle" must measure it.
 * Warm runs follow each other as one-off prompts in a script would, so the daemon's prepared
 * session (kernel/daemon/prepared-session.ts) is part of what they measure; the row "no
 * prepared session" disables it (ASTRID_PREPARE_SESSIONS=0) to show the cost it hides.
 */
import { execFileSync, spawn } from "node:child_process";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { ASTRID_BIN, AstridSandbox, childEnv, REPO } from "../test/fixtures/cli/astrid-cli.js";
import { FAKE_KEY, installFakeAnthropic } from "../test/fixtures/cli/fake-anthropic.js";
import { startAnthropicFake } from "../test/fixtures/providers/anthropic-server.js";
import { type BenchRow, printTable } from "./lib.js";

const WARM_RUNS = 20;
const COLD_RUNS = 5;
const BASELINE_RUNS = 10;

function percentile(sorted: readonly number[], p: number): number {
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i] ?? 0;
}

function row(name: string, ms: number[], goal: string, baseline?: BenchRow): BenchRow {
  const sorted = [...ms].sort((a, b) => a - b);
  const p50us = percentile(sorted, 50) * 1000;
  const delta = baseline ? `${(p50us / baseline.p50us).toFixed(1)}× p50 of ${baseline.name}` : "";
  return {
    name,
    opsPerSec: 1000 / (sorted.reduce((a, b) => a + b, 0) / sorted.length),
    p50us,
    // printTable's second percentile column: here p95 (a handful of runs has no p99).
    p99us: percentile(sorted, 95) * 1000,
    samples: sorted.length,
    vsBaseline: delta,
    goal,
  };
}

/** Milliseconds from spawn to exit of `node …args`. */
function spawnToExit(args: string[]): Promise<number> {
  const t0 = performance.now();
  const child = spawn(process.execPath, args, { cwd: REPO, stdio: "ignore" });
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code !== 0) reject(new Error(`node ${args.join(" ")} exited ${code}`));
      else resolve(performance.now() - t0);
    });
  });
}

export async function main(): Promise<BenchRow[]> {
  const fake = await startAnthropicFake(FAKE_KEY);
  const sb = AstridSandbox.create();
  // The fake records each request once it has been read; that moment is the arrival.
  let onArrival: (() => void) | undefined;
  const record = fake.requests.push.bind(fake.requests);
  fake.requests.push = (...items) => {
    onArrival?.();
    return record(...items);
  };
  const toFirstRequest = async (
    command: readonly string[],
    extraEnv: Record<string, string> = {},
  ): Promise<number> => {
    const arrived = new Promise<number>((resolve) => {
      onArrival = () => resolve(performance.now());
    });
    const t0 = performance.now();
    const [bin, ...pre] = command;
    const child = spawn(bin!, [...pre, "-p", "Hi", "--yes"], {
      cwd: sb.workspace,
      env: childEnv(sb.home, { ANTHROPIC_API_KEY: FAKE_KEY, ...extraEnv }),
      stdio: "ignore",
    });
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    const first = await Promise.race([arrived, exited.then(() => undefined)]);
    const code = await exited;
    if (first === undefined || code !== 0) {
      throw new Error(`astrid -p exited ${code} (no request reached the provider)`);
    }
    return first - t0;
  };
  const statusRun = async (command: readonly string[]): Promise<number> => {
    const [bin, ...pre] = command;
    const t0 = performance.now();
    const child = spawn(bin!, [...pre, "status"], {
      cwd: sb.workspace,
      env: childEnv(sb.home),
      stdio: "ignore",
    });
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    if (code !== 0) throw new Error(`astrid status exited ${code}`);
    return performance.now() - t0;
  };
  try {
    await installFakeAnthropic(sb, fake.url);
    const node = [] as number[];
    const tsx = [] as number[];
    for (let i = 0; i < BASELINE_RUNS; i++) {
      node.push(await spawnToExit(["-e", ""]));
      tsx.push(await spawnToExit(["--import", "tsx", "-e", ""]));
    }
    execFileSync(process.execPath, [path.join(REPO, "scripts", "build.mjs")], { cwd: REPO });
    const modes: [string, string[]][] = [
      ["bin/astrid (dist bundle)", [ASTRID_BIN]],
      [
        "tsx kernel/bin/astrid.ts",
        [
          process.execPath,
          "--import",
          pathToFileURL(path.join(REPO, "node_modules", "tsx", "dist", "loader.mjs")).href,
          path.join(REPO, "kernel", "bin", "astrid.ts"),
        ],
      ],
    ];
    const nodeRow = row('node -e ""', node, "");
    const tsxRow = row('node --import tsx -e ""', tsx, "", nodeRow);
    const rows = [nodeRow, tsxRow];
    for (const [label, command] of modes) {
      const cold = [] as number[];
      for (let i = 0; i < COLD_RUNS; i++) {
        await sb.stop();
        cold.push(await toFirstRequest(command));
      }
      await toFirstRequest(command); // the daemon is up; one more run warms its caches
      const warm = [] as number[];
      for (let i = 0; i < WARM_RUNS; i++) warm.push(await toFirstRequest(command));
      // The CLI's own share of a warm run: start, connect, one status round trip, exit.
      const status = [] as number[];
      for (let i = 0; i < BASELINE_RUNS; i++) status.push(await statusRun(command));
      rows.push(
        row(`${label} status, warm (spawn to exit)`, status, "", nodeRow),
        row(`${label} → provider, warm`, warm, "p50 < 150 ms", nodeRow),
        row(`${label} → provider, cold`, cold, "p50 < 1 s", nodeRow),
      );
      if (label.includes("dist")) {
        // The same warm runs on a daemon that starts every session on demand.
        await sb.stop();
        const off = { ASTRID_PREPARE_SESSIONS: "0" };
        await toFirstRequest(command, off);
        const unprepared = [] as number[];
        for (let i = 0; i < BASELINE_RUNS; i++) unprepared.push(await toFirstRequest(command, off));
        await sb.stop();
        rows.push(row(`${label} → provider, warm, no prepared session`, unprepared, "", nodeRow));
      }
    }
    printTable(
      "CLI: start of `astrid -p` to the first provider request (p99 µs column = p95)",
      rows,
    );
    return rows;
  } finally {
    await sb.dispose();
    await fake.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
