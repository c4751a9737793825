// The model router: serves `llm.v1.chat.router` and sends each request to one of several
// provider capsules, chosen by rules over the request, falling back to the next provider when
// the chosen one is down. Its answer says what it chose and why in `metadata.router`.
//
// Configuration (manifest [env]; the session's env or settings fill them):
// - ROUTER_PROVIDERS: provider capsule names in preference order, comma-separated. Unset: the
//   one capsule the session bound the router's astrid.llm import to.
// - ROUTER_RULES: JSON array of `{ "when": { …conditions }, "use": "<provider>" }`, first match
//   wins; a rule without `when` always matches. No rule matching: ROUTER_PROVIDERS order.
//   Conditions (all must hold):
//     maxInputChars / minInputChars   characters of the messages' text (+ tool-call arguments)
//     maxComplexity / minComplexity   inputChars + 1000 × number of tools offered
//     modelHint                       the request's `model` contains this (case-insensitive)
//     maxCostMicroUsd                 the caller's ceiling `metadata.maxCostMicroUsd` is set and
//                                     at most this (a thrifty caller gets the cheap provider)
//     hasTools                        whether the request offers tools
// The chosen provider is tried first, then the others in ROUTER_PROVIDERS order.
//
// Fallback only on failures that another provider may not share: unavailable (no responder),
// timeout, io (the provider failed internally). A denial, a spent budget, an invalid request or
// a too-large one is the caller's answer, not the provider's outage: trying elsewhere would
// route around a security decision, so it is returned as is.
//
// Deltas: the request's `stream` inbox is passed on, so the provider streams straight to the
// caller. A provider that fails mid-answer may have streamed part of it; the next one starts
// again at seq 0, which tells the reader to start over.

const TOOL_WEIGHT = 1000;
const PROVIDER_TIMEOUT_MS = 300_000;
const FALLBACK_CODES = new Set(["unavailable", "timeout", "io"]);
const NAME = /^[a-z0-9][a-z0-9_-]*$/;
const CONDITIONS = {
  maxInputChars: "number",
  minInputChars: "number",
  maxComplexity: "number",
  minComplexity: "number",
  modelHint: "string",
  maxCostMicroUsd: "number",
  hasTools: "boolean",
};

function fail(message) {
  throw new Error(`router: ${message}`);
}

function config(name) {
  const v = astrid.sys.config(name);
  return v === undefined || v === null || v === "" ? undefined : v;
}

/**
 * Validates the router's settings: `{ providers, rules }`. A rule naming a provider that is not
 * in the list, or a condition the router does not know, is refused rather than ignored: a
 * misspelt condition silently matching everything would send every request to that provider.
 */
