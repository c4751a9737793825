/**
 * Layer 2, network: decides whether a capsule may connect to (or bind) an endpoint, against
 * the `net` / `net_bind` entries of its manifest. Fail closed: no rule, no connection.
 *
 * Threats and the check that stops each:
 * - SSRF to the host, the cluster or a metadata service: an address in a special range
 *   (ip-ranges.ts) is refused unless a rule lists that address or a CIDR holding it. A name
 *   rule never grants a special address, so "api.example.com" cannot be pointed at 10.0.0.1.
 * - DNS rebinding: the check is made on the addresses the caller will actually connect to
 *   (`checkConnect({ resolved })`, or `resolveAndCheck`, which returns them to pin the
 *   connection to); a name is never trusted for what it resolved to at some other time.
 * - Parser differentials: the gate must read a URL the way the client will. Whitespace,
 *   control characters and backslashes (WHATWG strips or rewrites them, others do not),
 *   percent-encoding in the host, a missing "//" ("http:host") and userinfo ("https://a@b")
 *   are refused outright rather than interpreted.
 * - IDN homographs: non-ASCII host names are refused; the manifest and the request must both
 *   use the punycode form (the deny reason names it, via node:url domainToASCII), so what a
 *   reviewer reads in the manifest is byte-for-byte what is matched.
 * - Wildcards: "*.example.com" matches sub-domains only — not "example.com" itself and not
 *   "evilexample.com". Hosts compare case-insensitively with one trailing dot stripped.
 * - Number tricks ("0x7f.1", "2130706433", "::ffff:127.0.0.1") are canonicalised by the WHATWG
 *   host parser first, so they are judged as the 127.0.0.1 they reach.
 */

import * as dns from "node:dns";
import { isIP } from "node:net";
import { domainToASCII } from "node:url";
import type { NetRule, NetScheme } from "../../manifest/capability-rules.js";
import type { Decision } from "../decision.js";
import { allow, deny } from "../decision.js";
import { canonicalIp, inPrefix, ipBytes, specialRangeOf } from "./ip-ranges.js";

export interface NetGateOptions {
  readonly connect: readonly NetRule[];
  readonly bind?: readonly NetRule[];
}

export interface NetTarget {
  readonly scheme: NetScheme;
  /** Canonical host: lower-case DNS name without trailing dot, or canonical IP literal. */
  readonly host: string;
  readonly port: number;
}

export interface ConnectRequest {
  readonly scheme: string;
  readonly host: string;
  readonly port: number;
  /** Every address the caller will connect to; required (non-empty) for a DNS name. */
  readonly resolved: readonly string[];
}

export type DnsLookup = (
  hostname: string,
  options: { all: true; verbatim: boolean },
) => Promise<readonly { address: string; family: number }[]>;

export interface ResolvedDecision {
  readonly decision: Decision;
  /** The parsed target, when the URL could be parsed. */
  readonly target: NetTarget | undefined;
  /** Addresses to pin the connection to; empty unless allowed. */
  readonly addresses: readonly string[];
}

const SCHEMES: readonly NetScheme[] = ["http", "https", "ws", "wss", "tcp"];
const DEFAULT_PORT: Partial<Record<NetScheme, number>> = { http: 80, https: 443, ws: 80, wss: 443 };
const q = (s: string): string => JSON.stringify(s);
const UNSAFE_TEXT = /[\u0000-\u0020\u007f\\]/;
const DNS_NAME =
  /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/;

