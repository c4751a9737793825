// The github tool capsule: the REST API through the host, which checks every URL against the
// manifest's net list. The token is a declared secret read per call, sent only to the
// configured API base and never put in a result.
const MAX_FILE = 256 * 1024;
const PER_PAGE = 30;

const str = { type: "string" };
const repo = { type: "string", description: "owner/name, e.g. nats-io/nats-server" };
const state = { type: "string", enum: ["open", "closed", "all"] };
const tools = [
  {
    name: "list_issues",
    description: "List issues of a GitHub repository (not pull requests), newest first",
    inputSchema: { type: "object", properties: { repo, state }, required: ["repo"] },
  },
  {
    name: "get_issue",
    description: "Read one issue of a GitHub repository with its text",
    inputSchema: {
      type: "object",
      properties: { repo, number: { type: "integer", minimum: 1 } },
      required: ["repo", "number"],
    },
  },
  {
    name: "create_issue",
    description: "Open a new issue in a GitHub repository",
    inputSchema: {
      type: "object",
      properties: { repo, title: str, body: str },
      required: ["repo", "title"],
    },
  },
  {
    name: "list_pulls",
    description: "List pull requests of a GitHub repository, newest first",
    inputSchema: { type: "object", properties: { repo, state }, required: ["repo"] },
  },
  {
    name: "get_file",
    description:
      "Read a file (or list a directory) of a GitHub repository at a branch, tag or commit",
    inputSchema: {
      type: "object",
      properties: { repo, path: str, ref: str },
      required: ["repo", "path"],
    },
  },
];

export function describe() {
  return { tools };
}

const ok = (callId, text) => ({ callId, content: [{ type: "text", text }], isError: false });
const fail = (callId, text) => ({ callId, content: [{ type: "text", text }], isError: true });

/** A failure the model should read (bad input, a GitHub error), not a refusal by the host. */
class ToolFailure extends Error {}

async function guarded(callId, fn) {
  try {
    return ok(callId, await fn());
  } catch (e) {
    // A denial (gate, approval) fails the call so the orchestrator learns it was refused and
    // the refusal stays in the audit chain; any other failure is a result the model can read.
    if (e.code === "denied") throw e;
    if (e instanceof ToolFailure) return fail(callId, e.message);
    return fail(callId, `${e.code ?? "error"}: ${e.message}`);
  }
}

function repoOf(a) {
  const r = a.repo;
  // Checked so a model cannot walk the URL elsewhere on the API ("a/b/../../user").
  if (
    typeof r !== "string" ||
    !/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/.test(r) ||
    /(^|\/)\.\.?(\/|$)/.test(r)
  ) {
    throw new ToolFailure(`invalid: repo must be "owner/name", got ${JSON.stringify(r)}`);
  }
  return r;
}

function stateOf(a) {
  const s = a.state ?? "open";
  if (!["open", "closed", "all"].includes(s)) {
    throw new ToolFailure(
      `invalid: state must be "open", "closed" or "all", got ${JSON.stringify(s)}`,
    );
  }
  return s;
}

function base() {
  const b = astrid.sys.config("GITHUB_API") || "https://api.github.com";
  return String(b).replace(/\/+$/, "");
}

async function token() {
  try {
    return await astrid.sys.secret("GITHUB_TOKEN");
  } catch (e) {
    if (e.code === "not_found") {
      throw new ToolFailure("GITHUB_TOKEN is not set: give the capsule a GitHub token");
    }
    throw e;
  }
}

function explain(status, headers, body, what) {
  let message = "";
  try {
    message = JSON.parse(astrid.utf8.decode(body)).message ?? "";
  } catch {}
  const h = {};
  for (const [k, v] of Object.entries(headers)) h[k.toLowerCase()] = v;
  if (status === 401) {
    return `GitHub refused the token (401 ${message || "Bad credentials"}): check GITHUB_TOKEN`;
  }
  if (
    (status === 403 || status === 429) &&
    (h["x-ratelimit-remaining"] === "0" || h["retry-after"])
  ) {
    if (h["x-ratelimit-reset"]) {
      const reset = new Date(Number(h["x-ratelimit-reset"]) * 1000).toISOString();
      return `GitHub rate limit reached (${h["x-ratelimit-limit"] ?? "?"} requests per hour used up); it resets at ${reset}`;
    }
    return `GitHub rate limit reached; retry after ${h["retry-after"]} s`;
  }
  if (status === 403) {
    return `GitHub forbids ${what} (403 ${message}): the token may lack the permission`;
  }
  if (status === 404) {
    return `not found: ${what} (GitHub also answers 404 for a private repository the token cannot see)`;
  }
  if (status === 422) {
    let details = "";
    try {
      const errs = JSON.parse(astrid.utf8.decode(body)).errors ?? [];
      details = errs.map((e) => e.message ?? `${e.field} ${e.code}`).join("; ");
    } catch {}
    return `GitHub rejected ${what} (422 ${message})${details ? `: ${details}` : ""}`;
  }
  return `GitHub answered ${status} for ${what}${message ? `: ${message}` : ""}`;
}

async function api(method, path, what, { body, accept } = {}) {
  const headers = {
    Authorization: `Bearer ${await token()}`,
    Accept: accept ?? "application/vnd.github+json",
    "X-GitHub-Api-Version": "2022-11-28",
    "User-Agent": "astrid-github-capsule",
  };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await astrid.net.httpRequest({
    method,
    url: `${base()}${path}`,
    headers,
    ...(body !== undefined ? { body: astrid.utf8.encode(JSON.stringify(body)) } : {}),
  });
  if (res.status < 200 || res.status >= 300) {
    throw new ToolFailure(explain(res.status, res.headers, res.body, what));
  }
  return res;
}

