/**
 * The `astrid` commands that need no daemon: init, capsule install/list/remove/tree and audit
 * verify. Each writes its answer to `out` and returns the exit code.
 */
import { createPublicKey } from "node:crypto";
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { AuditKeyring, verifyChain } from "../../core/audit/index.js";
import { homeLayout, initHome, readHomeKey } from "../config/home.js";
import { loadEffectiveConfig } from "../config/resolve.js";
import { installRoot } from "../install-root.js";
import { CapsuleStore } from "../store.js";
import { sessionBindings } from "../wiring.js";
import type { Command } from "./args.js";

export interface Io {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
}

/** The default distribution shipped in this repository's capsules/ folder. */
export const DISTRIBUTION_DIR = path.join(installRoot(), "capsules");

/** The key id the local kernel signs audit chains with (also used by the daemon). */
export const KERNEL_KEY_ID = "kernel";

export async function runLocal(cmd: Command, home: string, io: Io): Promise<number> {
  const layout = homeLayout(home);
  const store = new CapsuleStore(layout.capsules);
  switch (cmd.kind) {
    case "init": {
      const report = await initHome(home);
      for (const c of report.created) io.out(`created ${c}`);
      for (const t of report.tightened) io.out(`tightened permissions of ${t}`);
      let installed = 0;
      for (const dir of await distribution()) {
        const e = await store.install(dir, path.join(home, "build"));
        io.out(`installed ${e.name}@${e.version} ${e.digest.slice(0, 19)}…`);
        installed++;
      }
      if (installed === 0) io.out("no default capsules found to install");
      io.out(`astrid is ready in ${home}`);
      return 0;
    }
    case "capsule.install": {
      const e = await store.install(path.resolve(cmd.source), path.join(home, "build"));
      io.out(`installed ${e.name}@${e.version} ${e.digest}`);
      return 0;
    }
    case "capsule.list": {
      const all = await store.list();
      if (all.length === 0) io.out("no capsules installed (run `astrid init`)");
      for (const e of all) {
        io.out(
          `${e.name.padEnd(24)} ${e.version.padEnd(10)} ${e.manifest.engine.type.padEnd(7)} ${e.digest.slice(0, 19)}…`,
        );
      }
      return 0;
    }
    case "capsule.remove": {
      for (const r of await store.remove(cmd.name, cmd.version)) io.out(`removed ${r}`);
      return 0;
    }
    case "capsule.tree": {
      const { config } = await loadEffectiveConfig(home);
      const latest = await store.latest();
      const plan = await store.tree(
        sessionBindings(
          config.bindings,
          config.defaults.provider,
          latest.map((e) => e.manifest),
        ),
      );
      io.out(`start order: ${plan.order.join(" → ") || "(nothing installed)"}`);
      for (const b of plan.bindings) {
        io.out(`  ${b.importer} ─ ${b.interface} ${b.range} → ${b.exporter}@${b.version}`);
      }
      return 0;
    }
    case "audit.verify":
      return verifyAudits(cmd.path ?? layout.sessions, layout.kernelKey, io);
    default:
      throw new Error(`${cmd.kind} is not a local command`);
  }
}

async function distribution(): Promise<string[]> {
  try {
    const names = await readdir(DISTRIBUTION_DIR);
    const dirs: string[] = [];
    for (const n of names.sort()) {
      const d = path.join(DISTRIBUTION_DIR, n);
      if ((await stat(d)).isDirectory() && (await exists(path.join(d, "Capsule.toml"))))
        dirs.push(d);
    }
    return dirs;
  } catch {
    return [];
  }
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** Every audit chain under `root` (a chain is a folder holding segment-*.jsonl files). */
async function findChains(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (dir: string, depth: number) => {
    const entries = await readdir(dir, { withFileTypes: true });
    if (entries.some((e) => e.isFile() && /^segment-\d+\.jsonl$/.test(e.name))) {
      found.push(dir);
      return;
    }
    if (depth > 6) return;
    for (const e of entries) if (e.isDirectory()) await walk(path.join(dir, e.name), depth + 1);
  };
  await walk(root, 0);
  return found.sort();
}

async function verifyAudits(root: string, kernelKey: string, io: Io): Promise<number> {
  if (!(await exists(root))) {
    io.err(`astrid audit verify: ${root} does not exist`);
    return 1;
  }
  const keyring = new AuditKeyring([
    [KERNEL_KEY_ID, createPublicKey(await readHomeKey(kernelKey))],
  ]);
  const chains = await findChains(root);
  if (chains.length === 0) {
    io.err(`astrid audit verify: no audit chain under ${root}`);
    return 1;
  }
  let broken = 0;
  for (const dir of chains) {
    const v = await verifyChain(dir, keyring);
    if (v.ok) {
      io.out(
        `ok      ${dir}: ${v.entries} entries, ${v.segments} segment(s), head ${v.lastHash.slice(0, 16)}…`,
      );
    } else {
      broken++;
      const e = v.error;
      io.out(`BROKEN  ${dir}: ${e.kind} at ${e.file}:${e.line} (seq ${e.seq}): ${e.message}`);
    }
  }
  return broken === 0 ? 0 : 1;
}
