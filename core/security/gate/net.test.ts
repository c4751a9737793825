import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseNetRule } from "../../manifest/capability-rules.js";
import { SPECIAL_RANGES } from "./ip-ranges.js";
import type { DnsLookup } from "./net.js";
import { NetGate } from "./net.js";

const gateOf = (...entries: string[]) => new NetGate({ connect: entries.map(parseNetRule) });

const gate = gateOf(
  "api.example.com",
  "*.cdn.example.com",
  "http://plain.example.com",
  "tcp://db.internal:5432",
  "10.1.0.0/16:5432",
  "127.0.0.1:8080",
  "[::1]:9000",
  "ws.example.com:*",
);

/** A resolver answering from a fixed table, as a caller pinning DNS would. */
const staticLookup =
  (table: Record<string, string[]>, calls: string[] = []): DnsLookup =>
  async (hostname) => {
    calls.push(hostname);
    const addresses = table[hostname];
    if (!addresses)
      throw Object.assign(new Error(`no such host ${hostname}`), { code: "ENOTFOUND" });
    return addresses.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));
  };

describe("NetGate.checkUrl denies", () => {
  const cases: [string, string][] = [
    [
      "ftp://api.example.com/",
      `scheme "ftp" is not allowed in "ftp://api.example.com/"; expected http, https, ws, wss, tcp`,
    ],
    [
      "https://a@api.example.com/",
      `URL "https://a@api.example.com/" carries userinfo before "@"; credentials in URLs are refused`,
    ],
    [
      "https://api.example.com@evil.com/",
      `URL "https://api.example.com@evil.com/" carries userinfo before "@"; credentials in URLs are refused`,
    ],
    [
      "https://evil.com\\@api.example.com/",
      `URL "https://evil.com\\\\@api.example.com/" contains whitespace, a control character or a backslash`,
    ],
    [
      "https://api.exam\nple.com/",
      `URL "https://api.exam\\nple.com/" contains whitespace, a control character or a backslash`,
    ],
    ["http:api.example.com", `"http:api.example.com" is not a "scheme://host[:port]" URL`],
    [
      "https://b\u00fccher.example/",
      `host "b\u00fccher.example" is not ASCII; write its punycode form "xn--bcher-kva.example" in the manifest and the request (in URL "https://b\u00fccher.example/")`,
    ],
    [
      "https://api%2eexample.com/",
      `host "api%2eexample.com" contains a character not allowed in a host (in URL "https://api%2eexample.com/")`,
    ],
    ["https://cdn.example.com/", "https://cdn.example.com:443 matches no net rule"],
    ["https://evilcdn.example.com/", "https://evilcdn.example.com:443 matches no net rule"],
    ["http://api.example.com/", "http://api.example.com:80 matches no net rule"],
    ["https://api.example.com:8443/", "https://api.example.com:8443 matches no net rule"],
    ["https://api.example.com:0/", `port "0" in "https://api.example.com:0/" is not 1-65535`],
    [
      "https://api.example.com:65536/",
      `port "65536" in "https://api.example.com:65536/" is not 1-65535`,
    ],
    ["https://api.example.com:/", `"https://api.example.com:/" has an empty port after ":"`],
    ["tcp://db.internal", `"tcp://db.internal" needs an explicit port`],
    [
      "https://10.0.0.5/",
      "https://10.0.0.5:443: 10.0.0.5 is in a private range (10.0.0.0/8) and no rule lists it",
    ],
    [
      "http://0x7f.2:8080/",
      "http://127.0.0.2:8080: 127.0.0.2 is in a loopback range (127.0.0.0/8) and no rule lists it",
    ],
    [
      "https://[::ffff:169.254.169.254]/",
      "https://169.254.169.254:443: 169.254.169.254 is in a link-local range (169.254.0.0/16) and no rule lists it",
    ],
    [
      "https://[64:ff9b::a9fe:a9fe]/",
      "https://[64:ff9b::a9fe:a9fe]:443: 64:ff9b::a9fe:a9fe is in a NAT64 range (64:ff9b::/96) and no rule lists it",
    ],
    [
      "https://[fd00::1]/",
      "https://[fd00::1]:443: fd00::1 is in a unique local range (fc00::/7) and no rule lists it",
    ],
    [
      "https://[fe80::1%25eth0]/",
      `host "[fe80::1%25eth0]" contains a character not allowed in a host (in URL "https://[fe80::1%25eth0]/")`,
    ],
    [
      "http://[::1]:9001/",
      "http://[::1]:9001: ::1 is in a loopback range (::1/128) and no rule lists it",
    ],
  ];
  it.each(cases)("%s", (url, reason) => {
    expect(gate.checkUrl(url)).toEqual({ allowed: false, layer: "gate", reason });
  });

  it("denies everything without rules", () => {
    expect(gateOf().checkUrl("https://api.example.com/")).toEqual({
      allowed: false,
      layer: "gate",
      reason: "no net rules are declared; https://api.example.com:443 denied",
    });
  });
});

