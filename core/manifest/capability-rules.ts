/**
 * Structured forms of the `[capabilities]` entries of Capsule.toml. The manifest parser turns
 * each string into one of these (refusing bad syntax with file/line/field); the manifest gate
 * in core/security/gate decides requests against them. Keeping the grammar in one place means
 * the docs, the parser and the gate cannot disagree on what an entry grants.
 *
 * Grammar (documented in docs/capsule-toml.md):
 *   fs_read / fs_write:  "cwd://<glob>" (workspace-relative), "home://<glob>", "/<abs glob>"
 *                        glob syntax: "*" one path segment part, "**" any depth; no "..",
 *                        no NUL, no backslash.
 *   net / net_bind:      "host", "host:port", "scheme://host[:port]", "*.domain[:port]",
 *                        IP literal ("10.0.0.5:8080", "[::1]:9000") or CIDR ("10.0.0.0/8:5432").
 *                        Bare "host" means https on 443 only. Port "*" means any port.
 *   host_process:        "<command> <arg pattern> ...": command is a bare name (resolved by the
 *                        host on its own trusted PATH) or an absolute path; each further token is
 *                        a literal argument, "*" (exactly one argument) or, last only, "**"
 *                        (zero or more remaining arguments). "git status" allows exactly
 *                        `git status`; "git log **" allows `git log` with any arguments.
 *   ipc_publish / ipc_subscribe: NATS subject patterns (core/bus/subject.ts).
 *   kv:                  bucket names ([a-z0-9_-]+), scoped to the capsule.
 */

import { isIP } from "node:net";

export type FsRoot = "cwd" | "home" | "absolute";

export interface FsRule {
  /** The entry exactly as written in the manifest, for audit reasons. */
  readonly source: string;
  readonly root: FsRoot;
  /** Glob relative to the root (for "absolute": the absolute glob, starting with "/"). */
  readonly glob: string;
}

export type NetScheme = "http" | "https" | "tcp" | "ws" | "wss";

export type NetHost =
  | { readonly kind: "name"; readonly name: string } // lower-cased DNS name
  | { readonly kind: "wildcard"; readonly suffix: string } // "*.example.com" → ".example.com"
  | { readonly kind: "ip"; readonly address: string } // normalised IPv4/IPv6 literal
  | { readonly kind: "cidr"; readonly network: string; readonly prefix: number };

export interface NetRule {
  readonly source: string;
  /** undefined = any scheme on the given port. */
  readonly scheme: NetScheme | undefined;
  readonly host: NetHost;
  /** "any" only when written as ":*". */
  readonly port: number | "any";
}

export type ArgPattern =
  | { readonly kind: "literal"; readonly value: string }
  | { readonly kind: "one" } // "*"
  | { readonly kind: "rest" }; // "**", last only

export interface ProcessRule {
  readonly source: string;
  readonly command: string;
  readonly args: readonly ArgPattern[];
}

// ---------------------------------------------------------------------------------------------
// Parsers. Each refuses anything outside the grammar above rather than guessing: an entry the
// gate would read differently from its author is a hole, so ambiguity is a syntax error.
// ---------------------------------------------------------------------------------------------

export class RuleSyntaxError extends Error {
  override readonly name = "RuleSyntaxError";
}

const q = (s: string): string => JSON.stringify(s);

// Control characters would make an entry unprintable in audit records and can hide text.
const CONTROL = /[\u0000-\u001f\u007f]/;

// Glob metacharacters other than "*" are refused so that no matcher (picomatch or hand-written)
// can read an entry as granting more than the two documented wildcards.
const FS_FORBIDDEN_GLOB = /[?[\]{}()!|]/;

