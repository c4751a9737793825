/**
 * Layer 2, files: decides whether a capsule may read or write a path, against the `fs_read` /
 * `fs_write` entries of its manifest.
 *
 * The decision is made on the path the kernel would actually reach, never on the string the
 * capsule sent: the request is resolved with realpath (kernel semantics, so `link/..` goes to
 * the parent of the link's *target*, which a lexical normalise would get wrong), and only the
 * resolved path is compared with the granted roots and matched against the rule's glob.
 *
 * Decisions taken here, and why:
 * - `..` segments are accepted and resolved by the kernel, not by string handling. A path that
 *   does not exist yet (a write) is the realpath of its deepest existing ancestor plus the
 *   missing segments, and those missing segments must be plain names (no `..`, `.`, or empty
 *   segment): the kernel has not resolved them, so nothing would tell us where they lead.
 * - Relative paths are read relative to the workspace root (never the host's process.cwd(),
 *   which the capsule cannot see and the host may change).
 * - No decoding of any kind: `%2e%2e` is a file literally named `%2e%2e`, and Unicode
 *   look-alikes (U+2024 `․․`, fullwidth letters, NFD vs NFC) are different names. The fs API
 *   takes raw bytes; a gate that decoded would judge a different path from the one opened.
 * - Trailing slashes and dots keep their kernel meaning: `file/` on a regular file fails with
 *   ENOTDIR (denied), `dir/.` is `dir`, `name.` is a different name from `name`.
 * - Only regular files and directories: device files, FIFOs and sockets are refused, since
 *   reading one can block the host, talk to another process or reach hardware.
 * - Fail closed: no rules → everything denied; a realpath error other than ENOENT → denied; a
 *   root (workspace, home, absolute prefix) that cannot be resolved grants nothing.
 * - Hard links are not detected: a hard link inside the workspace *is* a file of the
 *   workspace. Creating one to a file the capsule cannot otherwise reach needs the kernel's
 *   protected_hardlinks to be off; the sandbox layer owns that.
 *
 * TOCTOU: `checkRead`/`checkWrite` answer for the moment they ran. Between the check and an
 * open, anyone able to write inside the root can swap a component for a symlink pointing
 * outside. `checkedOpen` closes that window on Linux: it opens the resolved parent directory,
 * verifies through /proc/self/fd where that directory really is, opens the final name relative
 * to that directory fd with O_NOFOLLOW (so neither the parent nor the name can be swapped
 * underneath), then verifies the opened file's own /proc/self/fd path before handing it out.
 */

import type { Stats } from "node:fs";
import { constants, realpathSync } from "node:fs";
import type { FileHandle } from "node:fs/promises";
import * as fsp from "node:fs/promises";
import picomatch from "picomatch";
import type { FsRule } from "../../manifest/capability-rules.js";
import { parseFsRule } from "../../manifest/capability-rules.js";
import type { Decision } from "../decision.js";
import { allow, deny } from "../decision.js";

export type FsAccess = "read" | "write";

export interface FsGateOptions {
  readonly read: readonly FsRule[];
  readonly write: readonly FsRule[];
  /** The capsule's workspace: root of `cwd://` rules and of relative request paths. */
  readonly workspace: string;
  /** Root of `home://` rules. */
  readonly home: string;
}

/** A rule with its root resolved once (the "cached roots"), ready to match resolved paths. */
interface CompiledRule {
  readonly rule: FsRule;
  /** Realpath of the rule's root, or undefined when it could not be resolved (grants nothing). */
  readonly root: string | undefined;
  readonly label: string;
  /** Matches the path relative to `root`; "" is the root itself. */
  readonly matches: (relative: string) => boolean;
}

/** Where a request leads, before any rule is consulted. */
type Resolution =
  | { readonly ok: true; readonly absolute: string; readonly resolved: string }
  | { readonly ok: false; readonly reason: string };

export type CheckedOpen =
  | { readonly decision: Decision & { allowed: true }; readonly handle: FileHandle }
  | { readonly decision: Decision & { allowed: false }; readonly handle: undefined };

const q = (s: string): string => JSON.stringify(s);

const errorCode = (e: unknown): string =>
  (e as NodeJS.ErrnoException | undefined)?.code ?? String(e);

/**
 * Realpath that tolerates a missing tail: the realpath of the deepest existing ancestor plus
 * the literal missing segments. Used for roots at construction (a rule may name a directory
 * that is created later); throws on anything but ENOENT.
 */
