/**
 * The JetStream kv store against a real nats-server: what one replica writes another reads,
 * scopes cannot see each other whatever their keys hold, and a broken bucket is an error to
 * the guest, never a miss.
 */
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsServerHandle, startNatsServer } from "../../test/harness/nats-server.js";
import { HostError } from "../abi/host.js";
import {
  defaultKvBucket,
  escapeKvToken,
  JetStreamKvStore,
  unescapeKvToken,
} from "./kv-jetstream.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));

let nats: NatsServerHandle;
const conns: NatsConnection[] = [];

async function conn(url = nats.url): Promise<NatsConnection> {
  const nc = await connect({ servers: url });
  conns.push(nc);
  return nc;
}

beforeAll(async () => {
  nats = await startNatsServer({ maxPayload: 64 * 1024 });
});

afterAll(async () => {
  for (const nc of conns) await nc.close();
  await nats?.dispose();
});

async function errorOf(p: Promise<unknown>): Promise<HostError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(HostError);
  return e as HostError;
}

describe("JetStreamKvStore", () => {
  it("is shared by replicas: what one sidecar writes another reads, lists and deletes", async () => {
    const a = await JetStreamKvStore.open(await conn(), { bucket: defaultKvBucket("cache") });
    const b = await JetStreamKvStore.open(await conn(), { bucket: "astrid-kv-cache" });
    await a.set("cache.cache", "e.1", enc("one"));
    await a.set("cache.cache", "e.2", enc("two"));
    await a.set("cache.cache", "index", enc("[]"));
    expect(dec(await b.get("cache.cache", "e.1"))).toBe("one");
    expect(await b.list("cache.cache", "e.")).toEqual(["e.1", "e.2"]);
    expect(await b.list("cache.cache", "")).toEqual(["e.1", "e.2", "index"]);
    await b.set("cache.cache", "e.1", enc("uno"));
    expect(dec(await a.get("cache.cache", "e.1"))).toBe("uno");
    await b.delete("cache.cache", "e.2");
    expect(await a.get("cache.cache", "e.2")).toBeNull();
    expect(await a.list("cache.cache", "e.")).toEqual(["e.1"]);
    expect(await a.get("cache.cache", "never-written")).toBeNull();
    await a.delete("cache.cache", "never-written");
  });

  it("keeps scopes apart whatever their keys hold: dots, wildcards, = and non-ASCII", async () => {
    const kv = await JetStreamKvStore.open(await conn(), { bucket: "astrid-kv-scopes" });
    const keys = ["a.b", "*", ">", "a.>", "=41", "naïve ✓", " spaced ", "a/b-c_d"];
    for (const k of keys) await kv.set("one.cache", k, enc(`one:${k}`));
    await kv.set("one.cache.x", "y", enc("a scope that extends another's name"));
    await kv.set("two.cache", "a.b", enc("two"));
    for (const k of keys) expect(dec(await kv.get("one.cache", k))).toBe(`one:${k}`);
    expect(await kv.list("one.cache", "")).toEqual([...keys].sort());
    expect(await kv.list("one.cache", "a")).toEqual(["a.>", "a.b", "a/b-c_d"]);
    expect(await kv.list("two.cache", "")).toEqual(["a.b"]);
    expect(await kv.get("two.cache", "*")).toBeNull();
    expect(await kv.list("one.cache.x", "")).toEqual(["y"]);
  });

  it("escapes every string into one NATS token and back", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme", minLength: 1, maxLength: 40 }), (s) => {
        const t = escapeKvToken(s);
        expect(t).toMatch(/^[A-Za-z0-9_/=-]+$/);
        expect(unescapeKvToken(t)).toBe(s);
      }),
    );
    expect(escapeKvToken("a.b*>=ü")).toBe("a=2Eb=2A=3E=3D=C3=BC");
  });

  it("refuses a value the server's max_payload cannot carry, naming both sizes", async () => {
    const kv = await JetStreamKvStore.open(await conn(), { bucket: "astrid-kv-big" });
    const e = await errorOf(kv.set("c.cache", "k", new Uint8Array(60 * 1024)));
    expect(e.code).toBe("too_large");
    expect(e.message).toBe(
      "kv set: a value of 61440 bytes does not fit the NATS server's max_payload of 65536 bytes",
    );
    expect(await kv.get("c.cache", "k")).toBeNull();
  });

  it("fails closed: a bucket that is gone is an error to the guest, not a miss", async () => {
    const nc = await conn();
    const kv = await JetStreamKvStore.open(nc, { bucket: "astrid-kv-gone", timeoutMs: 2000 });
    await kv.set("c.cache", "k", enc("v"));
    await (await jetstreamManager(nc)).streams.delete("KV_astrid-kv-gone");
    const get = await errorOf(kv.get("c.cache", "k"));
    expect(get.code).toBe("unavailable");
    expect(get.message).toMatch(/^kv get: JetStream bucket astrid-kv-gone failed: /);
    expect((await errorOf(kv.list("c.cache", ""))).code).toBe("unavailable");
    expect((await errorOf(kv.set("c.cache", "k", enc("v")))).code).toBe("unavailable");
  });

  it("does not open without JetStream: the sidecar's start fails instead", async () => {
    const plain = await startNatsServer({ jetstream: false });
    try {
      const nc = await conn(plain.url);
      const err = await JetStreamKvStore.open(nc, { bucket: "astrid-kv-x", timeoutMs: 2000 }).then(
        () => undefined,
        (e: unknown) => e as Error,
      );
      expect(err).toBeInstanceOf(Error);
    } finally {
      await plain.dispose();
    }
  });
});
