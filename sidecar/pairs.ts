/**
 * `name=value` lists of the sidecar's configuration: `bindings` (`astrid.llm=cache`, the
 * capsule's imports wired to the capsules that export them) and `settings` (`key=value`, extra
 * non-secret config the guest reads with config()).
 *
 * A binding's target becomes the last token of the subjects the guest addresses
 * (`llm.v1.chat.<capsule>`), so it must be a package name: a target like `cache.>` or `*`
 * would turn a request into a wildcard publish to every capsule.
 */
import { INTERFACE_NAME, PACKAGE_NAME } from "../core/manifest/schema.js";

/** `astrid.llm`: a namespace and an interface, as the manifest's [imports.<ns>] spell them. */
const BINDING_IFACE = new RegExp(
  `^${INTERFACE_NAME.source.slice(1, -1)}\\.${INTERFACE_NAME.source.slice(1, -1)}$`,
);
/** Config keys the guest can read; `bind.*` is reserved for `bindings`. */
const SETTING_KEY = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

export type PairsResult =
  | { readonly ok: true; readonly value: Record<string, string> }
  | { readonly ok: false; readonly errors: readonly string[] };

function splitPair(entry: string): [string, string] | undefined {
  const eq = entry.indexOf("=");
  return eq < 0 ? undefined : [entry.slice(0, eq), entry.slice(eq + 1)];
}

/** `["astrid.llm=cache"]` → `{ "astrid.llm": "cache" }`; every bad entry is named. */
export function parseBindings(entries: readonly string[]): PairsResult {
  const errors: string[] = [];
  const value: Record<string, string> = {};
  for (const entry of entries) {
    const pair = splitPair(entry);
    const q = JSON.stringify(entry);
    if (!pair) {
      errors.push(`entry ${q}: expected iface=capsule, e.g. astrid.llm=cache`);
      continue;
    }
    const [iface, capsule] = pair;
    if (!BINDING_IFACE.test(iface)) {
      errors.push(
        `entry ${q}: expected an interface like astrid.llm before "=", got ${JSON.stringify(iface)}`,
      );
    } else if (!PACKAGE_NAME.test(capsule)) {
      errors.push(
        `entry ${q}: expected a capsule name matching ${PACKAGE_NAME.source} after "=", got ${JSON.stringify(capsule)}`,
      );
    } else if (iface in value) {
      errors.push(`entry ${q}: ${iface} is bound twice (to ${value[iface]} and ${capsule})`);
    } else value[iface] = capsule;
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value };
}

/** `["tool_capsules=fs,shell"]` → `{ tool_capsules: "fs,shell" }`; every bad entry is named. */
export function parseSettings(entries: readonly string[]): PairsResult {
  const errors: string[] = [];
  const value: Record<string, string> = {};
  for (const entry of entries) {
    const pair = splitPair(entry);
    const q = JSON.stringify(entry);
    if (!pair) {
      errors.push(`entry ${q}: expected key=value, e.g. tool_capsules=fs,shell`);
      continue;
    }
    const [key, v] = pair;
    if (!SETTING_KEY.test(key)) {
      errors.push(
        `entry ${q}: expected a key matching ${SETTING_KEY.source} before "=", got ${JSON.stringify(key)}`,
      );
    } else if (key.startsWith("bind.")) {
      // A setting must not rewire an import behind the bindings' back (and their checks).
      errors.push(`entry ${q}: bind.* keys are set through bindings, not settings`);
    } else if (Object.hasOwn(value, key)) {
      errors.push(`entry ${q}: ${key} is set twice`);
    } else value[key] = v;
  }
  return errors.length > 0 ? { ok: false, errors } : { ok: true, value };
}

/**
 * Splits a comma-separated `key=value` list where values may themselves hold commas
 * (`tool_capsules=fs,shell,max_steps=8`): a part without `=` continues the previous value.
 * A leading part without `=` is kept as its own (bad) entry so validation names it.
 */
export function splitPairList(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split(",")) {
    const part = raw.trim();
    if (part === "") continue;
    if (!part.includes("=") && out.length > 0 && out[out.length - 1]!.includes("=")) {
      out[out.length - 1] = `${out[out.length - 1]},${part}`;
    } else out.push(part);
  }
  return out;
}
