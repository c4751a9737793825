/**
 * Manifest gate (security layer 2): cost of one decision per concern, each next to the
 * primitive it is built on, measured in the same run — a bare realpath for the fs gate (its
 * floor: every fs decision does one) and a bare picomatch match for glob matching.
 */
import * as fs from "node:fs";
import * as os from "node:os";
import picomatch from "picomatch";
import { parseFsRule, parseNetRule, parseProcessRule } from "../core/manifest/capability-rules.js";
import { FsGate } from "../core/security/gate/fs.js";
import { NetGate } from "../core/security/gate/net.js";
import { ProcessGate } from "../core/security/gate/process.js";
import { runSuite } from "./lib.js";

export async function main(): Promise<void> {
  const base = fs.realpathSync(fs.mkdtempSync(`${os.tmpdir()}/astrid-bench-gate-`));
  try {
    fs.mkdirSync(`${base}/ws/src/lib`, { recursive: true });
    fs.writeFileSync(`${base}/ws/src/lib/a.ts`, "a");
    fs.symlinkSync("/etc", `${base}/ws/etc`);
    const fsGate = new FsGate({
      read: ["cwd://src/**", "cwd://README.md"].map(parseFsRule),
      write: [],
      workspace: `${base}/ws`,
      home: os.homedir(),
    });
    const netGate = new NetGate({
      connect: ["api.example.com", "*.cdn.example.com", "10.1.0.0/16:5432"].map(parseNetRule),
    });
    const procGate = new ProcessGate(["git status", "git log **"].map(parseProcessRule));
    const isMatch = picomatch("src/**", { dot: true });
    const allowedPath = `${base}/ws/src/lib/a.ts`;

    // Sanity: the cases measure the branch they are named after.
    const sane = [
      (await fsGate.checkRead(allowedPath)).allowed,
      !(await fsGate.checkRead("etc/passwd")).allowed,
      netGate.checkUrl("https://img.cdn.example.com/x.png").allowed,
      procGate.checkSpawn("git", ["log", "--oneline"]).allowed,
    ];
    if (sane.includes(false)) throw new Error(`gate bench sanity failed: ${JSON.stringify(sane)}`);

    await runSuite("Manifest gate (layer 2)", [
      { name: "fs.realpathSync (baseline)", fn: () => fs.realpathSync(allowedPath) },
      { name: "fs.promises.realpath (baseline)", fn: () => fs.promises.realpath(allowedPath) },
      { name: "picomatch match (baseline)", fn: () => isMatch("src/lib/a.ts") },
      {
        name: "FsGate.checkRead allowed",
        baseline: "fs.promises.realpath (baseline)",
        goal: "p50 < 50 µs",
        fn: () => fsGate.checkRead(allowedPath),
      },
      {
        name: "FsGate.checkRead denied (symlink out)",
        baseline: "fs.promises.realpath (baseline)",
        fn: () => fsGate.checkRead("etc/passwd"),
      },
      {
        name: "NetGate.checkUrl wildcard",
        baseline: "picomatch match (baseline)",
        goal: "p50 < 10 µs",
        fn: () => netGate.checkUrl("https://img.cdn.example.com/x.png"),
      },
      {
        name: "NetGate.checkConnect private listed",
        baseline: "picomatch match (baseline)",
        fn: () =>
          netGate.checkConnect({ scheme: "tcp", host: "10.1.2.3", port: 5432, resolved: [] }),
      },
      {
        name: "ProcessGate.checkSpawn",
        baseline: "picomatch match (baseline)",
        goal: "p50 < 2 µs",
        fn: () => procGate.checkSpawn("git", ["log", "--oneline", "-n", "5"]),
      },
    ]);
  } finally {
    fs.rmSync(base, { recursive: true, force: true });
  }
}