describe("NetGate.checkUrl allows", () => {
  const cases: [string, string][] = [
    ["https://api.example.com/v1?q=1", "api.example.com"],
    ["HTTPS://API.Example.COM/", "api.example.com"],
    ["https://api.example.com.:443/", "api.example.com"],
    ["https://img.cdn.example.com/x.png", "*.cdn.example.com"],
    ["https://a.b.cdn.example.com/", "*.cdn.example.com"],
    ["http://plain.example.com/", "http://plain.example.com"],
    ["tcp://DB.internal:5432", "tcp://db.internal:5432"],
    // Number spellings are canonicalised first, then granted by the IP rule they reach.
    ["http://0x7f.1:8080/", "127.0.0.1:8080"],
    ["http://2130706433:8080/", "127.0.0.1:8080"],
    ["https://[::ffff:10.1.2.3]:5432/", "10.1.0.0/16:5432"],
    ["tcp://10.1.255.255:5432", "10.1.0.0/16:5432"],
    ["ws://[::1]:9000/socket", "[::1]:9000"],
    ["wss://ws.example.com:7000/", "ws.example.com:*"],
  ];
  it.each(cases)("%s", (url, rule) => {
    expect(gate.checkUrl(url)).toEqual({ allowed: true, layer: "gate", rule });
  });
});

describe("NetGate.checkConnect (DNS-rebinding guard)", () => {
  it("allows a name whose addresses are public", () => {
    expect(
      gate.checkConnect({
        scheme: "https",
        host: "api.example.com",
        port: 443,
        resolved: ["93.184.216.34", "2606:2800:220:1::"],
      }),
    ).toEqual({ allowed: true, layer: "gate", rule: "api.example.com" });
  });

  const denies: [string, Parameters<NetGate["checkConnect"]>[0], string][] = [
    [
      "a name resolving to a private address",
      {
        scheme: "https",
        host: "api.example.com",
        port: 443,
        resolved: ["93.184.216.34", "10.0.0.1"],
      },
      `"api.example.com" resolves to 10.0.0.1, which is in a private range (10.0.0.0/8); list the address or a CIDR holding it to allow it`,
    ],
    [
      "a name rebound to the metadata service",
      { scheme: "https", host: "api.example.com", port: 443, resolved: ["::ffff:169.254.169.254"] },
      `"api.example.com" resolves to 169.254.169.254, which is in a link-local range (169.254.0.0/16); list the address or a CIDR holding it to allow it`,
    ],
    [
      "a name without addresses",
      { scheme: "https", host: "api.example.com", port: 443, resolved: [] },
      "https://api.example.com:443: resolved addresses are required for a DNS name",
    ],
    [
      "an address that is not an IP",
      { scheme: "https", host: "api.example.com", port: 443, resolved: ["evil.com"] },
      `resolved address "evil.com" is not an IP address`,
    ],
    [
      "an IP literal connecting elsewhere",
      { scheme: "tcp", host: "10.1.0.9", port: 5432, resolved: ["10.1.0.10"] },
      "tcp://10.1.0.9:5432 is an IP literal but the connection would go to 10.1.0.10",
    ],
    [
      "a listed CIDR on another port",
      { scheme: "tcp", host: "db.internal", port: 5432, resolved: ["10.2.0.1"] },
      `"db.internal" resolves to 10.2.0.1, which is in a private range (10.0.0.0/8); list the address or a CIDR holding it to allow it`,
    ],
    [
      "an unknown scheme",
      { scheme: "file", host: "api.example.com", port: 443, resolved: [] },
      `scheme "file" is not allowed; expected http, https, ws, wss, tcp`,
    ],
    [
      "a bad port",
      { scheme: "https", host: "api.example.com", port: 70000, resolved: [] },
      "port 70000 is not 1-65535",
    ],
  ];
  it.each(denies)("denies %s", (_name, request, reason) => {
    expect(gate.checkConnect(request)).toEqual({ allowed: false, layer: "gate", reason });
  });

  it("allows a private address when a CIDR rule lists it, naming both rules", () => {
    expect(
      gate.checkConnect({ scheme: "tcp", host: "db.internal", port: 5432, resolved: ["10.1.2.3"] }),
    ).toEqual({ allowed: true, layer: "gate", rule: "tcp://db.internal:5432 + 10.1.0.0/16:5432" });
  });
});

