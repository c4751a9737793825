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
// main.test.ts); a truncated or non-cryptographic hash would let two prompts share an answer —
// one crafted to collide could plant its answer for someone else's prompt. In the interpreter it
// costs ~0.5 µs a byte (bench/capsules.ts), the main cost of a hit on a long conversation.
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

// QuickJS interprets every operation, so the loop below is written for an interpreter: the
// message schedule in an Int32Array, the eight working variables as locals, the rotations
// inlined (a function call per rotation was most of the cost), 32-bit results kept with `| 0`.

const K = Int32Array.from([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const W = new Int32Array(64);

/**
 * UTF-8 bytes of a string, lone surrogates as U+FFFD (as the host's encoder does). The engine's
 * native encodeURIComponent does the encoding (the prelude's encoder, a guest loop growing an
 * array byte by byte, cost more than the hash on a long conversation); it throws on a lone
 * surrogate, and only then the guest loop runs.
 */
export function utf8Bytes(str) {
  let binary;
  try {
    binary = unescape(encodeURIComponent(str));
  } catch {
    return astrid.utf8.encode(str);
  }
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** The text of UTF-8 bytes, natively decoded; bytes that are not UTF-8 go to the host's decoder. */
export function utf8Text(input) {
  const bytes = input instanceof Uint8Array ? input : Uint8Array.from(input);
  const parts = [];
  for (let i = 0; i < bytes.length; i += 8192) {
    parts.push(String.fromCharCode.apply(null, bytes.subarray(i, i + 8192)));
  }
  try {
    return decodeURIComponent(escape(parts.join("")));
  } catch {
    return astrid.utf8.decode(bytes);
  }
}

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
  let h0 = 0x6a09e667 | 0;
  let h1 = 0xbb67ae85 | 0;
  let h2 = 0x3c6ef372 | 0;
  let h3 = 0xa54ff53a | 0;
  let h4 = 0x510e527f | 0;
  let h5 = 0x9b05688c | 0;
  let h6 = 0x1f83d9ab | 0;
  let h7 = 0x5be0cd19 | 0;
  const w = W;
  for (let off = 0; off < end; off += 64) {
    for (let i = 0, j = off; i < 16; i++, j += 4) {
      w[i] = (padded[j] << 24) | (padded[j + 1] << 16) | (padded[j + 2] << 8) | padded[j + 3];
    }
    for (let i = 16; i < 64; i++) {
      const x = w[i - 15];
      const y = w[i - 2];
      const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
      const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
    }
    let a = h0;
    let b = h1;
    let c = h2;
    let d = h3;
    let e = h4;
    let f = h5;
    let g = h6;
    let h = h7;
    for (let i = 0; i < 64; i++) {
      const S1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
      const t1 = (h + S1 + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
      const S0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
      const t2 = (S0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      h = g;
      g = f;
      f = e;
      e = (d + t1) | 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) | 0;
    }
    h0 = (h0 + a) | 0;
    h1 = (h1 + b) | 0;
    h2 = (h2 + c) | 0;
    h3 = (h3 + d) | 0;
    h4 = (h4 + e) | 0;
    h5 = (h5 + f) | 0;
    h6 = (h6 + g) | 0;
    h7 = (h7 + h) | 0;
  }
  return [h0, h1, h2, h3, h4, h5, h6, h7]
    .map((x) => (x >>> 0).toString(16).padStart(8, "0"))
    .join("");
}

// ── the key ──────────────────────────────────────────────────────────────────────────────────

/** A copy of a JSON value whose objects list their keys sorted; strings are not copied. */
function sortedKeys(value) {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) return value.map(sortedKeys);
  const out = {};
  for (const k of Object.keys(value).sort()) out[k] = sortedKeys(value[k]);
  return out;
}

/**
 * JSON with object keys sorted at every level, so field order never changes the key. The text
 * itself is written by the engine's native JSON.stringify (building it in guest code cost
 * milliseconds on a long conversation). Integer-like keys come first in numeric order, as every
 * engine enumerates them: still one text per value.
 */
export function canonicalJson(value) {
  return JSON.stringify(sortedKeys(value));
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
  return { key: sha256OfText(canonical), canonical };
}

/**
 * The host's native SHA-256 (`sys.sha256`) when the sidecar offers it — interpreted SHA-256
 * costs ~1 µs a byte, the host's ~1 ns — else the portable one below; both give the same hex.
 */
function sha256OfText(text) {
  const host = globalThis.astrid?.sys?.sha256;
  return typeof host === "function" ? host(text) : sha256Hex(utf8Bytes(text));
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
    return JSON.parse(utf8Text(bytes));
  } catch {
    return undefined;
  }
}

async function writeJson(key, value) {
  await astrid.kv.set(BUCKET, key, utf8Bytes(JSON.stringify(value)));
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

/**
 * Counts of this engine instance, loaded from kv on its first call. A miss or bypass writes them
 * back (it pays a model call anyway); a hit writes them at most every STATS_WRITE_MS, so the
 * path the cache exists for costs no kv write, and the stored counts lag by seconds at most.
 * (Replicas sharing the bucket overwrite each other's counts; each call's log line and its
 * metadata.cacheStats are the exact record.)
 */
const STATS_WRITE_MS = 5000;
let counts;
let countsWrittenAt = Number.NEGATIVE_INFINITY;

async function countStat(field, now) {
  if (counts === undefined) {
    const stats = (await readJson(STATS_KEY)) ?? {};
    counts = {
      hits: Number.isInteger(stats.hits) ? stats.hits : 0,
      misses: Number.isInteger(stats.misses) ? stats.misses : 0,
      bypasses: Number.isInteger(stats.bypasses) ? stats.bypasses : 0,
    };
  }
  counts[field]++;
  const next = { ...counts };
  if (field !== "hits" || now - countsWrittenAt >= STATS_WRITE_MS || now < countsWrittenAt) {
    await writeJson(STATS_KEY, next);
    countsWrittenAt = now;
  }
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

/**
 * A hit streams what the provider streamed, in one piece: the text, each tool call, done. A
 * request without a stream inbox (the host answers false) gets none of them.
 */
async function streamStored(content) {
  const text = content
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");
  const deltas = text ? [{ text }] : [];
  for (const p of content) {
    if (p.type === "tool_use") {
      deltas.push({
        toolUse: { id: p.id, name: p.name, inputJson: JSON.stringify(p.input ?? {}) },
      });
    }
  }
  deltas.push({ done: true });
  for (const d of deltas) if (!(await astrid.streamDelta(d))) return;
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
    const stats = await countStat("bypasses", Date.now());
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
      const stats = await countStat("hits", now);
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
  const stats = await countStat("misses", now);
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