type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Host text to canonical form, refusing anything two parsers could read differently. */
function canonicalHost(raw: string): Parsed<{ host: string; ip: boolean }> {
  if (raw.length === 0) return { ok: false, reason: "the host is empty" };
  if (/[^\u0000-\u007f]/.test(raw)) {
    const ascii = domainToASCII(raw);
    return {
      ok: false,
      reason: `host ${q(raw)} is not ASCII; write its punycode form${ascii ? ` ${q(ascii)}` : ""} in the manifest and the request`,
    };
  }
  if (UNSAFE_TEXT.test(raw) || /[%@/?#]/.test(raw)) {
    return { ok: false, reason: `host ${q(raw)} contains a character not allowed in a host` };
  }
  const bare = raw.startsWith("[") && raw.endsWith("]") ? raw.slice(1, -1) : raw;
  const literal = canonicalIp(bare);
  if (literal !== undefined) return { ok: true, value: { host: literal, ip: true } };
  if (bare.includes(":")) return { ok: false, reason: `host ${q(raw)} is not a valid IP address` };
  // The WHATWG host parser turns "0x7f.1" or "2130706433" into 127.0.0.1, as resolvers do.
  let parsed: string;
  try {
    parsed = new URL(`http://${bare}/`).hostname;
  } catch {
    return { ok: false, reason: `host ${q(raw)} is neither an IP address nor a valid DNS name` };
  }
  const asIp = canonicalIp(parsed);
  if (asIp !== undefined) return { ok: true, value: { host: asIp, ip: true } };
  const name = parsed.endsWith(".") ? parsed.slice(0, -1) : parsed;
  if (!DNS_NAME.test(name)) {
    return { ok: false, reason: `host ${q(raw)} is neither an IP address nor a valid DNS name` };
  }
  return { ok: true, value: { host: name, ip: false } };
}

/** URL text to target. Only "scheme://host[:port][/path...]" with an allowed scheme. */
export function parseNetUrl(url: string): Parsed<NetTarget> {
  if (typeof url !== "string" || url.length === 0) return { ok: false, reason: "expected a URL" };
  if (UNSAFE_TEXT.test(url)) {
    return {
      ok: false,
      reason: `URL ${q(url)} contains whitespace, a control character or a backslash`,
    };
  }
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?#]*)/.exec(url);
  if (!m) return { ok: false, reason: `${q(url)} is not a "scheme://host[:port]" URL` };
  const scheme = (m[1] ?? "").toLowerCase();
  const authority = m[2] ?? "";
  if (!(SCHEMES as readonly string[]).includes(scheme)) {
    return {
      ok: false,
      reason: `scheme ${q(scheme)} is not allowed in ${q(url)}; expected ${SCHEMES.join(", ")}`,
    };
  }
  // Userinfo is where "https://good.com@evil.com" hides the real host.
  if (authority.includes("@")) {
    return {
      ok: false,
      reason: `URL ${q(url)} carries userinfo before "@"; credentials in URLs are refused`,
    };
  }
  // Host and port are split from the raw authority (not from URL.port, which drops a port
  // equal to the scheme default and leaves tcp:// hosts unparsed).
  const hp = /^(\[[^\]]*\]|[^:]*)(?::([0-9]*))?$/.exec(authority);
  if (!hp) return { ok: false, reason: `${q(url)} has a malformed host:port` };
  const host = canonicalHost(hp[1] ?? "");
  if (!host.ok) return { ok: false, reason: `${host.reason} (in URL ${q(url)})` };
  const portText = hp[2];
  let port: number;
  if (portText === "") return { ok: false, reason: `${q(url)} has an empty port after ":"` };
  if (portText === undefined) {
    const d = DEFAULT_PORT[scheme as NetScheme];
    if (d === undefined) return { ok: false, reason: `${q(url)} needs an explicit port` };
    port = d;
  } else {
    port = Number(portText);
    if (!/^[1-9][0-9]{0,4}$/.test(portText) || port > 65535) {
      return { ok: false, reason: `port ${q(portText)} in ${q(url)} is not 1-65535` };
    }
  }
  // Last, the whole URL must parse, so what the client sees (path, query) is well-formed too.
  try {
    new URL(url);
  } catch {
    return { ok: false, reason: `${q(url)} is not a valid URL` };
  }
  return { ok: true, value: { scheme: scheme as NetScheme, host: host.value.host, port } };
}

interface CompiledNetRule {
  readonly rule: NetRule;
  readonly matchesHost: (host: string, ip: boolean) => boolean;
  /** For ip/cidr rules: does this rule list `address` (canonical)? */
  readonly listsAddress: (address: string) => boolean;
}

