// The http tool capsule: one request through the host, which checks the URL against the
// manifest's net list and refuses private, loopback and metadata addresses (SSRF) unless a
// rule names them. The capsule keeps the answer small enough for a model.
const MAX_BODY = 100 * 1024;
const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
// Headers a model can use (what it is, where it moved, when to retry); the rest is noise.
const SHOWN_HEADERS = [
  "content-type",
  "content-length",
  "location",
  "last-modified",
  "etag",
  "retry-after",
];
const TEXTUAL =
  /^(text\/|application\/([a-z0-9.+-]*\+)?(json|xml|javascript|x-www-form-urlencoded)\b)/i;

const str = { type: "string" };
const tools = [
  {
    name: "fetch",
    description:
      "Fetch a URL and return its status, a few headers and the body as text (at most 100 KiB). " +
      "Only hosts the capsule's manifest lists are reachable.",
    inputSchema: {
      type: "object",
      properties: {
        url: str,
        method: { type: "string", enum: METHODS },
        headers: { type: "object", additionalProperties: str },
        body: str,
      },
      required: ["url"],
    },
  },
];

export function describe() {
  return { tools };
}

const result = (callId, text, isError) => ({ callId, content: [{ type: "text", text }], isError });
const fail = (callId, text) => result(callId, text, true);

function clip(bytes, max) {
  if (bytes.length <= max) return { text: astrid.utf8.decode(bytes), cut: 0 };
  let end = max;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return { text: astrid.utf8.decode(bytes.subarray(0, end)), cut: bytes.length - end };
}

export async function fetch({ callId, arguments: a }) {
  if (typeof a.url !== "string" || a.url === "") {
    return fail(callId, 'invalid: fetch needs a url, e.g. "https://en.wikipedia.org/wiki/NATS"');
  }
  const method = String(a.method ?? "GET").toUpperCase();
  if (!METHODS.includes(method)) {
    return fail(callId, `invalid: method must be one of ${METHODS.join(", ")}, got "${a.method}"`);
  }
  const headers = {};
  for (const [k, v] of Object.entries(a.headers ?? {})) {
    if (typeof v !== "string") return fail(callId, `invalid: header "${k}" must be a string`);
    headers[k] = v;
  }
  if (a.body !== undefined && typeof a.body !== "string") {
    return fail(callId, "invalid: body must be a string");
  }
  let res;
  try {
    res = await astrid.net.httpRequest({
      method,
      url: a.url,
      headers,
      ...(a.body !== undefined ? { body: astrid.utf8.encode(a.body) } : {}),
    });
  } catch (e) {
    // A denial (gate, approval) fails the call so the orchestrator learns it was refused and
    // the refusal stays in the audit chain; a network failure is a result the model can read.
    if (e.code === "denied") throw e;
    return fail(callId, `${e.code ?? "error"}: ${e.message}`);
  }
  const lines = [`HTTP ${res.status}`];
  const lower = {};
  for (const [k, v] of Object.entries(res.headers)) lower[k.toLowerCase()] = v;
  for (const h of SHOWN_HEADERS) if (lower[h] !== undefined) lines.push(`${h}: ${lower[h]}`);
  lines.push("");
  const type = lower["content-type"] ?? "";
  if (res.body.length === 0) {
    lines.push("[empty body]");
  } else if (type !== "" && !TEXTUAL.test(type)) {
    lines.push(`[binary body of ${res.body.length} bytes not shown]`);
  } else {
    const body = clip(res.body, MAX_BODY);
    lines.push(body.text);
    if (body.cut > 0) {
      lines.push(`[body truncated at ${MAX_BODY} bytes: ${body.cut} more bytes not shown]`);
    }
  }
  return result(callId, lines.join("\n"), res.status >= 400);
}
