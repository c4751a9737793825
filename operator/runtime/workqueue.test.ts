import { describe, expect, it } from "vitest";
import { ItemExponentialBackoff, RateLimiter, TokenBucket } from "./rate-limiter.js";
import { WorkQueue } from "./workqueue.js";

describe("WorkQueue", () => {
  it("hands out a key added many times once", async () => {
    const q = new WorkQueue();
    for (let i = 0; i < 10; i++) q.add("ns/a");
    q.add("ns/b");
    expect(q.length).toBe(2);
    expect(await q.get()).toBe("ns/a");
    expect(await q.get()).toBe("ns/b");
    expect(q.length).toBe(0);
  });

  it("never hands a key being processed to a second worker; a re-add waits for done", async () => {
    const q = new WorkQueue();
    q.add("k");
    const first = await q.get();
    expect(first).toBe("k");
    q.add("k");
    q.add("k");
    expect(q.length).toBe(0);
    let second: string | undefined;
    const waiting = q.get().then((k) => {
      second = k;
    });
    await Promise.resolve();
    expect(second).toBeUndefined();
    q.done("k");
    await waiting;
    expect(second).toBe("k");
    q.done("k");
    expect(q.length).toBe(0);
  });

  it("a key added to an empty queue goes straight to a waiting worker", async () => {
    const q = new WorkQueue();
    const got = q.get();
    q.add("x");
    expect(await got).toBe("x");
    q.add("x"); // while processing: dirty, not handed out
    expect(q.length).toBe(0);
    q.done("x");
    expect(q.length).toBe(1);
  });

  it("addAfter delivers the key later and keeps only the earliest pending add", async () => {
    const q = new WorkQueue();
    q.addAfter("d", 60_000);
    q.addAfter("d", 1);
    expect(q.length).toBe(0);
    expect(await q.get()).toBe("d");
    q.done("d");
    q.shutdown();
  });

  it("addRateLimited backs off more with each failure and forget resets it", () => {
    const q = new WorkQueue();
    expect(q.numRequeues("k")).toBe(0);
    q.addRateLimited("k");
    q.addRateLimited("k");
    expect(q.numRequeues("k")).toBe(2);
    q.forget("k");
    expect(q.numRequeues("k")).toBe(0);
    q.shutdown();
  });

  it("shutdown wakes waiting workers with undefined and ignores later adds", async () => {
    const q = new WorkQueue();
    const waiting = q.get();
    q.shutdown();
    expect(await waiting).toBeUndefined();
    q.add("late");
    expect(q.length).toBe(0);
    expect(await q.get()).toBeUndefined();
  });
});

describe("rate limiting", () => {
  it("per-key backoff doubles from 5 ms and caps at 1000 s", () => {
    const b = new ItemExponentialBackoff();
    const delays = Array.from({ length: 6 }, () => b.when("k"));
    expect(delays).toEqual([5, 10, 20, 40, 80, 160]);
    for (let i = 0; i < 100; i++) b.when("k");
    expect(b.when("k")).toBe(1_000_000);
    expect(b.when("other")).toBe(5);
    b.forget("k");
    expect(b.when("k")).toBe(5);
  });

  it("the token bucket allows a burst, then spaces requests by 1/qps", () => {
    let now = 0;
    const bucket = new TokenBucket(2, 2, () => now);
    expect(bucket.reserve()).toBe(0);
    expect(bucket.reserve()).toBe(0);
    expect(bucket.reserve()).toBe(500);
    expect(bucket.reserve()).toBe(1000);
    now = 10_000;
    expect(bucket.reserve()).toBe(0);
  });

  it("the combined limiter waits for the larger of backoff and bucket", () => {
    const limiter = new RateLimiter({ qps: 1, burst: 1, now: () => 0 });
    expect(limiter.when("a")).toBe(5);
    expect(limiter.when("b")).toBe(1000);
  });
});
