/**
 * Shared bench runner: each suite is a list of cases run in one process by tinybench, and
 * every case names the baseline it is compared against in the same run (pino's habit).
 */
import os from "node:os";
import { Bench } from "tinybench";

export interface BenchCase {
  name: string;
  /** Name of another case in the same suite that this one is compared against. */
  baseline?: string;
  /** Goal shown in the table, e.g. "p50 < 10 µs"; informative, never asserted. */
  goal?: string;
  fn: () => unknown | Promise<unknown>;
  /** Work done per call, when one call does several operations (batched publishes). */
  opsPerCall?: number;
}

export interface BenchRow {
  name: string;
  opsPerSec: number;
  p50us: number;
  p99us: number;
  samples: number;
  vsBaseline: string;
  goal: string;
}

export interface SuiteOptions {
  time?: number;
  warmupTime?: number;
}

export async function runSuite(
  title: string,
  cases: BenchCase[],
  opts: SuiteOptions = {},
): Promise<BenchRow[]> {
  const bench = new Bench({
    time: opts.time ?? 1000,
    warmupTime: opts.warmupTime ?? 200,
  });
  for (const c of cases) bench.add(c.name, c.fn);
  await bench.run();
  const rows: BenchRow[] = [];
  for (const c of cases) {
    const task = bench.getTask(c.name);
    const r = task?.result;
    if (r?.state !== "completed") {
      const why = r && "error" in r ? String((r as { error?: unknown }).error) : "no result";
      throw new Error(`bench case "${c.name}" failed: ${why}`);
    }
    const per = c.opsPerCall ?? 1;
    rows.push({
      name: c.name,
      opsPerSec: r.throughput.mean * per,
      p50us: (r.latency.p50 ?? 0) * 1000,
      p99us: (r.latency.p99 ?? 0) * 1000,
      samples: r.latency.samplesCount,
      vsBaseline: "",
      goal: c.goal ?? "",
    });
  }
  for (const c of cases) {
    if (!c.baseline) continue;
    const row = rows.find((r) => r.name === c.name)!;
    const base = rows.find((r) => r.name === c.baseline);
    if (!base) throw new Error(`bench case "${c.name}": unknown baseline "${c.baseline}"`);
    const delta = (row.p50us / base.p50us - 1) * 100;
    row.vsBaseline = `${delta >= 0 ? "+" : ""}${delta.toFixed(1)}% p50 vs ${base.name}`;
  }
  printTable(title, rows);
  return rows;
}

function fmt(n: number, digits = 2): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(digits)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(digits)}k`;
  return n.toFixed(digits);
}

export function printTable(title: string, rows: BenchRow[]): void {
  const header = ["case", "ops/s", "p50 µs", "p99 µs", "samples", "vs baseline", "goal"];
  const body = rows.map((r) => [
    r.name,
    fmt(r.opsPerSec),
    r.p50us.toFixed(2),
    r.p99us.toFixed(2),
    String(r.samples),
    r.vsBaseline,
    r.goal,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  console.log(`\n### ${title}\n`);
  console.log(line(header));
  console.log(`|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`);
  for (const b of body) console.log(line(b));
}

/** One line naming the machine, for BENCHMARKS.md. */
export function machineLine(): string {
  const cpu = os.cpus()[0]?.model ?? "unknown cpu";
  return `${new Date().toISOString().slice(0, 10)} · ${cpu} × ${os.cpus().length} · ${Math.round(
    os.totalmem() / 2 ** 30,
  )} GiB · Node ${process.version}`;
}
