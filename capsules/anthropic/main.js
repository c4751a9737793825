// The Anthropic provider: serves `llm.v1.chat.anthropic` by calling the Messages API
// (`POST {base}/v1/messages`, `stream: true`) and passing the model's output to the caller as it
// comes — each text or tool-argument fragment becomes an `llm.delta` on the caller's stream
// inbox the moment its SSE event is read — then answering with the whole turn, its usage and
// its cost.
//
// Failure is never passed off as an answer: a stream that ends before `message_stop`, an event
// that is not JSON, or tool arguments that do not parse fail the call with a clear error, even
// if text was already streamed. Rate limits (429) and overload (529) are retried with
// exponential backoff that honours `retry-after`, within the call's deadline.
//
// Money is integer micro-USD (BigInt arithmetic, rounded up): a call's cost comes from the
// ANTHROPIC_PRICES table, and a model missing from it is refused before any request is sent,
// because a call the ledger cannot price is a call the budget cannot bound.

const API_VERSION = "2023-06-01";
/** The API's own kinds of failure, mapped to the error codes our callers branch on. */
const CODE_OF_ERROR_TYPE = {
  invalid_request_error: "invalid",
  authentication_error: "denied",
  permission_error: "denied",
  not_found_error: "not_found",
  request_too_large: "too_large",
  rate_limit_error: "unavailable",
  api_error: "unavailable",
  overloaded_error: "unavailable",
};
const STOP_REASONS = {
  end_turn: "end_turn",
  tool_use: "tool_use",
  max_tokens: "max_tokens",
  stop_sequence: "stop_sequence",
  // A turn the server paused or the model refused still ends the turn; the raw reason is kept
  // in metadata so a caller can tell.
  pause_turn: "end_turn",
  refusal: "end_turn",
};
const READ_WAIT_MS = 30_000;

function fail(message, code) {
  const err = new Error(`anthropic: ${message}`);
  if (code) err.code = code;
  throw err;
}

function config(name, fallback) {
  const v = astrid.sys.config(name);
  return v === undefined || v === null || v === "" ? fallback : v;
}