describe("NetGate.resolveAndCheck", () => {
  it("resolves localhost for real and refuses its loopback addresses unless listed", async () => {
    const named = gateOf("localhost:8080");
    const refused = await named.resolveAndCheck("http://localhost:8080/");
    expect(refused.decision.allowed).toBe(false);
    expect(refused.addresses).toEqual([]);
    expect(refused.decision.allowed ? "" : refused.decision.reason).toMatch(
      /^"localhost" resolves to (127\.0\.0\.1|::1), which is in a loopback range \((127\.0\.0\.0\/8|::1\/128)\)/,
    );
    const listed = gateOf("localhost:8080", "127.0.0.0/8:8080", "[::1]:8080");
    const ok = await listed.resolveAndCheck("http://localhost:8080/");
    expect(ok.decision.allowed).toBe(true);
    expect(ok.addresses.length).toBeGreaterThan(0);
    expect(ok.addresses.every((a) => a === "::1" || a.startsWith("127."))).toBe(true);
    expect(ok.target).toEqual({ scheme: "http", host: "localhost", port: 8080 });
  });

  it("refuses a rebinding answer and returns no addresses to pin", async () => {
    const r = await gate.resolveAndCheck(
      "https://api.example.com/",
      staticLookup({ "api.example.com": ["169.254.169.254"] }),
    );
    expect(r).toEqual({
      decision: {
        allowed: false,
        layer: "gate",
        reason: `"api.example.com" resolves to 169.254.169.254, which is in a link-local range (169.254.0.0/16); list the address or a CIDR holding it to allow it`,
      },
      target: { scheme: "https", host: "api.example.com", port: 443 },
      addresses: [],
    });
  });

  it("returns the canonical addresses to pin when allowed", async () => {
    const r = await gate.resolveAndCheck(
      "https://api.example.com/",
      staticLookup({ "api.example.com": ["93.184.216.34", "2606:2800:0220:0001::"] }),
    );
    expect(r.decision).toEqual({ allowed: true, layer: "gate", rule: "api.example.com" });
    expect(r.addresses).toEqual(["93.184.216.34", "2606:2800:220:1::"]);
  });

  it("never resolves a name no rule grants", async () => {
    const calls: string[] = [];
    const r = await gate.resolveAndCheck("https://evil.example.org/", staticLookup({}, calls));
    expect(r.decision).toEqual({
      allowed: false,
      layer: "gate",
      reason: "https://evil.example.org:443 matches no net rule",
    });
    expect(calls).toEqual([]);
  });

  it("denies when the lookup fails", async () => {
    const r = await gate.resolveAndCheck("https://api.example.com/", staticLookup({}));
    expect(r.decision).toEqual({
      allowed: false,
      layer: "gate",
      reason: `DNS lookup of "api.example.com" failed (ENOTFOUND)`,
    });
  });
});

describe("NetGate.checkBind", () => {
  const g = new NetGate({ connect: [], bind: ["127.0.0.1:8080"].map(parseNetRule) });
  it("allows a listed listener and refuses others", () => {
    expect(g.checkBind("127.0.0.1", 8080)).toEqual({
      allowed: true,
      layer: "gate",
      rule: "127.0.0.1:8080",
    });
    expect(g.checkBind("0.0.0.0", 8080)).toEqual({
      allowed: false,
      layer: "gate",
      reason: "binding 0.0.0.0:8080 matches no net_bind rule",
    });
    expect(gateOf("a.com").checkBind("127.0.0.1", 1)).toEqual({
      allowed: false,
      layer: "gate",
      reason: "no net_bind rules are declared; 127.0.0.1:1 denied",
    });
  });
});

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

