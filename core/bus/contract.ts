/**
 * The Bus contract: one suite every implementation must pass, so the local daemon (embedded
 * bus) and the cluster (NATS) route, balance, answer and fail identically. Used by
 * embedded.test.ts and nats.test.ts. No timing is asserted: "nothing else arrives" is
 * checked after `flush()`, which both implementations define as "delivered".
 */
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import type { Bus, BusMessage, BusStatus } from "./bus.js";
import {
  BusClosedError,
  HandlerError,
  HeaderError,
  NoReplySubjectError,
  NoRespondersError,
  PayloadTooLargeError,
  QueueNameError,
  RequestTimeoutError,
  SubjectError,
} from "./errors.js";

export interface BusUnderTest {
  bus: Bus;
  extra?: {
    /** A second client on the same bus (a second NATS connection); defaults to `bus`. */
    peer?: Bus;
    /** Extra cleanup after both buses are closed. */
    dispose?: () => Promise<void>;
  };
}

export type MakeBus = (opts: { onError: (err: Error) => void }) => Promise<BusUnderTest>;

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

class Collector {
  readonly msgs: BusMessage[] = [];
  private waiters: { n: number; resolve: () => void }[] = [];

  readonly handler = (m: BusMessage): void => {
    this.msgs.push(m);
    this.waiters = this.waiters.filter((w) => {
      if (this.msgs.length < w.n) return true;
      w.resolve();
      return false;
    });
  };

  get subjects(): string[] {
    return this.msgs.map((m) => m.subject);
  }

  /** Resolves once `n` messages arrived (the test's own timeout bounds the wait). */
  atLeast(n: number): Promise<void> {
    if (this.msgs.length >= n) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ n, resolve }));
  }
}

