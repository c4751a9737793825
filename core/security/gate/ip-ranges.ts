/**
 * Address ranges a capsule must not reach by default: they lead to the host itself, the local
 * network, cloud metadata services (169.254.169.254), or, through translation prefixes
 * (NAT64, 6to4, Teredo, IPv4-mapped), to any of those by another spelling. A manifest can
 * still grant one by listing the address or a CIDR containing it.
 */

import { isIP } from "node:net";

export interface SpecialRange {
  readonly network: string;
  readonly prefix: number;
  readonly family: "ipv4" | "ipv6";
  readonly label: string;
}

const v4 = (network: string, prefix: number, label: string): SpecialRange => ({
  network,
  prefix,
  family: "ipv4",
  label,
});
const v6 = (network: string, prefix: number, label: string): SpecialRange => ({
  network,
  prefix,
  family: "ipv6",
  label,
});

export const SPECIAL_RANGES: readonly SpecialRange[] = [
  v4("0.0.0.0", 8, "unspecified / this-network"),
  v4("10.0.0.0", 8, "private"),
  v4("100.64.0.0", 10, "carrier-grade NAT"),
  v4("127.0.0.0", 8, "loopback"),
  v4("169.254.0.0", 16, "link-local"),
  v4("172.16.0.0", 12, "private"),
  v4("192.0.0.0", 24, "IETF protocol assignments"),
  v4("192.0.2.0", 24, "documentation"),
  v4("192.88.99.0", 24, "6to4 relay anycast"),
  v4("192.168.0.0", 16, "private"),
  v4("198.18.0.0", 15, "benchmarking"),
  v4("198.51.100.0", 24, "documentation"),
  v4("203.0.113.0", 24, "documentation"),
  v4("224.0.0.0", 4, "multicast"),
  v4("240.0.0.0", 4, "reserved / broadcast"),
  v6("::", 128, "unspecified"),
  v6("::1", 128, "loopback"),
  v6("::", 96, "IPv4-compatible"),
  v6("::ffff:0:0", 96, "IPv4-mapped"),
  v6("64:ff9b::", 96, "NAT64"),
  v6("64:ff9b:1::", 48, "local NAT64"),
  v6("100::", 64, "discard"),
  v6("2001::", 32, "Teredo"),
  v6("2001:db8::", 32, "documentation"),
  v6("2002::", 16, "6to4"),
  v6("3fff::", 20, "documentation"),
  v6("fc00::", 7, "unique local"),
  v6("fe80::", 10, "link-local"),
  v6("fec0::", 10, "site-local"),
  v6("ff00::", 8, "multicast"),
];

/**
 * Bytes of a canonical IP literal (as canonicalIp prints it: dotted IPv4 or hex IPv6).
 * Prefix tests run on these bytes rather than node:net BlockList, which was measured at
 * 1.6 µs per check (it builds a SocketAddress each call) against ~30 ranges per address.
 */
export function ipBytes(address: string): Uint8Array {
  if (isIP(address) === 4) return Uint8Array.from(address.split(".").map(Number));
  const [head = "", tail] = address.split("::");
  const words = (s: string): number[] => (s === "" ? [] : s.split(":").map((w) => parseInt(w, 16)));
  const h = words(head);
  const t = tail === undefined ? [] : words(tail);
  const all = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  return Uint8Array.from(all.flatMap((w) => [w >> 8, w & 0xff]));
}

/** Is `bytes` inside network/prefix? Both must be of one family (same length). */
export function inPrefix(bytes: Uint8Array, network: Uint8Array, prefix: number): boolean {
  if (bytes.length !== network.length) return false;
  let bits = prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if (((bytes[i] ?? 0) & mask) !== ((network[i] ?? 0) & mask)) return false;
  }
  return true;
}

const COMPILED = SPECIAL_RANGES.map((range) => ({ range, bytes: ipBytes(range.network) }));

/** The special range holding `address` (a canonical IP literal), or undefined if public. */
export function specialRangeOf(address: string): SpecialRange | undefined {
  const bytes = ipBytes(address);
  return COMPILED.find((c) => inPrefix(bytes, c.bytes, c.range.prefix))?.range;
}

/**
 * Canonical text of an IP literal: what the WHATWG URL parser prints (lower case, IPv6
 * compressed), with IPv4-mapped IPv6 turned back into IPv4 so "::ffff:10.0.0.1" is judged,
 * granted and reported as the 10.0.0.1 it reaches. Undefined when not an IP literal.
 */
export function canonicalIp(text: string): string | undefined {
  const family = isIP(text);
  if (family === 0 || text.includes("%")) return undefined;
  let host: string;
  try {
    host = new URL(family === 6 ? `http://[${text}]/` : `http://${text}/`).hostname;
  } catch {
    return undefined;
  }
  if (host.startsWith("[")) host = host.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (mapped) {
    const hi = parseInt(mapped[1] ?? "0", 16);
    const lo = parseInt(mapped[2] ?? "0", 16);
    return `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  }
  return host;
}
