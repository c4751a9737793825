/**
 * `make bench` entry: runs every suite given on the command line (or all), each in this
 * process, printing one table per suite. Usage: tsx bench/run.ts [bus] [security] ...
 */
import { machineLine } from "./lib.js";

const suites: Record<string, () => Promise<unknown>> = {
  bus: () => import("./bus.js").then((m) => m.main()),
};

const wanted = process.argv.slice(2);
const names = wanted.length > 0 ? wanted : Object.keys(suites);
console.log(`# Astrid benchmarks — ${machineLine()}`);
for (const name of names) {
  const run = suites[name];
  if (!run) {
    console.error(`unknown suite "${name}"; known: ${Object.keys(suites).join(", ")}`);
    process.exit(2);
  }
  await run();
}