function realpathOrAncestorSync(path: string): string {
  const segments = path.split("/");
  const missing: string[] = [];
  for (;;) {
    const head = segments.join("/") || "/";
    try {
      return joinResolved(realpathSync.native(head), missing);
    } catch (e) {
      if (errorCode(e) !== "ENOENT" || segments.length <= 1) throw e;
      missing.unshift(segments.pop() ?? "");
    }
  }
}

function joinResolved(base: string, missing: readonly string[]): string {
  if (missing.length === 0) return base;
  return `${base === "/" ? "" : base}/${missing.join("/")}`;
}

function resolveRootSync(path: string): string | undefined {
  try {
    return realpathSync.native(path);
  } catch {
    return undefined;
  }
}

function relativeTo(root: string, resolved: string): string | undefined {
  if (resolved === root) return "";
  const prefix = root === "/" ? "/" : `${root}/`;
  return resolved.startsWith(prefix) ? resolved.slice(prefix.length) : undefined;
}

// The parser forbids every glob metacharacter but "*"; these options switch the rest of
// picomatch's syntax off too, so a rule built by hand cannot grant more than it reads as.
const GLOB_OPTIONS = { dot: true, nobrace: true, noextglob: true, nonegate: true } as const;

function compileGlob(glob: string): (relative: string) => boolean {
  if (glob === "") return (relative) => relative === "";
  const isMatch = picomatch(glob, GLOB_OPTIONS);
  // picomatch never matches "" (the root itself); "**" is the one glob meant to include it.
  return (relative) => (relative === "" ? glob === "**" : isMatch(relative));
}

function compileRule(rule: FsRule, workspace: string | undefined, home: string | undefined) {
  // Re-parsing the source guarantees the rule obeys the grammar even if it was built by hand:
  // a glob with "..", "{a,b}" or "!" must not reach the matcher.
  const parsed = parseFsRule(rule.source);
  if (parsed.root !== rule.root || parsed.glob !== rule.glob) {
    throw new Error(
      `fs rule ${q(rule.source)} does not match its parsed form (root ${q(parsed.root)}, glob ${q(parsed.glob)})`,
    );
  }
  if (rule.root === "cwd") {
    return {
      rule,
      root: workspace,
      label: `the workspace root ${q(workspace ?? "?")}`,
      matches: compileGlob(rule.glob),
    };
  }
  if (rule.root === "home") {
    return {
      rule,
      root: home,
      label: `the home root ${q(home ?? "?")}`,
      matches: compileGlob(rule.glob),
    };
  }
  // Absolute rule: its literal prefix is resolved like a request would be, so "/tmp/**" still
  // grants /tmp on a host where /tmp is a symlink (the resolved request never says "/tmp").
  const segments = rule.glob.split("/").slice(1);
  const firstGlob = segments.findIndex((s) => s.includes("*"));
  const literal = firstGlob < 0 ? segments : segments.slice(0, firstGlob);
  const rest = firstGlob < 0 ? [] : segments.slice(firstGlob);
  let root: string | undefined;
  try {
    root = realpathOrAncestorSync(`/${literal.join("/")}`);
  } catch {
    root = undefined;
  }
  return {
    rule,
    root,
    label: `the root ${q(root ?? `/${literal.join("/")}`)}`,
    matches: compileGlob(rest.join("/")),
  };
}

function kindOf(st: Stats): string {
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isFIFO()) return "a FIFO";
  if (st.isSocket()) return "a socket";
  if (st.isSymbolicLink()) return "a symlink";
  return "not a regular file or directory";
}

const PROC_FD = "/proc/self/fd";

export class FsGate {
  readonly #workspace: string | undefined;
  readonly #rules: Record<FsAccess, readonly CompiledRule[]>;