function positiveInt(name, fallback) {
  const raw = config(name, String(fallback));
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) fail(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

// ── prices ───────────────────────────────────────────────────────────────────────────────────

function priceOf(model) {
  let table;
  try {
    table = JSON.parse(config("ANTHROPIC_PRICES", "{}"));
  } catch (err) {
    fail(`ANTHROPIC_PRICES is not JSON: ${err.message}`);
  }
  const p = table?.[model];
  if (!p) {
    fail(
      `no price for model "${model}" in ANTHROPIC_PRICES; expected { "${model}": { "inputPerMTok": µUSD, "outputPerMTok": µUSD } }`,
      "invalid",
    );
  }
  for (const k of ["inputPerMTok", "outputPerMTok"]) {
    if (!Number.isSafeInteger(p[k]) || p[k] < 0) {
      fail(`ANTHROPIC_PRICES["${model}"].${k} must be a non-negative integer of micro-USD`);
    }
  }
  return p;
}

/** Micro-USD for the tokens used, rounded up so a call is never charged less than it cost. */
function costMicroUsd(price, inputTokens, outputTokens) {
  const total =
    BigInt(inputTokens) * BigInt(price.inputPerMTok) +
    BigInt(outputTokens) * BigInt(price.outputPerMTok);
  return Number((total + 999_999n) / 1_000_000n);
}

// ── request mapping ──────────────────────────────────────────────────────────────────────────

function textOf(content) {
  if (typeof content === "string") return content;
  return content
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");
}

function partsOf(role, content) {
  if (typeof content === "string") {
    if (role === "tool") fail("a tool message needs tool_result parts, got a string", "invalid");
    return [{ type: "text", text: content }];
  }
  return content.map((p) => {
    switch (p.type) {
      case "text":
        return { type: "text", text: p.text };
      case "tool_use":
        return { type: "tool_use", id: p.id, name: p.name, input: p.input };
      case "tool_result":
        return {
          type: "tool_result",
          tool_use_id: p.toolUseId,
          content: p.content,
          ...(p.isError ? { is_error: true } : {}),
        };
      default:
        return fail(`unknown content part type "${p.type}"`, "invalid");
    }
  });
}

/** System messages become `system`; tool results go back as user turns; same-role turns merge. */
function toApiBody(request, model) {
  const system = request.messages
    .filter((m) => m.role === "system")
    .map((m) => textOf(m.content))
    .join("\n\n");
  const messages = [];
  for (const m of request.messages) {
    if (m.role === "system") continue;
    const role = m.role === "assistant" ? "assistant" : "user";
    const parts = partsOf(m.role, m.content).filter((p) => p.type !== "text" || p.text !== "");
    if (parts.length === 0) continue;
    const last = messages[messages.length - 1];
    if (last && last.role === role) last.content.push(...parts);
    else messages.push({ role, content: parts });
  }
  if (messages.length === 0) fail("the request holds no user or assistant message", "invalid");
  return {
    model,
    max_tokens: request.maxTokens ?? positiveInt("ANTHROPIC_MAX_TOKENS", 4096),
    messages,
    ...(system ? { system } : {}),
    ...(request.tools?.length
      ? {
          tools: request.tools.map((t) => ({
            name: t.name,
            description: t.description,
            input_schema: t.inputSchema,
          })),
        }
      : {}),
    ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
    ...(request.stopSequences?.length ? { stop_sequences: request.stopSequences } : {}),
    stream: true,
  };
}

// ── HTTP with retries ────────────────────────────────────────────────────────────────────────

async function readBody(handle) {
  const chunks = [];
  let size = 0;
  for (;;) {
    const c = await astrid.net.httpRead(handle, READ_WAIT_MS);
    if (c === null) break;
    chunks.push(c);
    size += c.length;
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return astrid.utf8.decode(all);
}

function apiError(status, text) {
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const e = body?.error;
  if (body?.type === "error" && e && typeof e.type === "string") {
    return { type: e.type, message: String(e.message ?? "") };
  }
  return { type: `http_${status}`, message: text.slice(0, 300) || "(empty body)" };
}

/** `retry-after` in seconds or as an HTTP date; undefined when absent or unreadable. */
function retryAfterMs(headers) {
  const v = headers["retry-after"];
  if (v === undefined) return undefined;
  const s = Number(v);
  if (Number.isFinite(s) && s >= 0) return Math.ceil(s * 1000);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

async function openWithRetries(url, headers, body) {
  const attempts = positiveInt("ANTHROPIC_MAX_ATTEMPTS", 4);
  const baseMs = positiveInt("ANTHROPIC_RETRY_BASE_MS", 1000);
  for (let attempt = 1; ; attempt++) {
    let head;
    try {
      head = await astrid.net.httpOpen({ method: "POST", url, headers, body });
    } catch (err) {
      if (err.name === "HostError") fail(`request to ${url} failed: ${err.message}`, err.code);
      throw err;
    }
    if (head.status >= 200 && head.status < 300) return head;
    const text = await readBody(head.handle);
    await astrid.net.httpClose(head.handle);
    const e = apiError(head.status, text);
    const retriable = head.status === 429 || head.status === 529;
    const what = `${e.type}: ${e.message} (HTTP ${head.status})`;
    if (!retriable)
      fail(what, CODE_OF_ERROR_TYPE[e.type] ?? (head.status >= 500 ? "unavailable" : undefined));
    if (attempt >= attempts) fail(`${what}; gave up after ${attempts} attempts`, "unavailable");
    const wait = retryAfterMs(head.headers) ?? Math.min(baseMs * 2 ** (attempt - 1), 60_000);
    try {
      await astrid.sleep(wait);
    } catch (err) {
      if (err.code === "timeout") {
        fail(`${what}; waiting ${wait} ms to retry would pass the call's deadline`, "timeout");
      }
      throw err;
    }
  }
}

// ── SSE ──────────────────────────────────────────────────────────────────────────────────────

/**
 * Splits the byte stream into SSE events. Lines are cut at the LF byte before decoding, so a
 * UTF-8 character split across two network chunks is decoded whole.
 */
function sseReader() {
  let pending = new Uint8Array(0);
  let event = "";
  let data = [];
  return {
    /** Feeds bytes; returns the events completed by them. */
    push(bytes) {
      const buf = new Uint8Array(pending.length + bytes.length);
      buf.set(pending, 0);
      buf.set(bytes, pending.length);
      const out = [];
      let start = 0;
      for (let i = 0; i < buf.length; i++) {
        if (buf[i] !== 0x0a) continue;
        let line = astrid.utf8.decode(buf.subarray(start, i));
        start = i + 1;
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          if (data.length > 0 || event)
            out.push({ event: event || "message", data: data.join("\n") });
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // a comment (keep-alive)
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
        else if (field !== "id" && field !== "retry") {
          fail(
            `malformed stream line ${JSON.stringify(line.slice(0, 120))}: expected an "event:" or "data:" field`,
          );
        }
      }
      pending = buf.slice(start);
      return out;
    },
  };
}

/** Turns the API's events into deltas and the final turn; throws on anything out of order. */
function turnBuilder(requestedModel) {
  const blocks = [];
  /** Deltas of the events read so far, not yet sent. */
  let pending = [];
  const state = {
    model: requestedModel,
    inputTokens: 0,
    outputTokens: 0,
    stopReason: undefined,
    started: false,
    stopped: false,
  };
  const block = (index, kind) => {
    const b = blocks[index];
    if (!b) fail(`stream event for content block ${index} before its content_block_start`);
    if (kind && b.type !== kind)
      fail(`a ${kind} delta for content block ${index}, which is ${b.type}`);
    return b;
  };
  return {
    state,
    /**
     * Sends the deltas of what one read brought, adjacent fragments of the same kind merged:
     * the caller gets them as soon as they arrived, in as few host calls as that allows.
     */
    async flush() {
      const merged = [];
      for (const d of pending) {
        const last = merged[merged.length - 1];
        if (last && d.text !== undefined && last.text !== undefined) {
          last.text += d.text;
        } else if (last?.toolUse && d.toolUse && last.toolUse.id === d.toolUse.id) {
          last.toolUse.inputJson += d.toolUse.inputJson;
        } else {
          merged.push(d.toolUse ? { toolUse: { ...d.toolUse } } : { ...d });
        }
      }
      pending = [];
      for (const d of merged) await astrid.streamDelta(d);
    },
    apply(ev) {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (err) {
        fail(
          `malformed stream event "${ev.event}": data is not JSON (${err.message}): ${ev.data.slice(0, 120)}`,
        );
      }
      const type = msg?.type ?? ev.event;
      if (type !== "message_start" && type !== "ping" && type !== "error" && !state.started) {
        fail(`stream event "${type}" before message_start`);
      }
      switch (type) {
        case "message_start": {
          state.started = true;
          const m = msg.message ?? {};
          if (typeof m.model === "string" && m.model) state.model = m.model;
          state.inputTokens = m.usage?.input_tokens ?? 0;
          state.outputTokens = m.usage?.output_tokens ?? 0;
          return;
        }
        case "content_block_start": {
          const cb = msg.content_block ?? {};
          if (cb.type === "text") {
            blocks[msg.index] = { type: "text", text: cb.text ?? "" };
            if (cb.text) pending.push({ text: cb.text });
          } else if (cb.type === "tool_use") {
            blocks[msg.index] = {
              type: "tool_use",
              id: cb.id,
              name: cb.name,
              json: "",
              named: false,
            };
          } else {
            blocks[msg.index] = { type: "other" }; // thinking and server tools: not ours to relay
          }
          return;
        }
        case "content_block_delta": {
          const d = msg.delta ?? {};
          if (d.type === "text_delta") {
            block(msg.index, "text").text += d.text;
            pending.push({ text: d.text });
          } else if (d.type === "input_json_delta") {
            const b = block(msg.index, "tool_use");
            b.json += d.partial_json;
            if (d.partial_json === "" && b.named) return;
            pending.push({
              toolUse: {
                id: b.id,
                ...(b.named ? {} : { name: b.name }),
                inputJson: d.partial_json,
              },
            });
            b.named = true;
          } else {
            block(msg.index);
          }
          return;
        }
        case "content_block_stop": {
          const b = block(msg.index);
          if (b.type === "tool_use") {
            try {
              b.input = b.json === "" ? {} : JSON.parse(b.json);
            } catch (err) {
              fail(`arguments of tool call ${b.id} (${b.name}) are not JSON: ${err.message}`);
            }
          }
          b.done = true;
          return;
        }
        case "message_delta":
          if (msg.delta?.stop_reason) state.stopReason = msg.delta.stop_reason;
          if (Number.isInteger(msg.usage?.output_tokens))
            state.outputTokens = msg.usage.output_tokens;
          if (Number.isInteger(msg.usage?.input_tokens)) state.inputTokens = msg.usage.input_tokens;
          return;
        case "message_stop":
          state.stopped = true;
          return;
        case "ping":
          return;
        case "error": {
          const e = msg.error ?? {};
          fail(
            `${e.type ?? "error"}: ${e.message ?? "(no message)"} (in the stream)`,
            CODE_OF_ERROR_TYPE[e.type],
          );
          return;
        }
        default:
          return; // the API may add event types; unknown ones are skipped, as it documents
      }
    },
    content() {
      const out = [];
      for (const b of blocks) {
        if (!b || b.type === "other") continue;
        if (!b.done) fail("the stream ended with a content block still open");
        if (b.type === "text" && b.text !== "") out.push({ type: "text", text: b.text });
        if (b.type === "tool_use")
          out.push({ type: "tool_use", id: b.id, name: b.name, input: b.input });
      }
      return out;
    },
  };
}

// ── the handler ──────────────────────────────────────────────────────────────────────────────

export async function chat(request) {
  const model = request.model ?? config("ANTHROPIC_MODEL", "claude-sonnet-4-5");
  const price = priceOf(model);
  const base = config("ANTHROPIC_BASE_URL", "https://api.anthropic.com").replace(/\/+$/, "");
  const url = `${base}/v1/messages`;
  const body = astrid.utf8.encode(JSON.stringify(toApiBody(request, model)));
  const headers = {
    "content-type": "application/json",
    accept: "text/event-stream",
    "anthropic-version": API_VERSION,
    "x-api-key": await astrid.sys.secret("ANTHROPIC_API_KEY"),
  };
  const head = await openWithRetries(url, headers, body);
  const sse = sseReader();
  const turn = turnBuilder(model);
  let received = 0;
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await astrid.net.httpRead(head.handle, READ_WAIT_MS);
      } catch (err) {
        if (err.name !== "HostError") throw err;
        fail(
          `the stream broke after ${received} bytes, before message_stop: ${err.message}; the answer is incomplete`,
          err.code === "timeout" ? "timeout" : "unavailable",
        );
      }
      if (chunk === null) break;
      received += chunk.length;
      for (const ev of sse.push(chunk)) turn.apply(ev);
      await turn.flush();
      if (turn.state.stopped) break;
    }
  } finally {
    await astrid.net.httpClose(head.handle);
  }
  const s = turn.state;
  if (!s.stopped) {
    fail(
      `the stream ended after ${received} bytes without message_stop; the answer is incomplete`,
      "unavailable",
    );
  }
  const stopReason = STOP_REASONS[s.stopReason];
  if (!stopReason) fail(`unexpected stop_reason ${JSON.stringify(s.stopReason ?? null)}`);
  const content = turn.content();
  await astrid.streamDelta({ done: true });
  return {
    provider: "anthropic",
    model: s.model,
    content,
    stopReason,
    usage: {
      inputTokens: s.inputTokens,
      outputTokens: s.outputTokens,
      costMicroUsd: costMicroUsd(price, s.inputTokens, s.outputTokens),
    },
    metadata: { anthropicStopReason: s.stopReason },
  };
}