export function parseFsRule(entry: string): FsRule {
  const expected = `expected "cwd://<glob>", "home://<glob>" or an absolute "/<glob>"`;
  if (typeof entry !== "string" || entry.length === 0) {
    throw new RuleSyntaxError(`${expected}, got an empty entry`);
  }
  if (entry.includes("\u0000")) throw new RuleSyntaxError(`fs path ${q(entry)} contains NUL`);
  if (CONTROL.test(entry)) {
    throw new RuleSyntaxError(`fs path ${q(entry)} contains a control character`);
  }
  // Backslash is a separator on Windows and an escape in most glob engines: either reading
  // could widen the rule, so it is refused outright.
  if (entry.includes("\\")) {
    throw new RuleSyntaxError(`fs path ${q(entry)} contains a backslash; use "/" as separator`);
  }
  let root: FsRoot;
  let rest: string;
  let glob: string;
  if (entry.startsWith("cwd://")) {
    root = "cwd";
    rest = entry.slice("cwd://".length);
    glob = rest;
  } else if (entry.startsWith("home://")) {
    root = "home";
    rest = entry.slice("home://".length);
    glob = rest;
  } else if (entry.startsWith("/")) {
    root = "absolute";
    rest = entry.slice(1);
    glob = entry;
  } else {
    throw new RuleSyntaxError(`${expected}, got ${q(entry)}`);
  }
  if (rest.length === 0) {
    throw new RuleSyntaxError(`fs path ${q(entry)} has an empty glob; use "**" for everything`);
  }
  if (FS_FORBIDDEN_GLOB.test(rest)) {
    throw new RuleSyntaxError(
      `fs path ${q(entry)} uses glob syntax other than "*" and "**"; expected only those two wildcards`,
    );
  }
  for (const segment of rest.split("/")) {
    if (segment === "") {
      throw new RuleSyntaxError(
        `fs path ${q(entry)} has an empty segment (leading, trailing or "//")`,
      );
    }
    // ".." is how a rule escapes its root; "." is refused too so every path has one spelling.
    if (segment === ".." || segment === ".") {
      throw new RuleSyntaxError(`fs path ${q(entry)} contains a ${q(segment)} segment`);
    }
    if (segment.includes("**") && segment !== "**") {
      throw new RuleSyntaxError(
        `fs path ${q(entry)}: "**" must be a whole path segment, got ${q(segment)}`,
      );
    }
  }
  return { source: entry, root, glob };
}

const NET_SCHEMES: readonly NetScheme[] = ["http", "https", "tcp", "ws", "wss"];
const DEFAULT_PORT: Record<NetScheme, number | undefined> = {
  http: 80,
  https: 443,
  ws: 80,
  wss: 443,
  tcp: undefined,
};
const NET_EXPECTED = `expected "host", "host:port", "scheme://host[:port]" or a CIDR`;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function parsePort(entry: string, text: string): number | "any" {
  if (text === "*") return "any";
  if (!/^[1-9][0-9]{0,4}$/.test(text) || Number(text) > 65535) {
    throw new RuleSyntaxError(`port must be 1-65535 or "*", got ${q(text)} in ${q(entry)}`);
  }
  return Number(text);
}

function assertDnsName(entry: string, name: string): void {
  const labels = name.split(".");
  // An all-numeric last label makes URL parsers read the name as an IPv4 number
  // ("10.1" → 10.0.0.1), so such a "name" would silently grant an address.
  const last = labels[labels.length - 1] ?? "";
  if (
    name.length > 253 ||
    !labels.every((l) => DNS_LABEL.test(l)) ||
    /^[0-9]+$/.test(last) ||
    /^0x/.test(last)
  ) {
    throw new RuleSyntaxError(
      `${NET_EXPECTED}, got ${q(entry)} (${q(name)} is not a valid host name)`,
    );
  }
}

/** Canonical text of an IP literal (IPv6 compressed, lower case) via the WHATWG URL parser. */
function normaliseIp(address: string): string {
  const host = new URL(isIP(address) === 6 ? `http://[${address}]/` : `http://${address}/`)
    .hostname;
  return host.startsWith("[") ? host.slice(1, -1) : host;
}

function ipBytes(address: string): number[] {
  if (isIP(address) === 4) return address.split(".").map(Number);
  const [head = "", tail] = address.split("::");
  const words = (s: string): number[] => (s === "" ? [] : s.split(":").map((w) => parseInt(w, 16)));
  const h = words(head);
  const t = tail === undefined ? [] : words(tail);
  const all = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  return all.flatMap((w) => [w >> 8, w & 0xff]);
}

