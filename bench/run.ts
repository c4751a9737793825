/**
 * `make bench` entry: runs every suite named on the command line (or all), in this process,
 * printing one table per suite with each figure beside its baseline.
 * Usage: tsx bench/run.ts [bus] [security] [engines] or single suites (see `suites` below)
 */
import { machineLine } from "./lib.js";

type Suite = () => Promise<unknown>;
const suite =
  (load: () => Promise<{ main: () => Promise<unknown> }>): Suite =>
  () =>
    load().then((m) => m.main());

const suites: Record<string, Suite> = {
  bus: suite(() => import("./bus.js")),
  tokens: suite(() => import("./tokens.js")),
  gate: suite(() => import("./gate.js")),
  budget: suite(() => import("./budget.js")),
  audit: suite(() => import("./audit.js")),
  wasm: suite(() => import("./wasm.js")),
  mcp: suite(() => import("./mcp.js")),
  sidecar: suite(() => import("./sidecar.js")),
  cli: suite(() => import("./cli.js")),
  capsules: suite(() => import("./capsules.js")),
  operator: suite(() => import("./operator.js")),
};
// `security` is issue 3's set: every layer plus the audit chain.
const groups: Record<string, string[]> = {
  security: ["tokens", "gate", "budget", "audit"],
  // issue 4's set: the engines and the sidecar around them
  engines: ["wasm", "mcp", "sidecar"],
};

const wanted = process.argv.slice(2);
const names = (wanted.length > 0 ? wanted : Object.keys(suites)).flatMap((n) => groups[n] ?? [n]);
const unknown = names.filter((n) => !suites[n]);
if (unknown.length > 0) {
  console.error(
    `unknown suite(s) ${unknown.join(", ")}; known: ${[...Object.keys(suites), ...Object.keys(groups)].join(", ")}`,
  );
  process.exit(2);
}
console.log(`# Astrid benchmarks — ${machineLine()}`);
for (const name of names) await suites[name]!();
