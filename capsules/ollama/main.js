// The Ollama provider: serves `llm.v1.chat.ollama` by calling a local Ollama server's native
// chat API (`POST {base}/api/chat`, `stream: true`), which answers with NDJSON — one JSON
// object per line, the last one `"done": true` with the token counts. Each text fragment, and
// each tool call (Ollama sends a call whole, its arguments as an object), goes to the caller's
// stream inbox as soon as its line is read; the reply is the whole turn with its usage.
//
// A local model costs no money, so costMicroUsd is 0; its token counts still go to the ledger,
// which is what the token budget bounds.
//
// Failure is never passed off as an answer: a line that is not JSON, an `{"error": …}` line, or
// a stream that ends before `"done": true` fail the call with a clear error, even if text was
// already streamed. 429 and 5xx (Ollama's "server busy" is 503) are retried with backoff.

const READ_WAIT_MS = 60_000;

function fail(message, code) {
  const err = new Error(`ollama: ${message}`);
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

// ── request mapping ──────────────────────────────────────────────────────────────────────────

/**
 * One of our messages becomes one or more Ollama messages: text keeps its role, an assistant's
 * tool_use parts become `tool_calls` (arguments as an object), and each tool_result becomes a
 * `role: "tool"` message named after the call it answers (Ollama matches results by name).
 */
function toApiMessages(m, toolNames) {
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
        toolNames.set(p.id, p.name);
        calls.push({ function: { name: p.name, arguments: p.input } });
        break;
      case "tool_result": {
        const name = toolNames.get(p.toolUseId);
        results.push({
          role: "tool",
          content: p.isError ? `Error: ${p.content}` : p.content,
          ...(name ? { tool_name: name } : {}),
        });
        break;
      }
      default:
        fail(`unknown content part type "${p.type}"`, "invalid");
    }
  }
  const out = [...results];
  const joined = text.join("");
  if (calls.length > 0) out.push({ role: "assistant", content: joined, tool_calls: calls });
  else if (joined !== "") out.push({ role: m.role === "tool" ? "user" : m.role, content: joined });
  return out;
}

