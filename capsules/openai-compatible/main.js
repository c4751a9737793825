// The OpenAI-compatible provider: serves `llm.v1.chat.openai-compatible` by calling Chat
// Completions (`POST {base}/v1/chat/completions`, `stream: true`) as vLLM, OpenAI, LM Studio and
// the llama.cpp server speak it, passing each text or tool-argument fragment to the caller's
// stream inbox as it is read, then answering with the whole turn, its usage and its cost.
//
// Failure is never passed off as an answer: a stream that ends before `[DONE]`, a data line
// that is not JSON, a turn without a finish_reason or usage, or tool arguments that do not
// parse fail the call with a clear error, even if text was already streamed. 429 and 5xx are
// retried with exponential backoff that honours `retry-after`, within the call's deadline.
//
// Money is integer micro-USD (BigInt arithmetic, rounded up) from OPENAI_COMPATIBLE_PRICES; a
// model with no price (and no "*" entry) is refused before any request is sent, because a call
// the ledger cannot price is a call the budget cannot bound.

const P = "OPENAI_COMPATIBLE";
const READ_WAIT_MS = 30_000;
const FINISH_REASONS = {
  stop: "end_turn",
  tool_calls: "tool_use",
  function_call: "tool_use",
  length: "max_tokens",
  // A filtered answer still ends the turn; the raw reason is kept in metadata so a caller can tell.
  content_filter: "end_turn",
};

