/**
 * Streaming in the enforced host: httpOpen/httpRead/httpClose against a real local HTTP server
 * and streamDelta into a stream inbox, through the real gate, layers and audit chain. The
 * chunked test is causal, not timed: the server writes each chunk only after the guest has
 * acknowledged the previous one, so a host that buffered the body until its end (upstream
 * Astrid #1602, deltas in one burst) would deadlock and fail instead of passing.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { AuditChain } from "../../core/audit/index.js";
import { parseNetRule } from "../../core/manifest/capability-rules.js";
import { decode } from "../../core/protocol/envelope.js";
import { Approvals } from "../../core/security/approval/approvals.js";
import { ApprovalBroker } from "../../core/security/approval/broker.js";
import { ApprovalStore } from "../../core/security/approval/store.js";
import { ManifestGate } from "../../core/security/gate/gate.js";
import { type CallContext, HOST_LIMITS, HostError } from "../abi/host.js";
import { QuickJsEngine } from "../engine/wasm/quickjs-engine.js";
import { DecisionLog } from "./decision-log.js";
import { EnforcedHost, type HostDeps } from "./host.js";
import { MemoryKvStore } from "./kv.js";
import { CapsuleLayers } from "./layers.js";

const GUEST = `
export async function stream({ url, ackUrl }) {
  const h = await astrid.net.httpOpen({ method: "GET", url });
  const chunks = [];
  for (;;) {
    const c = await astrid.net.httpRead(h.handle, 5000);
    if (c === null) break;
    if (c.length === 0) continue;
    chunks.push(astrid.utf8.decode(c));
    await astrid.net.httpRequest({ method: "POST", url: ackUrl });
  }
  await astrid.net.httpClose(h.handle);
  return { status: h.status, type: h.headers["content-type"], chunks };
}
export async function roundTrip({ text }) {
  const bytes = astrid.utf8.encode(text);
  return { n: bytes.length, back: astrid.utf8.decode(bytes), bad: astrid.utf8.decode(new Uint8Array([0x61, 0xff, 0xe2, 0x82])) };
}
export async function deltas() {
  const a = await astrid.streamDelta({ text: "Hel" });
  const b = await astrid.streamDelta({ toolUse: { id: "t1", name: "add", inputJson: "{\\"a\\"" } });
  const c = await astrid.streamDelta({ done: true });
  return [a, b, c];
}
`;

interface Rig {
  root: string;
  audit: AuditChain;
  log: DecisionLog;
  deps: HostDeps;
  server: http.Server;
  base: string;
  acks: (() => void)[];
  closed: Promise<void>[];
}

let rig: Rig;
const hosts: EnforcedHost[] = [];

function ctx(deadlineMs = 10_000): CallContext {
  return {
    callId: `c-${Math.random().toString(36).slice(2)}`,
    session: "s1",
    principal: "user:alice",
    capsule: "streamer",
    token: undefined,
    deadline: Date.now() + deadlineMs,
  };
}

function host(extra: Partial<HostDeps> = {}, deadlineMs?: number): EnforcedHost {
  const h = new EnforcedHost({ ...rig.deps, ...extra }, ctx(deadlineMs));
  hosts.push(h);
  return h;
}

async function readAll(h: EnforcedHost, handle: number): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for (;;) {
    const c = await h.httpRead(handle, 5000);
    if (c === null) return out;
    if (c.length > 0) out.push(Buffer.from(c));
  }
}

function auditActions(): { action: string; decision: string; target: string; reason: string }[] {
  const dir = path.join(rig.root, "audit");
  return readdirSync(dir)
    .filter((f) => f.endsWith(".jsonl"))
    .sort()
    .flatMap((f) => readFileSync(path.join(dir, f), "utf8").split("\n"))
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l))
    .filter((r) => r.type === "entry");
}

beforeAll(async () => {
  const root = mkdtempSync(path.join(os.tmpdir(), "astrid-host-stream-"));
  const audit = await AuditChain.open(path.join(root, "audit"), {
    key: generateKeyPairSync("ed25519").privateKey,
    keyId: "host-stream-test",
  });
  const log = new DecisionLog(audit);
  const store = await ApprovalStore.open({
    file: path.join(root, "grants.json"),
    mintToken: async () => {
      throw new Error("no grants in this test");
    },
    checkToken: async () => false,
  });
  const layers = new CapsuleLayers({
    log,
    approvals: new Approvals(store, new ApprovalBroker()),
    mode: "autonomous",
    yes: false,
    workspace: root,
    approvalTimeoutMs: 1000,
  });
  const gate = new ManifestGate({
    workspace: root,
    home: root,
    net: [parseNetRule("http://127.0.0.1:*")],
  });
  const acks: (() => void)[] = [];
  const ackWaiters: (() => void)[] = [];
  const closed: Promise<void>[] = [];
  const nextAck = () =>
    new Promise<void>((resolve) => {
      const a = acks.shift();
      if (a) {
        a();
        resolve();
      } else ackWaiters.push(resolve);
    });
  const server = http.createServer(async (req, res) => {
    closed.push(new Promise((r) => res.on("close", () => r())));
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/ack") {
      const w = ackWaiters.shift();
      if (w) w();
      else acks.push(() => {});
      res.end("ok");
      return;
    }
    if (url.pathname === "/gated") {
      res.writeHead(200, { "content-type": "text/plain" });
      for (const word of ["one|", "two|", "three|"]) {
        res.write(word);
        await nextAck();
      }
      res.end();
      return;
    }
    if (url.pathname === "/big") {
      const n = Number(url.searchParams.get("n"));
      res.writeHead(200, { "content-length": String(n) });
      res.end(Buffer.alloc(n, 0x61));
      return;
    }
    if (url.pathname === "/cut") {
      res.writeHead(200, { "content-type": "text/event-stream" });
      res.write("event: ping\n\n");
      setImmediate(() => res.socket?.destroy());
      return;
    }
    if (url.pathname === "/hold") {
      res.writeHead(200);
      res.flushHeaders();
      return; // never ends: the call's end (dispose) must close it
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  rig = {
    root,
    audit,
    log,
    server,
    base,
    acks,
    closed,
    deps: {
      layers,
      gate,
      bus: undefined as never, // these tests make no bus calls
      log,
      kv: new MemoryKvStore(),
      kvBuckets: [],
      config: {},
      secrets: {},
      workspace: root,
      home: root,
      logger: () => {},
    },
  };
});

afterEach(() => {
  for (const h of hosts.splice(0)) h.dispose();
});

afterAll(async () => {
  rig.server.closeAllConnections();
  rig.server.close();
  await rig.audit.close();
});

describe("httpOpen / httpRead / httpClose", () => {
  it("hands a QuickJS guest each chunk as it arrives, not the body at its end", async () => {
    const engine = await QuickJsEngine.create({
      source: GUEST,
      memoryMb: 24,
      stackKb: 256,
      timeoutMs: 10_000,
      name: "streamer",
    });
    try {
      const c = ctx();
      const h = new EnforcedHost(rig.deps, c);
      hosts.push(h);
      const out = (await engine.invoke(
        "stream",
        { url: `${rig.base}/gated`, ackUrl: `${rig.base}/ack` },
        c,
        h,
      )) as { status: number; type: string; chunks: string[] };
      expect(out).toEqual({ status: 200, type: "text/plain", chunks: ["one|", "two|", "three|"] });
      // Audited once at open (not per chunk), plus the three acknowledgements.
      const opens = auditActions().filter((e) => e.action === "net.http-open");
      expect(opens.map((e) => [e.decision, e.target])).toEqual([
        ["allow", `127.0.0.1:${new URL(rig.base).port}`],
      ]);
    } finally {
      await engine.stop();
    }
  });

  it("refuses a host outside the manifest's net, audited, before connecting", async () => {
    const h = host();
    await expect(h.httpOpen({ method: "GET", url: "http://10.1.2.3:80/x" })).rejects.toThrow(
      /^gate: /,
    );
    const last = auditActions().at(-1)!;
    expect([last.action, last.decision]).toEqual(["net.http-open", "deny"]);
  });

  it("caps open streams per call and frees the slot on close", async () => {
    const h = host();
    const heads = [];
    for (let i = 0; i < HOST_LIMITS.maxConcurrentHttp; i++) {
      heads.push(await h.httpOpen({ method: "GET", url: `${rig.base}/hold` }));
    }
    await expect(h.httpOpen({ method: "GET", url: `${rig.base}/hold` })).rejects.toEqual(
      new HostError("too_large", "at most 4 http requests and streams at once"),
    );
    await expect(h.httpRequest({ method: "GET", url: `${rig.base}/big?n=1` })).rejects.toThrow(
      "at most 4 http requests and streams at once",
    );
    await h.httpClose(heads[0]!.handle);
    const again = await h.httpOpen({ method: "GET", url: `${rig.base}/big?n=3` });
    expect(Buffer.concat(await readAll(h, again.handle)).toString()).toBe("aaa");
    await expect(h.httpRead(heads[0]!.handle, 10)).rejects.toEqual(
      new HostError("not_found", `no http stream with handle ${heads[0]!.handle}`),
    );
  });

  it("hands a large arrival out in pieces of at most maxHttpChunkBytes", async () => {
    const h = host();
    const n = 3 * HOST_LIMITS.maxHttpChunkBytes + 17;
    const head = await h.httpOpen({ method: "GET", url: `${rig.base}/big?n=${n}` });
    expect(head.headers["content-length"]).toBe(String(n));
    const pieces = await readAll(h, head.handle);
    expect(pieces.every((p) => p.length <= HOST_LIMITS.maxHttpChunkBytes)).toBe(true);
    expect(pieces.length).toBeGreaterThanOrEqual(4);
    expect(pieces.reduce((a, p) => a + p.length, 0)).toBe(n);
  });

  it("fails the read when the body passes maxHttpBodyBytes", async () => {
    const h = host();
    const n = HOST_LIMITS.maxHttpBodyBytes + 1;
    const head = await h.httpOpen({ method: "GET", url: `${rig.base}/big?n=${n}` });
    await expect(readAll(h, head.handle)).rejects.toEqual(
      new HostError("too_large", `response body over ${HOST_LIMITS.maxHttpBodyBytes} bytes`),
    );
  });

  it("reports a body cut mid-way as an io error, never as its end", async () => {
    const h = host();
    const head = await h.httpOpen({ method: "GET", url: `${rig.base}/cut` });
    await expect(readAll(h, head.handle)).rejects.toThrow(
      /^http stream from 127\.0\.0\.1:\d+ (closed before the body ended|broke: aborted)$/,
    );
  });

  it("answers an empty piece when nothing came within the read's timeout", async () => {
    const h = host();
    const head = await h.httpOpen({ method: "GET", url: `${rig.base}/hold` });
    expect(await h.httpRead(head.handle, 1)).toEqual(new Uint8Array(0));
  });

  it("closes the streams a call left open when the call ends", async () => {
    const h = host();
    const before = rig.closed.length;
    await h.httpOpen({ method: "GET", url: `${rig.base}/hold` });
    const serverSide = rig.closed[before]!;
    h.dispose();
    await serverSide; // resolves only once the server saw the connection go
    await expect(h.httpRead(1, 10)).rejects.toThrow("no http stream with handle 1");
  });
});

describe("streamDelta", () => {
  it("is a no-op answering false when the request named no stream inbox", async () => {
    expect(await host().streamDelta({ text: "x" })).toBe(false);
  });

  it("publishes llm.delta messages numbered from 0 to the named inbox, audited once", async () => {
    const sent: { subject: string; data: Uint8Array }[] = [];
    const subject = "_INBOX.caller.stream.s1";
    const engine = await QuickJsEngine.create({
      source: GUEST,
      memoryMb: 24,
      stackKb: 256,
      timeoutMs: 5000,
      name: "streamer",
    });
    try {
      const c = ctx();
      const h = new EnforcedHost(
        { ...rig.deps, stream: { subject, publish: (s, data) => sent.push({ subject: s, data }) } },
        c,
      );
      hosts.push(h);
      expect(await engine.invoke("deltas", {}, c, h)).toEqual([true, true, true]);
    } finally {
      await engine.stop();
    }
    expect(sent.map((m) => m.subject)).toEqual([subject, subject, subject]);
    const msgs = sent.map((m) => decode(m.data));
    expect(msgs.map((m) => [m.kind, m.session, m.principal, m.capsule])).toEqual(
      Array(3).fill(["llm.delta", "s1", "user:alice", "streamer"]),
    );
    expect(msgs.map((m) => m.body)).toEqual([
      { seq: 0, text: "Hel" },
      { seq: 1, toolUse: { id: "t1", name: "add", inputJson: '{"a"' } },
      { seq: 2, done: true },
    ]);
    const streams = auditActions().filter((e) => e.action === "llm.stream" && e.target === subject);
    expect(streams.map((e) => e.decision)).toEqual(["allow"]);
  });

  it("refuses a stream subject that is not a stream inbox, a reply inbox, or a wildcard", async () => {
    const publish = () => {
      throw new Error("must not publish");
    };
    await expect(
      host({ stream: { subject: "tool.v1.execute.rm", publish } }).streamDelta({ text: "x" }),
    ).rejects.toEqual(
      new HostError(
        "denied",
        'acl: stream subject "tool.v1.execute.rm" is not a stream inbox (_INBOX.*.stream.>); deltas go to inboxes only',
      ),
    );
    await expect(
      host({ stream: { subject: "_INBOX.>", publish } }).streamDelta({ text: "x" }),
    ).rejects.toEqual(
      new HostError(
        "denied",
        'acl: stream subject refused: subject "_INBOX.>" contains a wildcard; publish to a literal subject',
      ),
    );
    // A reply subject (_INBOX.<caller>.<id>) is refused: a provider must not forge a reply.
    await expect(
      host({ stream: { subject: "_INBOX.caller.abc123", publish } }).streamDelta({ text: "x" }),
    ).rejects.toThrow(/is not a stream inbox \(_INBOX\.\*\.stream\.>\)/);
  });
});

describe("sleep and utf8", () => {
  it("refuses a sleep that would pass the call's deadline", async () => {
    await expect(host({}, 1000).sleep(5000)).rejects.toEqual(
      new HostError("timeout", "sleeping 5000 ms would pass the call's deadline"),
    );
    await expect(host().sleep(1)).resolves.toBeUndefined();
  });

  it("gives QuickJS guests UTF-8 both ways, each invalid byte as U+FFFD", async () => {
    const engine = await QuickJsEngine.create({
      source: GUEST,
      memoryMb: 24,
      stackKb: 256,
      timeoutMs: 5000,
      name: "streamer",
    });
    try {
      const c = ctx();
      const text = "héllo € 𝄞";
      expect(await engine.invoke("roundTrip", { text }, c, host())).toEqual({
        n: Buffer.byteLength(text),
        back: text,
        bad: "a\uFFFD\uFFFD\uFFFD",
      });
    } finally {
      await engine.stop();
    }
  });
});