function parseNetHost(entry: string, text: string): NetHost {
  if (text.length === 0) throw new RuleSyntaxError(`${NET_EXPECTED}, got ${q(entry)} (empty host)`);
  const slash = text.indexOf("/");
  if (slash >= 0) {
    let network = text.slice(0, slash);
    const prefixText = text.slice(slash + 1);
    if (network.startsWith("[") && network.endsWith("]")) network = network.slice(1, -1);
    const family = isIP(network);
    if (family === 0 || network.includes("%")) {
      throw new RuleSyntaxError(
        `${NET_EXPECTED}, got ${q(entry)} (${q(network)} is not an IP network)`,
      );
    }
    const max = family === 4 ? 32 : 128;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText) || Number(prefixText) > max) {
      throw new RuleSyntaxError(
        `CIDR prefix must be 0-${max}, got ${q(prefixText)} in ${q(entry)}`,
      );
    }
    const prefix = Number(prefixText);
    const normal = normaliseIp(network);
    // Host bits set ("10.0.0.1/8") usually means the author misread the mask; refusing it keeps
    // the granted range exactly what is written.
    const bytes = ipBytes(normal);
    bytes.forEach((b, i) => {
      const keep = Math.max(0, Math.min(8, prefix - i * 8));
      if ((b & (0xff >> keep)) !== 0) {
        throw new RuleSyntaxError(
          `CIDR ${q(text)} has host bits set beyond /${prefix} in ${q(entry)}`,
        );
      }
    });
    return { kind: "cidr", network: normal, prefix };
  }
  if (text.startsWith("[") && text.endsWith("]")) {
    const inner = text.slice(1, -1);
    if (isIP(inner) !== 6 || inner.includes("%")) {
      throw new RuleSyntaxError(
        `${NET_EXPECTED}, got ${q(entry)} (${q(inner)} is not an IPv6 address)`,
      );
    }
    return { kind: "ip", address: normaliseIp(inner) };
  }
  const family = isIP(text);
  if (family === 4 || (family === 6 && !text.includes("%"))) {
    return { kind: "ip", address: normaliseIp(text) };
  }
  if (text.startsWith("*.")) {
    const suffix = text.slice(2).toLowerCase();
    assertDnsName(entry, suffix);
    return { kind: "wildcard", suffix: `.${suffix}` };
  }
  const name = text.toLowerCase();
  assertDnsName(entry, name);
  return { kind: "name", name };
}