export function parseRouterConfig(input) {
  const providers = String(input.providers ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
  if (providers.length === 0) fail("ROUTER_PROVIDERS names no provider");
  for (const p of providers) {
    if (!NAME.test(p)) fail(`ROUTER_PROVIDERS: "${p}" is not a capsule name`);
  }
  if (new Set(providers).size !== providers.length) fail("ROUTER_PROVIDERS names a provider twice");
  let rules = [];
  if (input.rules !== undefined) {
    try {
      rules = JSON.parse(input.rules);
    } catch (err) {
      fail(`ROUTER_RULES is not JSON: ${err.message}`);
    }
    if (!Array.isArray(rules)) fail("ROUTER_RULES must be a JSON array of rules");
  }
  rules.forEach((rule, i) => {
    const at = `ROUTER_RULES[${i}]`;
    if (rule === null || typeof rule !== "object" || Array.isArray(rule)) {
      fail(`${at} must be an object { "when": {…}, "use": "<provider>" }`);
    }
    for (const k of Object.keys(rule)) {
      if (k !== "when" && k !== "use") fail(`${at} has unknown field "${k}"; expected when, use`);
    }
    if (!providers.includes(rule.use)) {
      fail(
        `${at}.use must be one of ROUTER_PROVIDERS (${providers.join(", ")}), got ${JSON.stringify(rule.use)}`,
      );
    }
    if (rule.when === undefined) return;
    if (rule.when === null || typeof rule.when !== "object" || Array.isArray(rule.when)) {
      fail(`${at}.when must be an object of conditions`);
    }
    for (const [k, v] of Object.entries(rule.when)) {
      const type = CONDITIONS[k];
      if (type === undefined) {
        fail(
          `${at}.when has unknown condition "${k}"; known: ${Object.keys(CONDITIONS).join(", ")}`,
        );
      }
      if (typeof v !== type || (type === "number" && !Number.isFinite(v))) {
        fail(`${at}.when.${k} must be a ${type}, got ${JSON.stringify(v)}`);
      }
    }
  });
  return { providers, rules };
}

function contentChars(content) {
  if (typeof content === "string") return content.length;
  if (!Array.isArray(content)) return 0;
  let n = 0;
  for (const p of content) {
    if (p.type === "text") n += p.text.length;
    else if (p.type === "tool_result") n += p.content.length;
    else if (p.type === "tool_use") n += JSON.stringify(p.input ?? {}).length;
  }
  return n;
}

/** What the rules look at: `{ inputChars, tools, complexity, model, maxCostMicroUsd }`. */
export function describeRequest(request) {
  const inputChars = (request.messages ?? []).reduce((n, m) => n + contentChars(m.content), 0);
  const tools = Array.isArray(request.tools) ? request.tools.length : 0;
  const ceiling = request.metadata?.maxCostMicroUsd;
  return {
    inputChars,
    tools,
    complexity: inputChars + TOOL_WEIGHT * tools,
    model: typeof request.model === "string" ? request.model : undefined,
    maxCostMicroUsd: Number.isFinite(ceiling) ? ceiling : undefined,
  };
}

/** Why a condition holds, or undefined when it does not. */
function check(name, want, f) {
  switch (name) {
    case "maxInputChars":
      return f.inputChars <= want ? `input ${f.inputChars} chars ≤ ${want}` : undefined;
    case "minInputChars":
      return f.inputChars >= want ? `input ${f.inputChars} chars ≥ ${want}` : undefined;
    case "maxComplexity":
      return f.complexity <= want ? `complexity ${f.complexity} ≤ ${want}` : undefined;
    case "minComplexity":
      return f.complexity >= want ? `complexity ${f.complexity} ≥ ${want}` : undefined;
    case "modelHint":
      return f.model?.toLowerCase().includes(want.toLowerCase())
        ? `model "${f.model}" asks for "${want}"`
        : undefined;
    case "maxCostMicroUsd":
      return f.maxCostMicroUsd !== undefined && f.maxCostMicroUsd <= want
        ? `cost ceiling ${f.maxCostMicroUsd} µUSD ≤ ${want}`
        : undefined;
    case "hasTools":
      return f.tools > 0 === want ? (want ? `${f.tools} tools offered` : "no tools") : undefined;
    default:
      return undefined;
  }
}

/**
 * The routing decision, a pure function of the request and the settings:
 * `{ order, chose, reason }` — the providers to try in turn, the first of them, and why.
 */
export function decideRoute(input) {
  const { providers, rules } = parseRouterConfig(input);
  const f = describeRequest(input.request);
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i];
    const why = [];
    let matched = true;
    for (const [k, v] of Object.entries(rule.when ?? {})) {
      const r = check(k, v, f);
      if (r === undefined) {
        matched = false;
        break;
      }
      why.push(r);
    }
    if (!matched) continue;
    return {
      order: [rule.use, ...providers.filter((p) => p !== rule.use)],
      chose: rule.use,
      reason: `rule ${i + 1}: ${why.length > 0 ? why.join(", ") : "always"}`,
    };
  }
  return {
    order: providers,
    chose: providers[0],
    reason: rules.length > 0 ? "no rule matched: first provider" : "no rules: first provider",
  };
}

export async function chat(request) {
  const providers = config("ROUTER_PROVIDERS") ?? config("bind.astrid.llm");
  if (providers === undefined) {
    fail("ROUTER_PROVIDERS is unset and no capsule is bound to the astrid.llm import");
  }
  const decision = decideRoute({ request, providers, rules: config("ROUTER_RULES") });
  const tried = [];
  for (const provider of decision.order) {
    try {
      const reply = await astrid.ipc.call(
        `llm.v1.chat.${provider}`,
        "llm.chat.request",
        request,
        PROVIDER_TIMEOUT_MS,
      );
      tried.push({ provider, outcome: "ok" });
      const router = { chose: decision.chose, reason: decision.reason, answered: provider, tried };
      astrid.log("info", "router answered", { chose: decision.chose, answered: provider, tried });
      return { ...reply, metadata: { ...reply.metadata, router } };
    } catch (err) {
      if (err?.name !== "HostError") throw err;
      tried.push({ provider, outcome: err.code, message: err.message });
      astrid.log("warn", "router: provider failed", { provider, code: err.code });
      if (!FALLBACK_CODES.has(err.code)) {
        throw Object.assign(
          new Error(`router: ${provider} refused (${err.code}), not falling back: ${err.message}`),
          { code: err.code },
        );
      }
    }
  }
  throw Object.assign(
    new Error(
      `router: every provider failed: ${tried.map((t) => `${t.provider} (${t.outcome})`).join(", ")}`,
    ),
    { code: "unavailable" },
  );
}