function compileNetRule(rule: NetRule): CompiledNetRule {
  const h = rule.host;
  switch (h.kind) {
    case "name":
      return {
        rule,
        matchesHost: (host, ip) => !ip && host === h.name,
        listsAddress: () => false,
      };
    case "wildcard":
      return {
        rule,
        matchesHost: (host, ip) => !ip && host.length > h.suffix.length && host.endsWith(h.suffix),
        listsAddress: () => false,
      };
    case "ip": {
      const address = canonicalIp(h.address);
      const lists = (a: string) => address !== undefined && a === address;
      return { rule, matchesHost: (host, ip) => ip && lists(host), listsAddress: lists };
    }
    case "cidr": {
      // Not canonicalIp(): that would turn a "::ffff:0:0/96" network into IPv4 and misread the
      // prefix. A mapped CIDR therefore matches nothing (addresses are unmapped): fail closed.
      const network = ipBytes(h.network);
      const lists = (a: string) => inPrefix(ipBytes(a), network, h.prefix);
      return { rule, matchesHost: (host, ip) => ip && lists(host), listsAddress: lists };
    }
  }
}

const schemePortMatch = (rule: NetRule, scheme: string, port: number) =>
  (rule.scheme === undefined || rule.scheme === scheme) &&
  (rule.port === "any" || rule.port === port);

const endpoint = (t: NetTarget): string =>
  `${t.scheme}://${isIP(t.host) === 6 ? `[${t.host}]` : t.host}:${t.port}`;

const defaultLookup: DnsLookup = (hostname, options) => dns.promises.lookup(hostname, options);

export class NetGate {
  readonly #connect: readonly CompiledNetRule[];
  readonly #bind: readonly CompiledNetRule[];

  constructor(options: NetGateOptions) {
    this.#connect = options.connect.map(compileNetRule);
    this.#bind = (options.bind ?? []).map(compileNetRule);
  }

  /**
   * Scheme, host and port only. For a DNS name this cannot see where the name points, so a
   * connection must still pass `checkConnect` (or come from `resolveAndCheck`).
   */
  checkUrl(url: string): Decision {
    const parsed = parseNetUrl(url);
    if (!parsed.ok) return deny("gate", parsed.reason);
    const t = parsed.value;
    const ip = isIP(t.host) !== 0;
    const found = this.#findHostRule(this.#connect, t, ip);
    if (typeof found === "string") return deny("gate", found);
    if (ip) {
      const addressCheck = this.#checkAddresses(t, [t.host], found);
      if (addressCheck) return addressCheck;
    }
    return allow("gate", found.rule.source);
  }

  checkConnect(request: ConnectRequest): Decision {
    const { scheme } = request;
    if (!(SCHEMES as readonly string[]).includes(scheme)) {
      return deny(
        "gate",
        `scheme ${q(String(scheme))} is not allowed; expected ${SCHEMES.join(", ")}`,
      );
    }
    if (!Number.isInteger(request.port) || request.port < 1 || request.port > 65535) {
      return deny("gate", `port ${String(request.port)} is not 1-65535`);
    }
    const host = canonicalHost(String(request.host));
    if (!host.ok) return deny("gate", host.reason);
    const t: NetTarget = { scheme: scheme as NetScheme, host: host.value.host, port: request.port };
    const found = this.#findHostRule(this.#connect, t, host.value.ip);
    if (typeof found === "string") return deny("gate", found);
    const addresses: string[] = [];
    for (const a of host.value.ip && request.resolved.length === 0 ? [t.host] : request.resolved) {
      const c = canonicalIp(String(a));
      if (c === undefined)
        return deny("gate", `resolved address ${q(String(a))} is not an IP address`);
      if (host.value.ip && c !== t.host) {
        return deny("gate", `${endpoint(t)} is an IP literal but the connection would go to ${c}`);
      }
      addresses.push(c);
    }
    // Without addresses the DNS-rebinding check cannot be made: fail closed.
    if (addresses.length === 0) {
      return deny("gate", `${endpoint(t)}: resolved addresses are required for a DNS name`);
    }
    return (
      this.#checkAddresses(t, addresses, found) ?? allow("gate", this.#sources(t, addresses, found))
    );
  }