function toApiBody(request, model) {
  const toolNames = new Map();
  const messages = request.messages.flatMap((m) => toApiMessages(m, toolNames));
  if (messages.length === 0) fail("the request holds no message with content", "invalid");
  const options = {
    ...(request.temperature !== undefined ? { temperature: request.temperature } : {}),
    ...(request.maxTokens !== undefined ? { num_predict: request.maxTokens } : {}),
    ...(request.stopSequences?.length ? { stop: request.stopSequences } : {}),
  };
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
    ...(Object.keys(options).length > 0 ? { options } : {}),
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

/** Ollama's error bodies are `{"error": "<message>"}`. */
function apiError(text) {
  try {
    const body = JSON.parse(text);
    if (typeof body?.error === "string") return body.error;
  } catch {
    // not JSON: the raw text is the best account there is
  }
  return text.slice(0, 300) || "(empty body)";
}

function codeOfStatus(status) {
  if (status === 400) return "invalid";
  if (status === 401 || status === 403) return "denied";
  if (status === 404) return "not_found";
  if (status === 413) return "too_large";
  if (status === 429 || status >= 500) return "unavailable";
  return undefined;
}

function retryAfterMs(headers) {
  const v = headers["retry-after"];
  if (v === undefined) return undefined;
  const s = Number(v);
  if (Number.isFinite(s) && s >= 0) return Math.ceil(s * 1000);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

async function openWithRetries(url, body) {
  const attempts = positiveInt("OLLAMA_MAX_ATTEMPTS", 3);
  const baseMs = positiveInt("OLLAMA_RETRY_BASE_MS", 1000);
  const headers = { "content-type": "application/json", accept: "application/x-ndjson" };
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
    const what = `${apiError(text)} (HTTP ${head.status})`;
    const retriable = head.status === 429 || head.status >= 500;
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

// ── NDJSON ───────────────────────────────────────────────────────────────────────────────────

/**
 * Splits the byte stream into lines. Lines are cut at the LF byte before decoding, so a UTF-8
 * character split across two network chunks is decoded whole.
 */
function lineReader() {
  let pending = new Uint8Array(0);
  return {
    push(bytes) {
      const buf = new Uint8Array(pending.length + bytes.length);
      buf.set(pending, 0);
      buf.set(bytes, pending.length);
      const out = [];
      let start = 0;
      for (let i = 0; i < buf.length; i++) {
        if (buf[i] !== 0x0a) continue;
        const line = astrid.utf8.decode(buf.subarray(start, i)).trim();
        start = i + 1;
        if (line !== "") out.push(line);
      }
      pending = buf.slice(start);
      return out;
    },
    /** Bytes after the last newline: a final line the server sent without one. */
    rest() {
      const line = astrid.utf8.decode(pending).trim();
      pending = new Uint8Array(0);
      return line === "" ? [] : [line];
    },
  };
}

/** Ollama gives tool calls no id (or, in newer versions, sometimes one); ours must be unique. */
function newCallId() {
  let s = "";
  for (let i = 0; i < 4; i++)
    s += Math.floor(Math.random() * 0x10000)
      .toString(16)
      .padStart(4, "0");
  return `call_${s}`;
}

function turnBuilder(requestedModel) {
  let text = "";
  const calls = [];
  let pending = [];
  const state = { model: requestedModel, done: false, doneReason: undefined, input: 0, output: 0 };
  return {
    state,
    calls,
    async flush() {
      const merged = [];
      for (const d of pending) {
        const last = merged[merged.length - 1];
        if (last && d.text !== undefined && last.text !== undefined) last.text += d.text;
        else merged.push(d);
      }
      pending = [];
      for (const d of merged) await astrid.streamDelta(d);
    },
    apply(line) {
      if (state.done) fail(`a line after "done": true: ${line.slice(0, 120)}`);
      let msg;
      try {
        msg = JSON.parse(line);
      } catch (err) {
        fail(`malformed stream line: not JSON (${err.message}): ${line.slice(0, 120)}`);
      }
      if (msg === null || typeof msg !== "object") {
        fail(`malformed stream line: expected a JSON object, got ${line.slice(0, 120)}`);
      }
      if (typeof msg.error === "string") fail(`${msg.error} (in the stream)`, "unavailable");
      if (typeof msg.model === "string" && msg.model) state.model = msg.model;
      const m = msg.message ?? {};
      if (typeof m.content === "string" && m.content !== "") {
        text += m.content;
        pending.push({ text: m.content });
      }
      if (Array.isArray(m.tool_calls)) {
        for (const tc of m.tool_calls) {
          const f = tc?.function ?? {};
          if (typeof f.name !== "string" || f.name === "") {
            fail(`a tool call without a function name: ${JSON.stringify(tc).slice(0, 120)}`);
          }
          let args = f.arguments ?? {};
          // Some models' templates yield the arguments as a JSON string rather than an object.
          if (typeof args === "string") {
            try {
              args = JSON.parse(args);
            } catch (err) {
              fail(`arguments of tool call ${f.name} are not JSON: ${err.message}`);
            }
          }
          if (args === null || typeof args !== "object" || Array.isArray(args)) {
            fail(`arguments of tool call ${f.name} are not a JSON object`);
          }
          const id = typeof tc.id === "string" && tc.id !== "" ? tc.id : newCallId();
          calls.push({ type: "tool_use", id, name: f.name, input: args });
          pending.push({ toolUse: { id, name: f.name, inputJson: JSON.stringify(args) } });
        }
      }
      if (msg.done === true) {
        state.done = true;
        state.doneReason = msg.done_reason;
        // Ollama leaves prompt_eval_count out when the whole prompt came from its cache.
        for (const [k, field] of [
          ["input", "prompt_eval_count"],
          ["output", "eval_count"],
        ]) {
          const v = msg[field];
          if (v === undefined) continue;
          if (!Number.isSafeInteger(v) || v < 0) fail(`${field} is not a token count: ${v}`);
          state[k] = v;
        }
      }
    },
    content() {
      return [...(text !== "" ? [{ type: "text", text }] : []), ...calls];
    },
  };
}

// ── the handler ──────────────────────────────────────────────────────────────────────────────

export async function chat(request) {
  const model = request.model ?? config("OLLAMA_MODEL", undefined);
  if (!model) fail("no model: name one in the request or set OLLAMA_MODEL", "invalid");
  const base = config("OLLAMA_BASE_URL", "http://127.0.0.1:11434").replace(/\/+$/, "");
  const url = `${base}/api/chat`;
  const body = astrid.utf8.encode(JSON.stringify(toApiBody(request, model)));
  const head = await openWithRetries(url, body);
  const lines = lineReader();
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
          `the stream broke after ${received} bytes, before "done": true: ${err.message}; the answer is incomplete`,
          err.code === "timeout" ? "timeout" : "unavailable",
        );
      }
      const got = chunk === null ? lines.rest() : lines.push(chunk);
      if (chunk !== null) received += chunk.length;
      for (const line of got) turn.apply(line);
      await turn.flush();
      if (chunk === null || turn.state.done) break;
    }
  } finally {
    await astrid.net.httpClose(head.handle);
  }
  const s = turn.state;
  if (!s.done) {
    fail(
      `the stream ended after ${received} bytes without "done": true; the answer is incomplete`,
      "unavailable",
    );
  }
  // Ollama reports "stop" for a turn that ended in tool calls too; the calls decide. Versions
  // before done_reason existed sent none for an ordinary stop.
  let stopReason;
  if (s.doneReason === "length") stopReason = "max_tokens";
  else if (s.doneReason === "stop" || s.doneReason === undefined) {
    stopReason = turn.calls.length > 0 ? "tool_use" : "end_turn";
  } else fail(`unexpected done_reason ${JSON.stringify(s.doneReason)}`);
  await astrid.streamDelta({ done: true });
  return {
    provider: "ollama",
    model: s.model,
    content: turn.content(),
    stopReason,
    usage: { inputTokens: s.input, outputTokens: s.output, costMicroUsd: 0 },
    metadata: { doneReason: s.doneReason ?? null },
  };
}
