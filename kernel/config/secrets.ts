/**
 * Provider API keys: read from the environment at the moment they are needed, never stored in
 * the config, on disk, in logs or in the audit. The config only names the variable
 * (`api_key_env`), so the effective config can be printed, logged or sent to the daemon
 * without carrying a key.
 *
 * `redact` is the second line: anything about to be logged goes through it, so a key that
 * slipped into a message (a provider echoing the request, an exception with headers) comes out
 * as `[redacted:ANTHROPIC_API_KEY]`.
 */
import { closestKey } from "../../core/manifest/suggest.js";
import type { AstridConfig } from "./schema.js";

export type Env = Readonly<Record<string, string | undefined>>;

export class ProviderKeyError extends Error {
  override readonly name = "ProviderKeyError";
}

/**
 * The API key of `providerName`, from the variable its `api_key_env` names. `undefined` when the
 * provider declares no key (a local Ollama). Throws when the variable is unset or empty: a
 * request without its key would only fail later at the provider, with a less clear message.
 */
export function providerKey(
  config: AstridConfig,
  providerName: string,
  env: Env,
): string | undefined {
  const provider = config.providers[providerName];
  if (!provider) {
    const known = Object.keys(config.providers).sort();
    const near = closestKey(providerName, known);
    throw new ProviderKeyError(
      `no provider named ${JSON.stringify(providerName)}${near ? ` (did you mean ${near}?)` : ""}; configured: ${known.join(", ")}`,
    );
  }
  const name = provider.api_key_env;
  if (name === undefined) return undefined;
  const value = env[name];
  if (value === undefined || value.trim() === "") {
    throw new ProviderKeyError(
      `${name} is not set: export it or choose another provider with --provider`,
    );
  }
  return value;
}

/**
 * Environment variables whose values are secrets: every provider's `api_key_env`, plus any
 * variable whose name says it holds a credential (a key of a provider added later, a token
 * for a tool capsule).
 */
const SECRET_ENV_NAME = /(^|_)(API_?KEY|KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$/i;

export function secretEnvNames(env: Env, config?: AstridConfig): string[] {
  const names = new Set<string>();
  for (const p of Object.values(config?.providers ?? {})) {
    if (p.api_key_env !== undefined) names.add(p.api_key_env);
  }
  for (const name of Object.keys(env)) if (SECRET_ENV_NAME.test(name)) names.add(name);
  return [...names].sort();
}

/**
 * Values shorter than this are not redacted: replacing "1" or "true" everywhere would garble
 * every log line, and a value that short is not a working API key.
 */
export const MIN_REDACTED_LENGTH = 8;

/** `text` with the value of every secret variable replaced by `[redacted:NAME]`. */
export function redact(text: string, env: Env, config?: AstridConfig): string {
  const secrets: { name: string; value: string }[] = [];
  for (const name of secretEnvNames(env, config)) {
    const value = env[name];
    if (value !== undefined && value.length >= MIN_REDACTED_LENGTH) secrets.push({ name, value });
  }
  // Longest first, so a key that contains another key is replaced whole.
  secrets.sort((a, b) => b.value.length - a.value.length);
  let out = text;
  for (const { name, value } of secrets) out = out.split(value).join(`[redacted:${name}]`);
  return out;
}