export function busContract(name: string, makeBus: MakeBus): void {
  describe(`Bus contract: ${name}`, () => {
    const opened: BusUnderTest[] = [];
    const errors: Error[] = [];
    let prefix = "";

    async function open(): Promise<{ bus: Bus; peer: Bus; settle: () => Promise<void> }> {
      const made = await makeBus({ onError: (e) => errors.push(e) });
      opened.push(made);
      const bus = made.bus;
      const peer = made.extra?.peer ?? bus;
      // Flushing both sides means every SUB reached the server before a peer publishes,
      // and every message published so far has been handed to its handlers.
      const settle = async () => {
        await peer.flush();
        await bus.flush();
        await peer.flush();
      };
      prefix = `t${randomBytes(4).toString("hex")}`;
      return { bus, peer, settle };
    }

    afterEach(async () => {
      for (const m of opened.splice(0)) {
        await m.bus.close();
        await m.extra?.peer?.close();
        await m.extra?.dispose?.();
      }
      errors.length = 0;
    });

    it("delivers a message with its subject and data, empty headers and no reply", async () => {
      const { bus, peer, settle } = await open();
      const c = new Collector();
      bus.subscribe(`${prefix}.greet`, c.handler);
      await settle();
      peer.publish(`${prefix}.greet`, enc("hello"));
      await c.atLeast(1);
      const m = c.msgs[0]!;
      expect(m.subject).toBe(`${prefix}.greet`);
      expect(dec(m.data)).toBe("hello");
      expect(m.headers).toEqual({});
      expect(m.reply).toBeUndefined();
    });

    it("never runs a handler inside publish", async () => {
      const { bus } = await open();
      let called = false;
      bus.subscribe(`${prefix}.async`, () => {
        called = true;
      });
      bus.publish(`${prefix}.async`, enc("x"));
      expect(called).toBe(false);
      await bus.flush();
      expect(called).toBe(true);
    });

    it('"*" matches exactly one token', async () => {
      const { bus, peer, settle } = await open();
      const c = new Collector();
      bus.subscribe(`${prefix}.a.*`, c.handler);
      await settle();
      for (const s of ["a", "a.b", "a.b.c", "x.b", "a.c"]) peer.publish(`${prefix}.${s}`, enc(s));
      await settle();
      expect(c.subjects).toEqual([`${prefix}.a.b`, `${prefix}.a.c`]);
    });

    it('">" matches one or more trailing tokens, never zero', async () => {
      const { bus, peer, settle } = await open();
      const c = new Collector();
      bus.subscribe(`${prefix}.a.>`, c.handler);
      await settle();
      for (const s of ["a", "a.b", "a.b.c", "b.a.c"]) peer.publish(`${prefix}.${s}`, enc(s));
      await settle();
      expect(c.subjects).toEqual([`${prefix}.a.b`, `${prefix}.a.b.c`]);
    });

    it("gives every overlapping subscription exactly one copy", async () => {
      const { bus, peer, settle } = await open();
      const patterns = ["x.y", "*.y", "x.*", "*.*", "x.>", ">"].map((p) => `${prefix}.${p}`);
      const collectors = patterns.map((p) => {
        const c = new Collector();
        bus.subscribe(p, c.handler);
        return c;
      });
      const miss = new Collector();
      bus.subscribe(`${prefix}.x`, miss.handler);
      await settle();
      peer.publish(`${prefix}.x.y`, enc("once"));
      await settle();
      expect(collectors.map((c) => c.msgs.length)).toEqual([1, 1, 1, 1, 1, 1]);
      expect(miss.msgs).toHaveLength(0);
    });

    it("refuses wildcard and malformed subjects, patterns and queue names", async () => {
      const { bus } = await open();
      expect(() => bus.publish("a.*", enc(""))).toThrow(
        new SubjectError('subject "a.*" contains a wildcard; publish to a literal subject'),
      );
      expect(() => bus.publish("a..b", enc(""))).toThrow(
        new SubjectError('subject "a..b" has an empty token (leading, trailing or double dot)'),
      );
      expect(() => bus.publish("a.b", enc(""), { reply: "r.>" })).toThrow(
        new SubjectError('subject "r.>" contains a wildcard; publish to a literal subject'),
      );
      expect(() => bus.subscribe("a.>.b", () => {})).toThrow(
        new SubjectError('pattern "a.>.b": ">" is only allowed as the last token'),
      );
      expect(() => bus.subscribe("a.b", () => {}, { queue: "q 1" })).toThrow(
        new QueueNameError(
          'queue group "q 1" is invalid: expected a non-empty name without whitespace, "*" or ">"',
        ),
      );
      await expect(bus.request("a.*", enc(""), { timeoutMs: 100 })).rejects.toThrow(
        new SubjectError('subject "a.*" contains a wildcard; publish to a literal subject'),
      );
    });

    it("refuses headers that could break the wire format", async () => {
      const { bus } = await open();
      expect(() => bus.publish("a.b", enc(""), { headers: { "X-Id": "1\r\nEvil: 1" } })).toThrow(
        new HeaderError('header "X-Id" contains a line break'),
      );
      expect(() => bus.publish("a.b", enc(""), { headers: { "X Id": "1" } })).toThrow(
        new HeaderError(
          'header name "X Id" is invalid: expected printable ASCII without ":" or spaces',
        ),
      );
    });

    it("gives each queue group one copy per message and plain subscribers every message", async () => {
      const { bus, peer, settle } = await open();
      const subject = `${prefix}.work`;
      const g1 = new Collector();
      const g2 = new Collector();
      const other = new Collector();
      const plain = new Collector();
      bus.subscribe(subject, g1.handler, { queue: "workers" });
      bus.subscribe(subject, g2.handler, { queue: "workers" });
      bus.subscribe(subject, other.handler, { queue: "auditors" });
      bus.subscribe(subject, plain.handler);
      await settle();
      const n = 200;
      for (let i = 0; i < n; i++) peer.publish(subject, enc(String(i)));
      await settle();
      expect(g1.msgs.length + g2.msgs.length).toBe(n);
      // Both members share the load (random or round-robin: 0 of 200 has odds 2^-199).
      expect(g1.msgs.length).toBeGreaterThan(0);
      expect(g2.msgs.length).toBeGreaterThan(0);
      const seen = new Set([...g1.msgs, ...g2.msgs].map((m) => dec(m.data)));
      expect(seen.size).toBe(n);
      expect(other.msgs).toHaveLength(n);
      expect(plain.msgs).toHaveLength(n);
    });

    it("delivers in publish order per subscription", async () => {
      const { bus, peer, settle } = await open();
      const c = new Collector();
      bus.subscribe(`${prefix}.seq`, c.handler);
      await settle();
      const n = 500;
      for (let i = 0; i < n; i++) peer.publish(`${prefix}.seq`, enc(String(i)));
      await c.atLeast(n);
      expect(c.msgs.map((m) => Number(dec(m.data)))).toEqual([...Array(n).keys()]);
    });

    it("answers a request, carrying headers both ways", async () => {
      const { bus, peer, settle } = await open();
      const seen: BusMessage[] = [];
      bus.subscribe(`${prefix}.echo`, (m) => {
        seen.push(m);
        m.respond(enc(`re:${dec(m.data)}`), { headers: { "X-Reply-Id": m.headers["X-Call-Id"]! } });
      });
      await settle();
      const r = await peer.request(`${prefix}.echo`, enc("ping"), {
        timeoutMs: 5000,
        headers: { "X-Call-Id": "c-1", trace: " t " },
      });
      expect(dec(r.data)).toBe("re:ping");
      expect(r.headers).toEqual({ "X-Reply-Id": "c-1" });
      expect(seen[0]!.headers).toEqual({ "X-Call-Id": "c-1", trace: "t" });
      expect(seen[0]!.reply).toMatch(/^_INBOX\./);
    });

    it("sends a request to one member of a queue group", async () => {
      const { bus, peer, settle } = await open();
      let calls = 0;
      for (const id of ["a", "b"]) {
        bus.subscribe(
          `${prefix}.svc`,
          (m) => {
            calls++;
            m.respond(enc(id));
          },
          { queue: "svc" },
        );
      }
      await settle();
      for (let i = 0; i < 10; i++) {
        const r = await peer.request(`${prefix}.svc`, enc(""), { timeoutMs: 5000 });
        expect(["a", "b"]).toContain(dec(r.data));
      }
      await settle();
      expect(calls).toBe(10);
    });

    it("rejects a request nobody listens to with NoRespondersError", async () => {
      const { peer } = await open();
      const subject = `${prefix}.tool.v1.execute.x`;
      await expect(peer.request(subject, enc(""), { timeoutMs: 5000 })).rejects.toThrow(
        new NoRespondersError(subject),
      );
      await expect(peer.request(subject, enc(""), { timeoutMs: 5000 })).rejects.toThrow(
        `no responders for "${subject}"`,
      );
    });

    it("rejects a request whose responder never answers with RequestTimeoutError", async () => {
      const { bus, peer, settle } = await open();
      const subject = `${prefix}.silent`;
      const c = new Collector();
      bus.subscribe(subject, c.handler);
      await settle();
      const err = await peer.request(subject, enc(""), { timeoutMs: 50 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RequestTimeoutError);
      expect((err as Error).message).toBe(`request to "${subject}" timed out after 50 ms`);
      expect(c.msgs).toHaveLength(1);
    });

    it("refuses to respond to a message without a reply subject", async () => {
      const { bus } = await open();
      const c = new Collector();
      bus.subscribe(`${prefix}.plain`, c.handler);
      bus.publish(`${prefix}.plain`, enc(""));
      await c.atLeast(1);
      expect(() => c.msgs[0]!.respond(enc("x"))).toThrow(
        new NoReplySubjectError(`${prefix}.plain`),
      );
    });

    it("carries an explicit reply subject to an inbox", async () => {
      const { bus, peer, settle } = await open();
      const inbox = peer.newInbox();
      expect(inbox).toMatch(/^_INBOX\.\S+$/);
      expect(peer.newInbox()).not.toBe(inbox);
      const answers = new Collector();
      peer.subscribe(inbox, answers.handler);
      bus.subscribe(`${prefix}.ask`, (m) => m.respond(enc(`to ${m.reply}`)));
      await settle();
      peer.publish(`${prefix}.ask`, enc("?"), { reply: inbox });
      await answers.atLeast(1);
      expect(dec(answers.msgs[0]!.data)).toBe(`to ${inbox}`);
    });

    it("stops a subscription after max messages", async () => {
      const { bus, peer, settle } = await open();
      const c = new Collector();
      bus.subscribe(`${prefix}.max`, c.handler, { max: 3 });
      await settle();
      for (let i = 0; i < 5; i++) peer.publish(`${prefix}.max`, enc(String(i)));
      await settle();
      peer.publish(`${prefix}.max`, enc("late"));
      await settle();
      expect(c.msgs.map((m) => dec(m.data))).toEqual(["0", "1", "2"]);
    });

    it("unsubscribe stops delivery at once, even of messages already published", async () => {
      const { bus } = await open();
      const c = new Collector();
      const sub = bus.subscribe(`${prefix}.unsub`, c.handler);
      for (let i = 0; i < 5; i++) bus.publish(`${prefix}.unsub`, enc(String(i)));
      sub.unsubscribe();
      sub.unsubscribe();
      await bus.flush();
      bus.publish(`${prefix}.unsub`, enc("after"));
      await bus.flush();
      expect(c.msgs).toHaveLength(0);
    });

    it("drain delivers what was published before it, then nothing", async () => {
      const { bus } = await open();
      const c = new Collector();
      const sub = bus.subscribe(`${prefix}.drain`, c.handler);
      expect(sub.pattern).toBe(`${prefix}.drain`);
      expect(sub.queue).toBeUndefined();
      for (let i = 0; i < 5; i++) bus.publish(`${prefix}.drain`, enc(String(i)));
      await sub.drain();
      expect(c.msgs).toHaveLength(5);
      bus.publish(`${prefix}.drain`, enc("after"));
      await bus.flush();
      expect(c.msgs).toHaveLength(5);
    });

    it("refuses payloads over maxPayload and accepts one of exactly maxPayload", async () => {
      const { bus } = await open();
      const max = bus.maxPayload;
      expect(max).toBe(1024 * 1024);
      expect(() => bus.publish(`${prefix}.big`, new Uint8Array(max + 1))).toThrow(
        new PayloadTooLargeError(max + 1, max),
      );
      expect(() => bus.publish(`${prefix}.big`, new Uint8Array(2_000_000))).toThrow(
        "payload of 2000000 bytes exceeds the bus limit of 1048576 bytes",
      );
      await expect(
        bus.request(`${prefix}.big`, new Uint8Array(max + 1), { timeoutMs: 100 }),
      ).rejects.toThrow(new PayloadTooLargeError(max + 1, max));
      const c = new Collector();
      bus.subscribe(`${prefix}.big`, c.handler);
      bus.publish(`${prefix}.big`, new Uint8Array(max).fill(7));
      await c.atLeast(1);
      expect(c.msgs[0]!.data.length).toBe(max);
      expect(c.msgs[0]!.data[max - 1]).toBe(7);
    });

    it("refuses every operation after close, and close is idempotent", async () => {
      const { bus } = await open();
      const statuses: BusStatus[] = [];
      bus.onStatus((s) => statuses.push(s));
      const c = new Collector();
      bus.subscribe(`${prefix}.closing`, c.handler);
      bus.publish(`${prefix}.closing`, enc("before"));
      await bus.close();
      // close drains: what was published before it is delivered.
      expect(c.msgs).toHaveLength(1);
      await bus.close();
      expect(statuses).toEqual(["closed"]);
      expect(() => bus.publish(`${prefix}.closing`, enc(""))).toThrow(BusClosedError);
      expect(() => bus.subscribe(`${prefix}.closing`, () => {})).toThrow(
        new BusClosedError().message,
      );
      await expect(bus.request(`${prefix}.closing`, enc(""), { timeoutMs: 100 })).rejects.toThrow(
        BusClosedError,
      );
      await expect(bus.flush()).rejects.toThrow(BusClosedError);
    });

    it("rejects a pending request with BusClosedError when the bus closes", async () => {
      const { bus, settle } = await open();
      bus.subscribe(`${prefix}.never`, () => {});
      await settle();
      const pending = bus.request(`${prefix}.never`, enc(""), { timeoutMs: 30_000 });
      await settle();
      const closing = bus.close();
      await expect(pending).rejects.toThrow(new BusClosedError());
      await closing;
    });

    it("keeps delivering when handlers throw or reject, and reports them through onError", async () => {
      const { bus } = await open();
      const subject = `${prefix}.fail`;
      let thrown = 0;
      bus.subscribe(subject, () => {
        thrown++;
        throw new Error("boom");
      });
      bus.subscribe(subject, async () => {
        throw new Error("async boom");
      });
      const ok = new Collector();
      bus.subscribe(subject, ok.handler);
      bus.publish(subject, enc("1"));
      bus.publish(subject, enc("2"));
      await ok.atLeast(2);
      await bus.flush();
      expect(thrown).toBe(2);
      expect(ok.msgs).toHaveLength(2);
      const messages = errors.map((e) => e.message).sort();
      expect(errors.every((e) => e instanceof HandlerError)).toBe(true);
      expect(messages).toEqual([
        `handler for "${subject}" failed on "${subject}": async boom`,
        `handler for "${subject}" failed on "${subject}": async boom`,
        `handler for "${subject}" failed on "${subject}": boom`,
        `handler for "${subject}" failed on "${subject}": boom`,
      ]);
    });
  });
}