  /** Resolves the URL's host (unless it is an IP literal) and checks every address. */
  async resolveAndCheck(url: string, lookup: DnsLookup = defaultLookup): Promise<ResolvedDecision> {
    const parsed = parseNetUrl(url);
    if (!parsed.ok)
      return { decision: deny("gate", parsed.reason), target: undefined, addresses: [] };
    const t = parsed.value;
    // The name rules are checked before any lookup: an ungranted name is not even resolved,
    // so a capsule cannot use the gate as a DNS oracle or exfiltrate through queries.
    const nameDecision = this.checkUrl(url);
    if (!nameDecision.allowed) return { decision: nameDecision, target: t, addresses: [] };
    let resolved: readonly string[];
    if (isIP(t.host) !== 0) {
      resolved = [t.host];
    } else {
      try {
        resolved = (await lookup(t.host, { all: true, verbatim: true })).map((r) => r.address);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code ?? String(e);
        return {
          decision: deny("gate", `DNS lookup of ${q(t.host)} failed (${code})`),
          target: t,
          addresses: [],
        };
      }
    }
    const decision = this.checkConnect({ ...t, resolved });
    const addresses = decision.allowed ? resolved.map((a) => canonicalIp(a) ?? a) : [];
    return { decision, target: t, addresses };
  }

  /** Listening sockets: the bind rules only; scheme is ignored (any listener is tcp). */
  checkBind(host: string, port: number): Decision {
    if (this.#bind.length === 0)
      return deny("gate", `no net_bind rules are declared; ${host}:${port} denied`);
    const h = canonicalHost(host);
    if (!h.ok) return deny("gate", h.reason);
    const rule = this.#bind.find(
      (r) =>
        (r.rule.port === "any" || r.rule.port === port) && r.matchesHost(h.value.host, h.value.ip),
    );
    if (!rule) return deny("gate", `binding ${h.value.host}:${port} matches no net_bind rule`);
    return allow("gate", rule.rule.source);
  }

  #findHostRule(
    rules: readonly CompiledNetRule[],
    t: NetTarget,
    ip: boolean,
  ): CompiledNetRule | string {
    if (rules.length === 0) return `no net rules are declared; ${endpoint(t)} denied`;
    const found = rules.find(
      (r) => schemePortMatch(r.rule, t.scheme, t.port) && r.matchesHost(t.host, ip),
    );
    if (found) return found;
    const range = ip ? specialRangeOf(t.host) : undefined;
    if (range) {
      return `${endpoint(t)}: ${t.host} is in a ${range.label} range (${range.network}/${range.prefix}) and no rule lists it`;
    }
    return `${endpoint(t)} matches no net rule`;
  }

  /** A deny when some address is special and not listed by an ip/cidr rule; else undefined. */
  #checkAddresses(
    t: NetTarget,
    addresses: readonly string[],
    hostRule: CompiledNetRule,
  ): Decision | undefined {
    for (const a of addresses) {
      const range = specialRangeOf(a);
      if (range === undefined) continue;
      if (hostRule.listsAddress(a) || this.#listing(t, a)) continue;
      const via = isIP(t.host) !== 0 ? a : `${q(t.host)} resolves to ${a}, which`;
      return deny(
        "gate",
        `${via} is in a ${range.label} range (${range.network}/${range.prefix}); list the address or a CIDR holding it to allow it`,
      );
    }
    return undefined;
  }

  #listing(t: NetTarget, address: string): CompiledNetRule | undefined {
    return this.#connect.find(
      (r) => schemePortMatch(r.rule, t.scheme, t.port) && r.listsAddress(address),
    );
  }

  /** Audit text: the host rule, plus any rule that had to list a special address. */
  #sources(t: NetTarget, addresses: readonly string[], hostRule: CompiledNetRule): string {
    const sources = new Set([hostRule.rule.source]);
    for (const a of addresses) {
      if (specialRangeOf(a) === undefined || hostRule.listsAddress(a)) continue;
      const listing = this.#listing(t, a);
      if (listing) sources.add(listing.rule.source);
    }
    return [...sources].join(" + ");
  }
}
