/**
 * How a session is wired: config.toml's [bindings], plus the configured provider for every model
 * import they leave open (a cache or router bound in [bindings] keeps its own wiring). One
 * function, so `astrid capsule tree` shows exactly what the daemon runs.
 */
import type { Bindings, Manifest } from "../core/manifest/index.js";

export function sessionBindings(
  configured: Bindings,
  provider: string,
  manifests: readonly Manifest[],
): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  for (const [k, v] of Object.entries(configured)) out[k] = { ...v };
  for (const m of manifests) {
    const name = m.package.name;
    if (m.imports.astrid?.llm === undefined || name === provider) continue;
    out[name] ??= {};
    out[name]["astrid.llm"] ??= provider;
  }
  return out;
}
