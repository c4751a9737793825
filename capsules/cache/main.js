// The response cache: serves `llm.v1.chat.cache` and sits in front of whatever the session binds
// its astrid.llm import to (a router, a provider). An identical deterministic request is answered
// from the capsule's kv bucket instead of calling the model again.
//
// What is cached, and why only that: a model at temperature > 0 gives a different answer each
// time, so replaying one answer would silently change what the caller asked for. A request is
// cached only when it is deterministic (`temperature === 0`) or the caller opts in
// (`metadata.cache === true`), or the operator sets CACHE_ALL=true; `metadata.cache === false`
// always bypasses. Error replies and answers with stopReason "error" are never stored, so a
// provider's bad minute is not replayed for an hour.
//
// The key is the SHA-256 of the canonical JSON (sorted keys) of the fields that decide the answer
// — model, messages, tools, maxTokens, temperature, stopSequences — plus the downstream capsule
// the cache is bound to. `stream` and `metadata` do not change the answer and are left out.
// QuickJS has no crypto, so SHA-256 is implemented below (checked against node:crypto in
// main.test.ts); a truncated or non-cryptographic hash would let two prompts share an answer.
//
// A hit costs nothing (usage 0, the provider was not called); the stored usage is reported in
// metadata.cachedUsage. Hits and misses are reported in metadata.cache and as an info log line.
// A miss passes the request on unchanged, `stream` included, so the provider streams straight to
// the caller; a hit streams the stored text as one delta.
//
// Calls on one QuickJS engine run one at a time, so the read-modify-write of the index below
// cannot interleave within this sidecar. Replicas sharing one kv bucket could lose an index
// update; the bound then holds only approximately, and an unindexed entry still expires by TTL.

const BUCKET = "cache";
const INDEX_KEY = "index";
const STATS_KEY = "stats";
const ENTRY_PREFIX = "e.";
const DEFAULT_TTL_SECONDS = 3600;
const DEFAULT_MAX_ENTRIES = 1000;
// The index of entries (key + stored-at) is one kv value of at most 1 MiB: ~80 bytes an entry.
const MAX_ENTRIES_LIMIT = 5000;
const DOWNSTREAM_TIMEOUT_MS = 300_000;

function fail(message) {
  throw new Error(`cache: ${message}`);
}

function config(name) {
  const v = astrid.sys.config(name);
  return v === undefined || v === null || v === "" ? undefined : v;
}

function positiveInt(name, fallback, max) {
  const raw = config(name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0 || n > max) {
    fail(`${name} must be an integer from 1 to ${max}, got "${raw}"`);
  }
  return n;
}

// ── SHA-256 (FIPS 180-4) ─────────────────────────────────────────────────────────────────────

const K = [
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

const rotr = (x, n) => (x >>> n) | (x << (32 - n));

/** SHA-256 of bytes, as lowercase hex. */
export function sha256Hex(bytes) {
  const len = bytes.length;
  // Message + 0x80 + zero padding + 64-bit big-endian bit length, to a multiple of 64 bytes.
  const padded = new Uint8Array((((len + 8) >>> 6) + 1) << 6);
  padded.set(bytes);
  padded[len] = 0x80;
  const bitsHigh = Math.floor(len / 0x20000000);
  const bitsLow = (len << 3) >>> 0;
  const end = padded.length;
  padded[end - 8] = bitsHigh >>> 24;
  padded[end - 7] = bitsHigh >>> 16;
  padded[end - 6] = bitsHigh >>> 8;
  padded[end - 5] = bitsHigh;
  padded[end - 4] = bitsLow >>> 24;
  padded[end - 3] = bitsLow >>> 16;
  padded[end - 2] = bitsLow >>> 8;
  padded[end - 1] = bitsLow;
  const h = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ];
  const w = new Array(64);
  for (let off = 0; off < end; off += 64) {
    for (let i = 0; i < 16; i++) {
      const j = off + i * 4;
      w[i] =
        ((padded[j] << 24) | (padded[j + 1] << 16) | (padded[j + 2] << 8) | padded[j + 3]) >>> 0;
    }
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
      const ch = (e & f) ^ (~e & g);
      const t1 = (hh + S1 + ch + K[i] + w[i]) >>> 0;
      const S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
      const maj = (a & b) ^ (a & c) ^ (b & c);
      const t2 = (S0 + maj) >>> 0;
      hh = g;
      g = f;
      f = e;
      e = (d + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    h[0] = (h[0] + a) >>> 0;
    h[1] = (h[1] + b) >>> 0;
    h[2] = (h[2] + c) >>> 0;
    h[3] = (h[3] + d) >>> 0;
    h[4] = (h[4] + e) >>> 0;
    h[5] = (h[5] + f) >>> 0;
    h[6] = (h[6] + g) >>> 0;
    h[7] = (h[7] + hh) >>> 0;
  }
  return h.map((x) => x.toString(16).padStart(8, "0")).join("");
}

// ── the key ──────────────────────────────────────────────────────────────────────────────────

/** JSON with object keys sorted at every level, so field order never changes the key. */
export function canonicalJson(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) {
    return `[${value.map((v) => (v === undefined ? "null" : canonicalJson(v))).join(",")}]`;
  }
  const keys = Object.keys(value)
    .filter((k) => value[k] !== undefined)
    .sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
}