const label = fc.stringMatching(/^[a-z]([a-z0-9-]{0,6}[a-z0-9])?$/);

describe("NetGate properties", () => {
  it("a wildcard matches exactly the strict sub-domains of its suffix", () => {
    fc.assert(
      fc.property(
        fc.array(label, { minLength: 1, maxLength: 3 }),
        fc.array(label, { minLength: 0, maxLength: 3 }),
        fc.constantFrom("sub", "glued", "exact", "unrelated"),
        fc.array(fc.boolean(), { minLength: 40, maxLength: 40 }),
        fc.boolean(),
        (suffixLabels, extra, shape, upper, trailingDot) => {
          const suffix = `${suffixLabels.join(".")}.test`;
          const g = gateOf(`*.${suffix}`);
          const host =
            shape === "sub" && extra.length > 0
              ? `${extra.join(".")}.${suffix}`
              : shape === "glued"
                ? `${extra.join("")}x${suffix}`
                : shape === "exact"
                  ? suffix
                  : `${[...extra, "other"].join(".")}.test`;
          const written = [...host]
            .map((c, i) => (upper[i % upper.length] ? c.toUpperCase() : c))
            .join("");
          const d = g.checkUrl(`https://${written}${trailingDot ? "." : ""}/`);
          const expected = host.endsWith(`.${suffix}`) && host.length > suffix.length + 1;
          expect(d.allowed).toBe(expected);
        },
      ),
      { numRuns: 500 },
    );
  });

  // Random addresses inside special ranges, with a random subset of those ranges listed as
  // CIDR rules. The oracle is BigInt prefix arithmetic, independent of the byte matcher.
  const ranges = SPECIAL_RANGES.filter((r) => r.network !== "::ffff:0:0");
  const toBig = (r: (typeof ranges)[number]): bigint => {
    if (r.family === "ipv4")
      return r.network.split(".").reduce((n, o) => (n << 8n) | BigInt(o), 0n);
    const [head = "", tail = ""] = r.network.split("::");
    const words = (s: string) => (s === "" ? [] : s.split(":").map((w) => BigInt(parseInt(w, 16))));
    const h = words(head);
    const t = words(tail);
    return [...h, ...Array<bigint>(8 - h.length - t.length).fill(0n), ...t].reduce(
      (n, w) => (n << 16n) | w,
      0n,
    );
  };
  const format = (value: bigint, family: "ipv4" | "ipv6"): string => {
    if (family === "ipv4")
      return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 255n)).join(".");
    return [112n, 96n, 80n, 64n, 48n, 32n, 16n, 0n]
      .map((s) => ((value >> s) & 0xffffn).toString(16))
      .join(":");
  };
  const inside = (value: bigint, r: (typeof ranges)[number]): boolean => {
    const bits = BigInt(r.family === "ipv4" ? 32 : 128);
    const shift = bits - BigInt(r.prefix);
    return value >> shift === toBig(r) >> shift;
  };

  it("an address in a special range is refused unless a listed CIDR holds it", () => {
    fc.assert(
      fc.property(
        fc.nat(ranges.length - 1),
        fc.bigInt({ min: 0n, max: (1n << 128n) - 1n }),
        fc.subarray(ranges),
        fc.boolean(),
        (which, noise, listed, mapped) => {
          const r = ranges[which]!;
          const bits = BigInt(r.family === "ipv4" ? 32 : 128);
          const hostBits = bits - BigInt(r.prefix);
          const value = toBig(r) | (noise & ((1n << hostBits) - 1n));
          const address = format(value, r.family);
          const rules = listed.map((l) =>
            l.family === "ipv4" ? `${l.network}/${l.prefix}:*` : `[${l.network}]/${l.prefix}:*`,
          );
          const g = gateOf("svc.example.com:*", ...rules);
          const expected = listed.some((l) => l.family === r.family && inside(value, l));
          const literal =
            r.family === "ipv6" ? `[${address}]` : mapped ? `[::ffff:${address}]` : address;
          expect(g.checkUrl(`http://${literal}:8080/`).allowed).toBe(expected);
          const viaName = g.checkConnect({
            scheme: "tcp",
            host: "svc.example.com",
            port: 8080,
            resolved: [
              "93.184.216.34",
              mapped && r.family === "ipv4" ? `::ffff:${address}` : address,
            ],
          });
          expect(viaName.allowed).toBe(expected);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
