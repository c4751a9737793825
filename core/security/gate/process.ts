/**
 * Layer 2, host processes: decides whether a capsule may have the host spawn a command, against
 * the `host_process` entries of its manifest.
 *
 * The host spawns with `shell: false` and an argv array (never a command string): no word
 * splitting, globbing, `;`, `$()` or redirection can happen after this check, so matching argv
 * exactly is matching what runs. A rule is literal: the command as written (a bare name or an
 * absolute path — `git` does not grant `/usr/bin/git`, nor the reverse), then one pattern per
 * argument: a literal, `*` (exactly one argument, any value, flags included) or a final `**`
 * (any remaining arguments).
 *
 * A bare name is resolved by the host on a fixed trusted PATH given at construction, never the
 * capsule's or the host's environment PATH, and never through the workspace: a capsule that can
 * write files must not be able to plant the `git` that the host then runs for it.
 */

import { constants, realpathSync } from "node:fs";
import * as fsp from "node:fs/promises";
import type { ProcessRule } from "../../manifest/capability-rules.js";
import type { Decision } from "../decision.js";
import { allow, deny } from "../decision.js";

export const DEFAULT_TRUSTED_PATH: readonly string[] = ["/usr/local/bin", "/usr/bin", "/bin"];

export interface ProcessGateOptions {
  /** Directories searched, in order, for bare command names. */
  readonly trustedPath?: readonly string[];
  /** The capsule's workspace; nothing resolved into it is ever run. */
  readonly workspace?: string;
}

export interface ResolvedExecutable {
  readonly decision: Decision;
  /** The file to spawn (a trusted PATH entry joined with the name, or the absolute command). */
  readonly path: string | undefined;
  /** Its realpath, for audit and for pinning. */
  readonly realpath: string | undefined;
}

const q = (s: string): string => JSON.stringify(s);

function insideDir(dir: string, path: string): boolean {
  return path === dir || path.startsWith(dir === "/" ? "/" : `${dir}/`);
}

/** Do `args` satisfy the rule's argument patterns? */
export function argsMatch(patterns: ProcessRule["args"], args: readonly string[]): boolean {
  for (let i = 0; i < patterns.length; i++) {
    const p = patterns[i];
    if (p === undefined) return false;
    if (p.kind === "rest") return true;
    const a = args[i];
    if (a === undefined) return false;
    if (p.kind === "literal" && p.value !== a) return false;
  }
  return args.length === patterns.length;
}

export class ProcessGate {
  readonly #rules: readonly ProcessRule[];
  readonly #trustedPath: readonly string[];
  readonly #workspace: string | undefined;

  constructor(rules: readonly ProcessRule[], options: ProcessGateOptions = {}) {
    this.#rules = rules;
    this.#workspace = options.workspace === undefined ? undefined : realOrSelf(options.workspace);
    const path = options.trustedPath ?? DEFAULT_TRUSTED_PATH;
    for (const dir of path) {
      if (!dir.startsWith("/") || dir.split("/").some((s) => s === ".." || s === ".")) {
        throw new Error(
          `trusted PATH entry ${q(dir)} must be an absolute path without "." or ".."`,
        );
      }
      if (this.#workspace !== undefined && insideDir(this.#workspace, realOrSelf(dir))) {
        throw new Error(
          `trusted PATH entry ${q(dir)} is inside the workspace ${q(this.#workspace)}`,
        );
      }
    }
    this.#trustedPath = path;
  }

  /** The directories a bare command name is looked up in, in order. */
  trustedPath(): readonly string[] {
    return this.#trustedPath;
  }

  checkSpawn(command: string, args: readonly string[]): Decision {
    if (typeof command !== "string" || command.length === 0) {
      return deny("gate", "expected a non-empty command");
    }
    if (!Array.isArray(args) || args.some((a) => typeof a !== "string")) {
      return deny("gate", `arguments of ${q(command)} must be an array of strings`);
    }
    // NUL ends a C string: the argument the process sees would be shorter than the one judged.
    if (command.includes("\u0000"))
      return deny("gate", `command ${q(command)} contains a NUL byte`);
    const nul = args.findIndex((a) => a.includes("\u0000"));
    if (nul >= 0) return deny("gate", `argument ${nul} ${q(args[nul] ?? "")} contains a NUL byte`);
    if (command.includes("/") && !command.startsWith("/")) {
      return deny(
        "gate",
        `command ${q(command)} is a relative path; it would resolve against the spawn directory`,
      );
    }
    const forCommand = this.#rules.filter((r) => r.command === command);
    const shown = `${command} ${JSON.stringify(args)}`;
    if (forCommand.length === 0) {
      return deny("gate", `command ${q(command)} matches no host_process rule`);
    }
    const rule = forCommand.find((r) => argsMatch(r.args, args));
    if (!rule) {
      const allowed = forCommand.map((r) => q(r.source)).join(", ");
      return deny(
        "gate",
        `${shown} matches no host_process rule for ${q(command)} (rules: ${allowed})`,
      );
    }
    return allow("gate", rule.source);
  }

  /**
   * Where the host would find `command`: an absolute command as is, a bare name on the trusted
   * PATH. Refused when the file found (after symlinks) lies in the workspace, is not a regular
   * executable file, or is not found at all.
   */
  async resolveExecutable(command: string): Promise<ResolvedExecutable> {
    const refuse = (reason: string): ResolvedExecutable => ({
      decision: deny("gate", reason),
      path: undefined,
      realpath: undefined,
    });
    if (typeof command !== "string" || command.length === 0 || command.includes("\u0000")) {
      return refuse(`expected a command name without NUL, got ${q(String(command))}`);
    }
    if (command.includes("/") && !command.startsWith("/")) {
      return refuse(`command ${q(command)} is a relative path`);
    }
    const candidates = command.startsWith("/")
      ? [command]
      : this.#trustedPath.map((d) => `${d === "/" ? "" : d}/${command}`);
    for (const candidate of candidates) {
      let real: string;
      try {
        real = await fsp.realpath(candidate);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "ENOENT") continue;
        return refuse(`cannot resolve ${q(candidate)} (${(e as NodeJS.ErrnoException).code})`);
      }
      // A trusted directory holding a link into the workspace is tampering: refuse, do not
      // fall through to the next directory.
      if (this.#workspace !== undefined && insideDir(this.#workspace, real)) {
        return refuse(`${q(candidate)} resolves to ${q(real)}, inside the workspace`);
      }
      const st = await fsp.stat(real);
      if (!st.isFile()) return refuse(`${q(candidate)} is not a regular file`);
      try {
        await fsp.access(real, constants.X_OK);
      } catch {
        return refuse(`${q(candidate)} is not executable`);
      }
      const via = command.startsWith("/") ? "absolute command" : "trusted PATH";
      return { decision: allow("gate", `${via} ${q(candidate)}`), path: candidate, realpath: real };
    }
    return refuse(
      command.startsWith("/")
        ? `${q(command)} does not exist`
        : `command ${q(command)} was not found on the trusted PATH (${this.#trustedPath.join(":")})`,
    );
  }
}

function realOrSelf(path: string): string {
  try {
    return realpathSync.native(path);
  } catch {
    return path;
  }
}