async function json(method, path, what, opts) {
  const res = await api(method, path, what, opts);
  try {
    return JSON.parse(astrid.utf8.decode(res.body));
  } catch {
    throw new ToolFailure(`GitHub answered ${res.status} for ${what} with a body that is not JSON`);
  }
}

const labelsOf = (i) =>
  (i.labels ?? []).length > 0 ? ` (labels: ${i.labels.map((l) => l.name ?? l).join(", ")})` : "";

export function listIssues({ callId, arguments: a }) {
  return guarded(callId, async () => {
    const r = repoOf(a);
    const s = stateOf(a);
    const items = await json(
      "GET",
      `/repos/${r}/issues?state=${s}&per_page=${PER_PAGE}`,
      `issues of ${r}`,
    );
    // The issues endpoint lists pull requests too; list_pulls is the tool for those.
    const issues = items.filter((i) => !i.pull_request);
    if (issues.length === 0) return `no ${s === "all" ? "" : `${s} `}issues in ${r}`;
    return issues
      .map((i) => `#${i.number} [${i.state}] ${i.title} — @${i.user?.login ?? "?"}${labelsOf(i)}`)
      .join("\n");
  });
}

function numberOf(a) {
  const n = a.number;
  if (!Number.isInteger(n) || n < 1) {
    throw new ToolFailure(`invalid: number must be a positive integer, got ${JSON.stringify(n)}`);
  }
  return n;
}

export function getIssue({ callId, arguments: a }) {
  return guarded(callId, async () => {
    const r = repoOf(a);
    const n = numberOf(a);
    const i = await json("GET", `/repos/${r}/issues/${n}`, `issue #${n} of ${r}`);
    return [
      `#${i.number} [${i.state}] ${i.title}${labelsOf(i)}`,
      `by @${i.user?.login ?? "?"} on ${i.created_at}, ${i.comments ?? 0} comment(s)`,
      i.html_url,
      "",
      i.body ?? "(no description)",
    ].join("\n");
  });
}

export function createIssue({ callId, arguments: a }) {
  return guarded(callId, async () => {
    const r = repoOf(a);
    if (typeof a.title !== "string" || a.title.trim() === "") {
      throw new ToolFailure("invalid: create_issue needs a non-empty title");
    }
    if (a.body !== undefined && typeof a.body !== "string") {
      throw new ToolFailure("invalid: body must be a string");
    }
    const i = await json("POST", `/repos/${r}/issues`, `a new issue in ${r}`, {
      body: { title: a.title, body: a.body ?? "" },
    });
    return `created #${i.number}: ${i.html_url}`;
  });
}

export function listPulls({ callId, arguments: a }) {
  return guarded(callId, async () => {
    const r = repoOf(a);
    const s = stateOf(a);
    const pulls = await json(
      "GET",
      `/repos/${r}/pulls?state=${s}&per_page=${PER_PAGE}`,
      `pull requests of ${r}`,
    );
    if (pulls.length === 0) return `no ${s === "all" ? "" : `${s} `}pull requests in ${r}`;
    return pulls
      .map(
        (p) =>
          `#${p.number} [${p.state}${p.draft ? ", draft" : ""}] ${p.title} — ${p.head?.ref ?? "?"} → ${p.base?.ref ?? "?"} by @${p.user?.login ?? "?"}`,
      )
      .join("\n");
  });
}

function pathOf(a) {
  // Checked so a model cannot leave the contents endpoint ("../../../user").
  const p = typeof a.path === "string" ? a.path.replace(/^\/+|\/+$/g, "") : undefined;
  if (
    p === undefined ||
    (p !== "" && p.split("/").some((s) => s === "" || s === "." || s === ".."))
  ) {
    throw new ToolFailure(
      `invalid: path must be a path inside the repository, got ${JSON.stringify(a.path)}`,
    );
  }
  return p.split("/").map(encodeURIComponent).join("/");
}

export function getFile({ callId, arguments: a }) {
  return guarded(callId, async () => {
    const r = repoOf(a);
    const p = pathOf(a);
    if (a.ref !== undefined && (typeof a.ref !== "string" || a.ref === "")) {
      throw new ToolFailure("invalid: ref must be a branch, tag or commit name");
    }
    const query = a.ref !== undefined ? `?ref=${encodeURIComponent(a.ref)}` : "";
    const what = `${a.path} in ${r}${a.ref !== undefined ? ` at ${a.ref}` : ""}`;
    // The raw media type answers a file with its bytes and a directory with its JSON listing.
    const res = await api("GET", `/repos/${r}/contents/${p}${query}`, what, {
      accept: "application/vnd.github.raw+json",
    });
    const type =
      Object.entries(res.headers).find(([k]) => k.toLowerCase() === "content-type")?.[1] ?? "";
    if (!type.includes("vnd.github.raw")) {
      let entries;
      try {
        entries = JSON.parse(astrid.utf8.decode(res.body));
      } catch {}
      if (Array.isArray(entries)) {
        return entries.map((e) => (e.type === "dir" ? `${e.name}/` : e.name)).join("\n");
      }
      if (entries && typeof entries === "object" && entries.type) {
        return `${a.path} is a ${entries.type}, not a file`;
      }
    }
    if (res.body.length <= MAX_FILE) return astrid.utf8.decode(res.body);
    let end = MAX_FILE;
    while (end > 0 && (res.body[end] & 0xc0) === 0x80) end--;
    return `${astrid.utf8.decode(res.body.subarray(0, end))}\n[truncated at ${MAX_FILE} bytes of ${res.body.length}]`;
  });
}
