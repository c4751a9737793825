/**
 * The resource grammar of capability tokens, one prefix per kind of authority:
 * `tool:<name glob>`, `fs:<absolute path glob>`, `net:<host>:<port>`, `topic:<subject pattern>`,
 * `process:<command glob>` (a bare command name or an absolute path, as the manifest names it).
 * The same parser checks the globs a token is minted with (and, again, verified with) and the
 * concrete resources a request names, so a malformed or escaping resource never reaches a
 * matcher.
 */
import picomatch from "picomatch";
import { assertPattern, patternCovers } from "../../bus/subject.js";

export type ResourceKind = "tool" | "fs" | "net" | "topic" | "process";

export interface Resource {
  readonly kind: ResourceKind;
  /** Everything after the prefix. */
  readonly value: string;
}

export class ResourceError extends Error {
  override readonly name = "ResourceError";
}

export const MAX_RESOURCE_LENGTH = 1024;

const TOOL_GLOB = /^[A-Za-z0-9_.\-/*?{},]+$/;
const TOOL_NAME = /^[A-Za-z0-9_.\-/]+$/;
const PROCESS_GLOB = /^(\/?[A-Za-z0-9_.*-]+)+$/;
const PROCESS_NAME = /^(\/?[A-Za-z0-9_.-]+)+$/;
const HOST_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^\[[0-9a-f:.]+\]$/;
const CONTROL = /[\u0000-\u001f\u007f\\]/;

/**
 * Parses `s` as a glob (what a token grants) or as a request (what a call touches); throws a
 * ResourceError saying what was expected.
 */
export function parseResource(s: string, as: "glob" | "request"): Resource {
  if (s.length > MAX_RESOURCE_LENGTH) {
    throw new ResourceError(`resource is longer than ${MAX_RESOURCE_LENGTH} characters`);
  }
  const colon = s.indexOf(":");
  const prefix = colon < 0 ? "" : s.slice(0, colon);
  const value = s.slice(colon + 1);
  switch (prefix) {
    case "tool":
      if (!(as === "glob" ? TOOL_GLOB : TOOL_NAME).test(value)) {
        throw new ResourceError(
          `resource "${s}": expected tool:<name${as === "glob" ? " glob" : ""}> of A-Z a-z 0-9 _ . - /${as === "glob" ? " * ? { } ," : ""}`,
        );
      }
      return { kind: "tool", value };
    case "process":
      if (
        !(as === "glob" ? PROCESS_GLOB : PROCESS_NAME).test(value) ||
        value.split("/").includes("..")
      ) {
        throw new ResourceError(
          `resource "${s}": expected process:<command${as === "glob" ? " glob" : ""}>, a bare name or an absolute path of A-Z a-z 0-9 _ . - /${as === "glob" ? " *" : ""} without ".."`,
        );
      }
      return { kind: "process", value };
    case "fs":
      checkFsPath(s, value, as);
      return { kind: "fs", value };
    case "net":
      checkNet(s, value, as);
      return { kind: "net", value };
    case "topic":
      try {
        assertPattern(value);
      } catch (err) {
        throw new ResourceError(`resource "${s}": ${(err as Error).message}`);
      }
      return { kind: "topic", value };
    default:
      throw new ResourceError(
        `resource "${s}": expected a tool:, fs:, net:, topic: or process: prefix`,
      );
  }
}

function checkFsPath(s: string, value: string, as: "glob" | "request"): void {
  if (!value.startsWith("/")) throw new ResourceError(`resource "${s}": fs paths must be absolute`);
  // Backslash would be read by picomatch as an escape; control characters hide in audit logs.
  if (CONTROL.test(value)) {
    throw new ResourceError(`resource "${s}": fs paths may not contain "\\" or control characters`);
  }
  const segments = value.split("/").slice(1);
  // `/work/**` must not grant `/work/../etc/passwd`: refuse the dot segments outright instead of
  // trusting a later normalisation to happen before the match.
  if (segments.some((seg) => seg === ".." || seg === ".")) {
    throw new ResourceError(`resource "${s}": "." and ".." path segments are refused`);
  }
  if (value !== "/" && segments.some((seg) => seg === "")) {
    throw new ResourceError(`resource "${s}": empty path segment (double or trailing "/")`);
  }
  if (as === "request" && /[*?[\]{}]/.test(value)) {
    throw new ResourceError(`resource "${s}": a requested path may not contain glob characters`);
  }
}

function checkNet(s: string, value: string, as: "glob" | "request"): void {
  const colon = value.lastIndexOf(":");
  const host = value.slice(0, colon);
  const port = value.slice(colon + 1);
  const expected = `resource "${s}": expected net:<host>:<port 1-65535>`;
  if (colon < 0 || !/^[1-9]\d{0,4}$/.test(port) || Number(port) > 65535) {
    throw new ResourceError(expected);
  }
  if (IPV4.test(host) || IPV6.test(host)) return;
  // One leading `*.` label: `*.example.com` grants hosts one level below example.com.
  const labels = (as === "glob" && host.startsWith("*.") ? host.slice(2) : host).split(".");
  if (!labels.every((l) => HOST_LABEL.test(l))) {
    throw new ResourceError(
      `${expected}; the host must be lowercase letters, digits and "-" labels${as === "glob" ? ', optionally after one leading "*."' : ""}, or an IP address`,
    );
  }
}

/** A token's resource globs compiled once, so a cached token matches without recompiling. */
export class ResourceScope {
  private readonly matchers: ReadonlyArray<{
    glob: string;
    kind: ResourceKind;
    test: (value: string) => boolean;
  }>;

  constructor(globs: readonly string[]) {
    this.matchers = globs.map((glob) => {
      const r = parseResource(glob, "glob");
      return { glob, kind: r.kind, test: compile(r) };
    });
  }

  /** The first glob granting the requested resource, or undefined. Throws on a malformed request. */
  match(requested: string): string | undefined {
    // Host names are case-insensitive; everything else is compared as written.
    const r = parseResource(
      requested.startsWith("net:") ? requested.toLowerCase() : requested,
      "request",
    );
    const value = r.value;
    for (const m of this.matchers) {
      if (m.kind === r.kind && m.test(value)) return m.glob;
    }
    return undefined;
  }
}

// Extglobs and negation are off: `!(x)` or a leading `!` would turn a grant into "everything but",
// which no token author should get by accident. Dotfiles are not matched by `*`/`**` unless the
// glob names them (fail closed for `.env`, `.git`).
const PICOMATCH = { dot: false, noextglob: true, nonegate: true, windows: false } as const;

function compile(r: Resource): (value: string) => boolean {
  switch (r.kind) {
    case "tool":
    case "fs":
    case "process":
      return picomatch(r.value, PICOMATCH);
    case "topic":
      // Covering, so a grant of `a.*` lets a call use `a.b` or `a.*` but never `a.>`.
      return (value) => patternCovers(r.value, value);
    case "net": {
      const [host, port] = splitHostPort(r.value);
      if (host.startsWith("*.")) {
        const suffix = host.slice(1); // ".example.com"
        return (value) => {
          const [h, p] = splitHostPort(value);
          const label = h.slice(0, -suffix.length);
          // Exactly one label in place of `*`: `a.b.example.com` and `example.com` stay out.
          return p === port && h.endsWith(suffix) && label.length > 0 && !label.includes(".");
        };
      }
      return (value) => value === r.value;
    }
  }
}

function splitHostPort(value: string): [string, string] {
  const colon = value.lastIndexOf(":");
  return [value.slice(0, colon), value.slice(colon + 1)];
}