const ANSWER_FIELDS = ["model", "messages", "tools", "maxTokens", "temperature", "stopSequences"];

/**
 * The cache key of a request sent on to `downstream`: `{ key, canonical }`. The same request to a
 * different downstream capsule is a different answer, so the binding is part of the key.
 */
export function cacheKey(input) {
  const { request, downstream } = input;
  const fields = { downstream };
  for (const f of ANSWER_FIELDS) if (request[f] !== undefined) fields[f] = request[f];
  const canonical = canonicalJson(fields);
  return { key: sha256Hex(astrid.utf8.encode(canonical)), canonical };
}

/** Whether a request may be answered from the cache: `{ cacheable, reason }`. */
export function cachePolicy(input) {
  const { request, cacheAll } = input;
  const asked = request.metadata?.cache;
  if (asked === false) return { cacheable: false, reason: "metadata.cache is false" };
  if (asked === true) return { cacheable: true, reason: "metadata.cache is true" };
  if (request.temperature === 0) return { cacheable: true, reason: "temperature is 0" };
  if (cacheAll) return { cacheable: true, reason: "CACHE_ALL is true" };
  return {
    cacheable: false,
    reason:
      request.temperature === undefined
        ? "temperature is not set (the provider's default is not deterministic)"
        : `temperature is ${request.temperature} (not deterministic)`,
  };
}

// ── the store ────────────────────────────────────────────────────────────────────────────────

async function readJson(key) {
  const bytes = await astrid.kv.get(BUCKET, key);
  if (bytes === null || bytes === undefined) return undefined;
  try {
    return JSON.parse(astrid.utf8.decode(bytes));
  } catch {
    return undefined;
  }
}

async function writeJson(key, value) {
  await astrid.kv.set(BUCKET, key, astrid.utf8.encode(JSON.stringify(value)));
}

/** Entries oldest first as [key, storedAt]; a corrupt index is rebuilt from the bucket. */
async function readIndex() {
  const index = await readJson(INDEX_KEY);
  if (Array.isArray(index?.entries)) return index.entries;
  const keys = await astrid.kv.list(BUCKET, ENTRY_PREFIX);
  const entries = [];
  for (const k of keys) {
    const e = await readJson(k);
    entries.push([k.slice(ENTRY_PREFIX.length), Number.isFinite(e?.storedAt) ? e.storedAt : 0]);
  }
  return entries.sort((a, b) => a[1] - b[1]);
}

async function forget(key) {
  await astrid.kv.delete(BUCKET, ENTRY_PREFIX + key);
  const entries = (await readIndex()).filter((e) => e[0] !== key);
  await writeJson(INDEX_KEY, { entries });
}

/** Stores an answer and evicts the oldest entries past the bound. */
async function store(key, response, now, maxEntries) {
  await writeJson(ENTRY_PREFIX + key, { storedAt: now, response });
  const entries = (await readIndex()).filter((e) => e[0] !== key);
  entries.push([key, now]);
  const evicted = entries.splice(0, Math.max(0, entries.length - maxEntries));
  for (const [old] of evicted) await astrid.kv.delete(BUCKET, ENTRY_PREFIX + old);
  await writeJson(INDEX_KEY, { entries });
  return evicted.length;
}