export function parseNetRule(entry: string): NetRule {
  if (typeof entry !== "string" || entry.length === 0) {
    throw new RuleSyntaxError(`${NET_EXPECTED}, got an empty entry`);
  }
  if (CONTROL.test(entry) || /\s/.test(entry)) {
    throw new RuleSyntaxError(
      `${NET_EXPECTED}, got ${q(entry)} (contains whitespace or a control character)`,
    );
  }
  let scheme: NetScheme | undefined;
  let rest = entry;
  const sep = entry.indexOf("://");
  if (sep >= 0) {
    const s = entry.slice(0, sep).toLowerCase();
    if (!(NET_SCHEMES as readonly string[]).includes(s)) {
      throw new RuleSyntaxError(
        `scheme must be one of ${NET_SCHEMES.join(", ")}, got ${q(entry.slice(0, sep))} in ${q(entry)}`,
      );
    }
    scheme = s as NetScheme;
    rest = entry.slice(sep + 3);
  }
  // Paths, credentials and queries are not part of the grammar; "a.com/x" would otherwise
  // be taken for a CIDR-like host and "u@h" could smuggle a second host.
  if (/[@?#]/.test(rest) || (rest.includes("/") && !/^[0-9a-fA-F:.[\]]+\/[0-9]+/.test(rest))) {
    throw new RuleSyntaxError(`${NET_EXPECTED}, got ${q(entry)}`);
  }
  // Bare IPv6 literal (no brackets, no port): "::1", "fd00::/8".
  const bareV6 = rest.split("/")[0] ?? "";
  let hostText: string;
  let portText: string | undefined;
  if (isIP(bareV6) === 6) {
    hostText = rest;
  } else if (rest.startsWith("[")) {
    const close = rest.indexOf("]");
    if (close < 0) throw new RuleSyntaxError(`${NET_EXPECTED}, got ${q(entry)} (unclosed "[")`);
    const afterBracket = rest.slice(close + 1);
    const m = /^(\/[0-9]*)?(?::(.*))?$/.exec(afterBracket);
    if (!m) throw new RuleSyntaxError(`${NET_EXPECTED}, got ${q(entry)}`);
    hostText = rest.slice(0, close + 1) + (m[1] ?? "");
    portText = m[2];
  } else {
    const colon = rest.lastIndexOf(":");
    if (colon >= 0) {
      hostText = rest.slice(0, colon);
      portText = rest.slice(colon + 1);
    } else {
      hostText = rest;
    }
  }
  if (
    hostText.includes(":") &&
    !hostText.startsWith("[") &&
    isIP(hostText.split("/")[0] ?? "") !== 6
  ) {
    throw new RuleSyntaxError(`${NET_EXPECTED}, got ${q(entry)}`);
  }
  const host = parseNetHost(entry, hostText);
  let port: number | "any";
  if (portText !== undefined) {
    port = parsePort(entry, portText);
  } else if (scheme === undefined) {
    // A bare host grants the common case only: TLS on 443.
    scheme = "https";
    port = 443;
  } else {
    const d = DEFAULT_PORT[scheme];
    if (d === undefined) {
      throw new RuleSyntaxError(
        `scheme "${scheme}" has no default port; write "${scheme}://host:port" in ${q(entry)}`,
      );
    }
    port = d;
  }
  return { source: entry, scheme, host, port };
}

// No leading "-" or ".": a command that reads as an option or a relative path is refused.
const COMMAND_NAME = /^[A-Za-z0-9_][A-Za-z0-9._+-]*$/;

export function parseProcessRule(entry: string): ProcessRule {
  const expected = `expected "<command> <arg pattern> ..." with a bare command name or absolute path`;
  if (typeof entry !== "string" || entry.trim().length === 0) {
    throw new RuleSyntaxError(`${expected}, got an empty entry`);
  }
  if (CONTROL.test(entry)) {
    throw new RuleSyntaxError(`process rule ${q(entry)} contains a control character`);
  }
  if (entry !== entry.trim() || entry.includes("  ")) {
    throw new RuleSyntaxError(`process rule ${q(entry)} must separate tokens with single spaces`);
  }
  const [command = "", ...rest] = entry.split(" ");
  if (command.startsWith("/")) {
    const segs = command.slice(1).split("/");
    if (segs.some((s) => s === "" || s === "." || s === ".." || !COMMAND_NAME.test(s))) {
      throw new RuleSyntaxError(`${expected}, got command ${q(command)} in ${q(entry)}`);
    }
  } else if (!COMMAND_NAME.test(command)) {
    // A relative path ("./x", "bin/x") would resolve against whatever the cwd is at spawn time.
    throw new RuleSyntaxError(`${expected}, got command ${q(command)} in ${q(entry)}`);
  }
  const args: ArgPattern[] = rest.map((token, i) => {
    if (token === "*") return { kind: "one" };
    if (token === "**") {
      if (i !== rest.length - 1) {
        throw new RuleSyntaxError(
          `process rule ${q(entry)}: "**" is only allowed as the last token`,
        );
      }
      return { kind: "rest" };
    }
    if (token.includes("*")) {
      throw new RuleSyntaxError(
        `process rule ${q(entry)}: wildcard inside argument ${q(token)}; "*" and "**" must stand alone`,
      );
    }
    return { kind: "literal", value: token };
  });
  return { source: entry, command, args };
}

const KV_BUCKET = /^[a-z0-9_-]{1,64}$/;

export function parseKvBucket(entry: string): string {
  if (typeof entry !== "string" || !KV_BUCKET.test(entry)) {
    throw new RuleSyntaxError(
      `expected a bucket name of 1-64 characters [a-z0-9_-], got ${q(String(entry))}`,
    );
  }
  return entry;
}