function fail(message, code) {
  const err = new Error(`openai-compatible: ${message}`);
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
    table = JSON.parse(config(`${P}_PRICES`, "{}"));
  } catch (err) {
    fail(`${P}_PRICES is not JSON: ${err.message}`);
  }
  const p = table?.[model] ?? table?.["*"];
  if (!p) {
    fail(
      `no price for model "${model}" in ${P}_PRICES; expected { "${model}": { "inputPerMTok": µUSD, "outputPerMTok": µUSD } }`,
      "invalid",
    );
  }
  for (const k of ["inputPerMTok", "outputPerMTok"]) {
    if (!Number.isSafeInteger(p[k]) || p[k] < 0) {
      fail(`${P}_PRICES["${model}"].${k} must be a non-negative integer of micro-USD`);
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

/**
 * One of our messages becomes one or more Chat Completions messages: text stays with its role,
 * an assistant's tool_use parts become `tool_calls`, and each tool_result becomes its own
 * `role: "tool"` message (the API answers one call per message).
 */
function toApiMessages(m) {
  if (typeof m.content === "string") {
    if (m.role === "tool") fail("a tool message needs tool_result parts, got a string", "invalid");
    return [{ role: m.role, content: m.content }];
  }
  const text = [];
  const calls = [];
  const results = [];
  for (const p of m.content) {
    switch (p.type) {
      case "text":
        text.push(p.text);
        break;
      case "tool_use":
        if (m.role !== "assistant") fail(`a tool_use part in a ${m.role} message`, "invalid");
        calls.push({
          id: p.id,
          type: "function",
          function: { name: p.name, arguments: JSON.stringify(p.input) },
        });
        break;
      case "tool_result":
        // The API has no error flag on a tool message; the model is told in the content.
        results.push({
          role: "tool",
          tool_call_id: p.toolUseId,
          content: p.isError ? `Error: ${p.content}` : p.content,
        });
        break;
      default:
        fail(`unknown content part type "${p.type}"`, "invalid");
    }
  }
  const out = [...results];
  const joined = text.join("");
  if (calls.length > 0) {
    out.push({ role: "assistant", content: joined === "" ? null : joined, tool_calls: calls });
  } else if (joined !== "") {
    out.push({ role: m.role === "tool" ? "user" : m.role, content: joined });
  }
  return out;
}

function toApiBody(request, model) {
  const messages = request.messages.flatMap(toApiMessages);
  if (messages.length === 0) fail("the request holds no message with content", "invalid");
  return {
    model,
    messages,
    ...(request.tools?.length
      ? {
          tools: request.tools.map((t) => ({
            type: "function",
            function: { name: t.name, description: t.description, parameters: t.inputSchema },
          })),
        }
      : {}),
    ...(request.maxTokens !== undefined ? { max_tokens: request.maxTokens } : {}),
    ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
    ...(request.stopSequences?.length ? { stop: request.stopSequences } : {}),
    stream: true,
    stream_options: { include_usage: true },
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

/** The error object of a body: `{error:{message,type,code}}` (OpenAI, newer vLLM) or the flat `{object:"error",message,type}` of older vLLM. */
function errorOf(body) {
  const e = body?.error;
  if (e && typeof e === "object" && typeof e.message === "string") return e;
  if (typeof e === "string") return { message: e };
  if (body?.object === "error" && typeof body.message === "string") return body;
  return undefined;
}

function apiError(status, text) {
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  const e = errorOf(body);
  if (e) return { type: String(e.type ?? e.code ?? `http_${status}`), message: e.message };
  return { type: `http_${status}`, message: text.slice(0, 300) || "(empty body)" };
}

function codeOfStatus(status) {
  if (status === 400 || status === 422) return "invalid";
  if (status === 401 || status === 403) return "denied";
  if (status === 404) return "not_found";
  if (status === 413) return "too_large";
  if (status === 429 || status >= 500) return "unavailable";
  return undefined;
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
  const attempts = positiveInt(`${P}_MAX_ATTEMPTS`, 4);
  const baseMs = positiveInt(`${P}_RETRY_BASE_MS`, 1000);
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
    const retriable = head.status === 429 || head.status >= 500;
    const what = `${e.type}: ${e.message} (HTTP ${head.status})`;
    if (!retriable) fail(what, codeOfStatus(head.status));
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
 * Splits the byte stream into SSE events (the data of each). Lines are cut at the LF byte
 * before decoding, so a UTF-8 character split across two network chunks is decoded whole.
 */
function sseReader() {
  let pending = new Uint8Array(0);
  let data = [];
  return {
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
          if (data.length > 0) out.push(data.join("\n"));
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // a comment (keep-alive)
        const colon = line.indexOf(":");
        const field = colon === -1 ? line : line.slice(0, colon);
        let value = colon === -1 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field !== "event" && field !== "id" && field !== "retry") {
          fail(
            `malformed stream line ${JSON.stringify(line.slice(0, 120))}: expected a "data:" field`,
          );
        }
      }
      pending = buf.slice(start);
      return out;
    },
  };
}

/** Turns the chunks into deltas and the final turn; throws on anything it cannot read. */
function turnBuilder(requestedModel) {
  let text = "";
  /** Tool calls by the `index` the stream keys their fragments with. */
  const calls = [];
  let pending = [];
  const state = {
    model: requestedModel,
    finishReason: undefined,
    usage: undefined,
    done: false,
  };
  const toolFragment = (f) => {
    if (!Number.isInteger(f.index) || f.index < 0) {
      fail(`a tool_calls fragment without a valid index: ${JSON.stringify(f).slice(0, 120)}`);
    }
    let c = calls[f.index];
    if (!c) {
      if (typeof f.id !== "string" || f.id === "" || typeof f.function?.name !== "string") {
        fail(
          `the first fragment of tool call ${f.index} carries no id and function name: ${JSON.stringify(f).slice(0, 120)}`,
        );
      }
      c = { id: f.id, name: f.function.name, json: "", named: false };
      calls[f.index] = c;
    }
    const args = f.function?.arguments ?? "";
    if (typeof args !== "string") fail(`arguments of tool call ${c.id} are not a string`);
    c.json += args;
    if (args === "" && c.named) return;
    pending.push({ toolUse: { id: c.id, ...(c.named ? {} : { name: c.name }), inputJson: args } });
    c.named = true;
  };
  return {
    state,
    /** Sends what one read brought, adjacent fragments of the same kind merged. */
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
    apply(data) {
      if (state.done) fail("data after [DONE]");
      if (data === "[DONE]") {
        state.done = true;
        return;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch (err) {
        fail(`malformed stream chunk: data is not JSON (${err.message}): ${data.slice(0, 120)}`);
      }
      const e = errorOf(chunk);
      if (e) {
        fail(
          `${e.type ?? e.code ?? "error"}: ${e.message} (in the stream)`,
          // An error after the 200 is the server's failure unless it names a status of its own.
          (typeof e.code === "number" ? codeOfStatus(e.code) : undefined) ?? "unavailable",
        );
      }
      if (typeof chunk?.model === "string" && chunk.model) state.model = chunk.model;
      if (chunk?.usage) {
        const u = chunk.usage;
        if (!Number.isSafeInteger(u.prompt_tokens) || !Number.isSafeInteger(u.completion_tokens)) {
          fail(`usage without integer prompt_tokens and completion_tokens: ${JSON.stringify(u)}`);
        }
        state.usage = { input: u.prompt_tokens, output: u.completion_tokens };
      }
      const choice = chunk?.choices?.[0];
      if (!choice) return; // the usage chunk has no choices
      const d = choice.delta ?? {};
      if (typeof d.content === "string" && d.content !== "") {
        text += d.content;
        pending.push({ text: d.content });
      }
      if (Array.isArray(d.tool_calls)) for (const f of d.tool_calls) toolFragment(f);
      if (choice.finish_reason) state.finishReason = choice.finish_reason;
    },
    content() {
      const out = [];
      if (text !== "") out.push({ type: "text", text });
      for (const c of calls) {
        if (!c) continue;
        let input;
        try {
          input = c.json === "" ? {} : JSON.parse(c.json);
        } catch (err) {
          fail(`arguments of tool call ${c.id} (${c.name}) are not JSON: ${err.message}`);
        }
        if (input === null || typeof input !== "object" || Array.isArray(input)) {
          fail(`arguments of tool call ${c.id} (${c.name}) are not a JSON object: ${c.json}`);
        }
        out.push({ type: "tool_use", id: c.id, name: c.name, input });
      }
      return out;
    },
  };
}

// ── the handler ──────────────────────────────────────────────────────────────────────────────

async function apiKey() {
  try {
    return await astrid.sys.secret(`${P}_API_KEY`);
  } catch (err) {
    // The key is optional (local servers take none); any other refusal is the gate's and stands.
    if (err.name === "HostError" && err.code === "not_found") return undefined;
    throw err;
  }
}

export async function chat(request) {
  const model = request.model ?? config(`${P}_MODEL`, undefined);
  if (!model) fail(`no model: name one in the request or set ${P}_MODEL`, "invalid");
  const price = priceOf(model);
  const base = config(`${P}_BASE_URL`, "http://127.0.0.1:8000").replace(/\/+$/, "");
  const url = `${base}/v1/chat/completions`;
  const body = astrid.utf8.encode(JSON.stringify(toApiBody(request, model)));
  const key = await apiKey();
  const headers = {
    "content-type": "application/json",
    accept: "text/event-stream",
    ...(key ? { authorization: `Bearer ${key}` } : {}),
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
          `the stream broke after ${received} bytes, before [DONE]: ${err.message}; the answer is incomplete`,
          err.code === "timeout" ? "timeout" : "unavailable",
        );
      }
      if (chunk === null) break;
      received += chunk.length;
      for (const data of sse.push(chunk)) turn.apply(data);
      await turn.flush();
      if (turn.state.done) break;
    }
  } finally {
    await astrid.net.httpClose(head.handle);
  }
  const s = turn.state;
  if (!s.done) {
    fail(
      `the stream ended after ${received} bytes without [DONE]; the answer is incomplete`,
      "unavailable",
    );
  }
  const stopReason = FINISH_REASONS[s.finishReason];
  if (!stopReason) fail(`unexpected finish_reason ${JSON.stringify(s.finishReason ?? null)}`);
  // Tokens the ledger cannot count are tokens the budget cannot bound.
  if (!s.usage) {
    fail(
      "the stream carried no usage; expected a final chunk with usage (stream_options.include_usage)",
    );
  }
  const content = turn.content();
  await astrid.streamDelta({ done: true });
  return {
    provider: "openai-compatible",
    model: s.model,
    content,
    stopReason,
    usage: {
      inputTokens: s.usage.input,
      outputTokens: s.usage.output,
      costMicroUsd: costMicroUsd(price, s.usage.input, s.usage.output),
    },
    metadata: { finishReason: s.finishReason },
  };
}