async function countStat(field) {
  const stats = (await readJson(STATS_KEY)) ?? {};
  const next = {
    hits: Number.isInteger(stats.hits) ? stats.hits : 0,
    misses: Number.isInteger(stats.misses) ? stats.misses : 0,
    bypasses: Number.isInteger(stats.bypasses) ? stats.bypasses : 0,
  };
  next[field]++;
  await writeJson(STATS_KEY, next);
  return next;
}

function isResponse(r) {
  return (
    r !== null &&
    typeof r === "object" &&
    typeof r.provider === "string" &&
    Array.isArray(r.content) &&
    typeof r.stopReason === "string"
  );
}

/** A hit streams what the provider streamed, in one piece: the text, each tool call, done. */
async function streamStored(content) {
  const text = content
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");
  if (text) await astrid.streamDelta({ text });
  for (const p of content) {
    if (p.type === "tool_use") {
      await astrid.streamDelta({
        toolUse: { id: p.id, name: p.name, inputJson: JSON.stringify(p.input ?? {}) },
      });
    }
  }
  await astrid.streamDelta({ done: true });
}

// ── the handler ──────────────────────────────────────────────────────────────────────────────

export async function chat(request) {
  const downstream = config("bind.astrid.llm");
  if (!downstream) fail("no capsule is bound to the astrid.llm import (bind.astrid.llm is unset)");
  const ttlMs = positiveInt("CACHE_TTL_SECONDS", DEFAULT_TTL_SECONDS, 10 * 365 * 86400) * 1000;
  const maxEntries = positiveInt("CACHE_MAX_ENTRIES", DEFAULT_MAX_ENTRIES, MAX_ENTRIES_LIMIT);
  const cacheAll = config("CACHE_ALL") === "true";
  const subject = `llm.v1.chat.${downstream}`;
  const policy = cachePolicy({ request, cacheAll });

  if (!policy.cacheable) {
    const reply = await astrid.ipc.call(
      subject,
      "llm.chat.request",
      request,
      DOWNSTREAM_TIMEOUT_MS,
    );
    const stats = await countStat("bypasses");
    astrid.log("info", "cache bypass", { reason: policy.reason, downstream });
    return {
      ...reply,
      metadata: {
        ...reply.metadata,
        cache: "bypass",
        cacheReason: policy.reason,
        cacheStats: stats,
      },
    };
  }

  const { key } = cacheKey({ request, downstream });
  const now = Date.now();
  const entry = await readJson(ENTRY_PREFIX + key);
  let missReason = "not in the cache";
  if (entry !== undefined) {
    const age = now - entry.storedAt;
    if (!Number.isFinite(entry.storedAt) || !isResponse(entry.response)) {
      missReason = "the stored entry was unreadable";
      await forget(key);
    } else if (age > ttlMs || age < 0) {
      missReason = `the stored entry expired (${Math.floor(age / 1000)} s old, TTL ${ttlMs / 1000} s)`;
      await forget(key);
    } else {
      const stats = await countStat("hits");
      astrid.log("info", "cache hit", { key: key.slice(0, 16), ageMs: age, downstream });
      const stored = entry.response;
      await streamStored(stored.content);
      return {
        ...stored,
        // Nobody was paid and no tokens were processed for this answer.
        usage: { inputTokens: 0, outputTokens: 0, costMicroUsd: 0 },
        metadata: {
          ...stored.metadata,
          cache: "hit",
          cacheKey: key,
          cacheAgeMs: age,
          cachedUsage: stored.usage,
          cacheStats: stats,
        },
      };
    }
  }

  // An error reply throws here and is never stored.
  const reply = await astrid.ipc.call(subject, "llm.chat.request", request, DOWNSTREAM_TIMEOUT_MS);
  let evicted = 0;
  const storable = isResponse(reply) && reply.stopReason !== "error";
  if (storable) evicted = await store(key, reply, now, maxEntries);
  const stats = await countStat("misses");
  astrid.log("info", "cache miss", {
    key: key.slice(0, 16),
    reason: missReason,
    stored: storable,
    evicted,
    downstream,
  });
  return {
    ...reply,
    metadata: {
      ...reply.metadata,
      cache: "miss",
      cacheKey: key,
      cacheReason: missReason,
      cacheStored: storable,
      cacheStats: stats,
    },
  };
}