  constructor(options: FsGateOptions) {
    // Roots are resolved once: every later decision compares against these realpaths.
    this.#workspace = resolveRootSync(options.workspace);
    const home = resolveRootSync(options.home);
    this.#rules = {
      read: options.read.map((r) => compileRule(r, this.#workspace, home)),
      write: options.write.map((r) => compileRule(r, this.#workspace, home)),
    };
  }

  checkRead(path: string): Promise<Decision> {
    return this.#check(path, "read", false).then((r) => r.decision);
  }

  checkWrite(path: string): Promise<Decision> {
    return this.#check(path, "write", true).then((r) => r.decision);
  }

  /**
   * Opens `path` only if the gate allows it and the file opened is the one that was checked
   * (see the TOCTOU note above). Flags decide the access checked: O_RDONLY needs fs_read,
   * O_WRONLY / O_CREAT / O_TRUNC / O_APPEND need fs_write, O_RDWR needs both. Only regular
   * files are opened; the handle carries O_NOFOLLOW|O_NONBLOCK (no effect on regular files).
   */
  async checkedOpen(path: string, flags: number, mode = 0o666): Promise<CheckedOpen> {
    const accessMode = flags & 3; // O_ACCMODE
    const writes =
      accessMode !== constants.O_RDONLY ||
      (flags & (constants.O_CREAT | constants.O_TRUNC | constants.O_APPEND)) !== 0;
    const reads = accessMode === constants.O_RDONLY || accessMode === constants.O_RDWR;
    let resolved: string | undefined;
    const rules: string[] = [];
    for (const access of [reads ? "read" : null, writes ? "write" : null] as const) {
      if (access === null) continue;
      const r = await this.#check(path, access, (flags & constants.O_CREAT) !== 0);
      if (!r.decision.allowed) return { decision: r.decision, handle: undefined };
      // Both checks must be about the same file; a swap between them is a move.
      if (resolved !== undefined && resolved !== r.resolved) {
        return this.#refuse(`${q(path)} moved while it was being checked`);
      }
      resolved = r.resolved;
      rules.push(r.decision.rule);
    }
    if (resolved === undefined) return this.#refuse(`${q(path)}: no access requested`);
    return this.#openResolved(path, resolved, flags, mode, rules.join(" + "));
  }

  async #openResolved(
    path: string,
    resolved: string,
    flags: number,
    mode: number,
    rule: string,
  ): Promise<CheckedOpen> {
    const slash = resolved.lastIndexOf("/");
    const parent = resolved.slice(0, slash) || "/";
    const name = resolved.slice(slash + 1);
    if (name === "") return this.#refuse(`${q(path)} resolves to "/", which is not a file`);
    let dir: FileHandle;
    try {
      dir = await fsp.open(parent, constants.O_RDONLY | constants.O_DIRECTORY);
    } catch (e) {
      return this.#refuse(`cannot open the directory of ${q(resolved)} (${errorCode(e)})`);
    }
    let handle: FileHandle | undefined;
    try {
      let dirNow: string;
      try {
        dirNow = await fsp.readlink(`${PROC_FD}/${dir.fd}`);
      } catch (e) {
        // Without /proc the opened file cannot be verified: fail closed rather than trust it.
        return this.#refuse(
          `cannot verify ${q(resolved)} after open: ${PROC_FD} unavailable (${errorCode(e)}); checkedOpen needs Linux /proc`,
        );
      }
      if (dirNow !== parent) {
        return this.#refuse(
          `${q(path)}: directory ${q(parent)} was replaced (now ${q(dirNow)}) between check and open`,
        );
      }
      // Opening through the directory fd pins the parent; O_NOFOLLOW refuses a final
      // component swapped for a symlink; O_NONBLOCK stops a FIFO swapped in from hanging us.
      try {
        handle = await fsp.open(
          `${PROC_FD}/${dir.fd}/${name}`,
          flags | constants.O_NOFOLLOW | constants.O_NONBLOCK,
          mode,
        );
      } catch (e) {
        const code = errorCode(e);
        if (code === "ELOOP") {
          return this.#refuse(`${q(resolved)} became a symlink between check and open`);
        }
        return this.#refuse(`cannot open ${q(resolved)} (${code})`);
      }
      const st = await handle.stat();
      if (!st.isFile()) {
        return this.#refuse(
          `${q(resolved)} is ${kindOf(st)}; checkedOpen opens regular files only`,
        );
      }
      const fileNow = await fsp.readlink(`${PROC_FD}/${handle.fd}`);
      if (fileNow !== resolved) {
        return this.#refuse(`${q(path)} moved to ${q(fileNow)} between check and open`);
      }
      const opened = handle;
      handle = undefined; // ownership passes to the caller
      return { decision: allow("gate", rule) as Decision & { allowed: true }, handle: opened };
    } finally {
      await handle?.close();
      await dir.close();
    }
  }

  #refuse(reason: string): CheckedOpen {
    return { decision: deny("gate", reason) as Decision & { allowed: false }, handle: undefined };
  }

  async #check(
    path: string,
    access: FsAccess,
    mayCreate: boolean,
  ): Promise<{ decision: Decision; resolved?: string }> {
    const rules = this.#rules[access];
    if (rules.length === 0) {
      return { decision: deny("gate", `no fs_${access} rules are declared; ${q(path)} denied`) };
    }
    const resolution = await this.#resolve(path, mayCreate);
    if (!resolution.ok) return { decision: deny("gate", resolution.reason) };
    const { absolute, resolved } = resolution;
    const shown =
      absolute === resolved ? q(absolute) : `${q(absolute)} resolves to ${q(resolved)} which`;
    let insideLabel: string | undefined;
    let granted: FsRule | undefined;
    for (const r of rules) {
      if (r.root === undefined) continue;
      const rel = relativeTo(r.root, resolved);
      if (rel === undefined) continue;
      insideLabel ??= r.label;
      if (r.matches(rel)) {
        granted = r.rule;
        break;
      }
    }
    if (granted === undefined) {
      if (insideLabel !== undefined) {
        return {
          decision: deny(
            "gate",
            `${shown} is inside ${insideLabel} but matches no fs_${access} rule`,
          ),
        };
      }
      const labels = [...new Set(rules.filter((r) => r.root !== undefined).map((r) => r.label))];
      const where = labels.length === 1 ? labels[0] : `every fs_${access} root`;
      const outside =
        absolute === resolved
          ? `${q(absolute)} is outside ${where}`
          : `${q(absolute)} resolves to ${q(resolved)} outside ${where}`;
      return { decision: deny("gate", outside) };
    }
    // Type check last, on the resolved path (which has no symlinks left, so lstat is exact).
    try {
      const st = await fsp.lstat(resolved);
      if (!st.isFile() && !st.isDirectory()) {
        return {
          decision: deny(
            "gate",
            `${shown} is ${kindOf(st)}; only regular files and directories are allowed`,
          ),
        };
      }
    } catch (e) {
      if (errorCode(e) !== "ENOENT" || !mayCreate) {
        return { decision: deny("gate", `cannot stat ${q(resolved)} (${errorCode(e)})`) };
      }
    }
    return { decision: allow("gate", granted.source), resolved };
  }

  async #resolve(path: string, mayCreate: boolean): Promise<Resolution> {
    if (typeof path !== "string" || path.length === 0) {
      return { ok: false, reason: "expected a non-empty path" };
    }
    // NUL ends the string at the syscall: "a.txt\0/../../etc" would be judged whole and
    // opened truncated.
    if (path.includes("\u0000")) return { ok: false, reason: `${q(path)} contains a NUL byte` };
    let absolute = path;
    if (!path.startsWith("/")) {
      if (this.#workspace === undefined) {
        return {
          ok: false,
          reason: `relative path ${q(path)} is read against the workspace root, which cannot be resolved`,
        };
      }
      // Concatenated, not path.resolve()d: a lexical normalise would undo "link/.." wrongly.
      absolute = `${this.#workspace === "/" ? "" : this.#workspace}/${path}`;
    }
    try {
      return { ok: true, absolute, resolved: await fsp.realpath(absolute) };
    } catch (e) {
      const code = errorCode(e);
      if (code !== "ENOENT")
        return { ok: false, reason: `cannot resolve ${q(absolute)} (${code})` };
      if (!mayCreate) return { ok: false, reason: `${q(absolute)} does not exist` };
    }
    // A write may create the final name (or several): resolve what exists, append the rest.
    const segments = absolute.split("/");
    const missing: string[] = [];
    let ancestor: string | undefined;
    while (segments.length > 1) {
      missing.unshift(segments.pop() ?? "");
      try {
        ancestor = await fsp.realpath(segments.join("/") || "/");
        break;
      } catch (e) {
        const code = errorCode(e);
        if (code !== "ENOENT") {
          return { ok: false, reason: `cannot resolve ${q(absolute)} (${code})` };
        }
      }
    }
    if (ancestor === undefined) return { ok: false, reason: `cannot resolve ${q(absolute)}` };
    const bad = missing.find((s) => s === "" || s === "." || s === "..");
    if (bad !== undefined) {
      return {
        ok: false,
        reason: `${q(absolute)} does not exist and its missing part ${q(missing.join("/"))} is not plain names (${bad === "" ? "empty segment or trailing /" : q(bad)})`,
      };
    }
    // The first missing name exists to lstat but not to realpath: a dangling symlink. Writing
    // through it would create its target, wherever that is.
    const first = joinResolved(ancestor, missing.slice(0, 1));
    try {
      await fsp.lstat(first);
      return {
        ok: false,
        reason: `${q(absolute)} passes through ${q(first)}, a symlink whose target does not exist`,
      };
    } catch (e) {
      if (errorCode(e) !== "ENOENT") {
        return { ok: false, reason: `cannot stat ${q(first)} (${errorCode(e)})` };
      }
    }
    return { ok: true, absolute, resolved: joinResolved(ancestor, missing) };
  }
}
