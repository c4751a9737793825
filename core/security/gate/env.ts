/**
 * Layer 2, environment: a capsule sees only the variables its manifest declares, and those
 * declared as secrets are flagged so every caller (logs, audit, approval prompts) redacts their
 * values. The host's own environment (tokens, cloud credentials, PATH) is never passed through
 * by default: an undeclared name is denied, not defaulted.
 */

import type { Decision } from "../decision.js";
import { allow, deny } from "../decision.js";

export type EnvType = "secret" | "string";

export interface EnvEntry {
  readonly name: string;
  readonly type: EnvType;
}

const q = (s: string): string => JSON.stringify(s);

// POSIX portable names: anything else cannot be set reliably by every shell and runtime, and
// "=" or NUL in a name would corrupt the environment block.
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

export class EnvGate {
  readonly #entries: ReadonlyMap<string, EnvType>;

  constructor(entries: readonly EnvEntry[]) {
    const map = new Map<string, EnvType>();
    for (const e of entries) {
      if (typeof e.name !== "string" || !ENV_NAME.test(e.name)) {
        throw new Error(`env name must match [A-Za-z_][A-Za-z0-9_]*, got ${q(String(e.name))}`);
      }
      if (e.type !== "secret" && e.type !== "string") {
        throw new Error(
          `env ${q(e.name)} has type ${q(String(e.type))}; expected "secret" or "string"`,
        );
      }
      // Two declarations of one name could disagree on "secret"; refuse rather than pick one.
      if (map.has(e.name)) throw new Error(`env ${q(e.name)} is declared twice`);
      map.set(e.name, e.type);
    }
    this.#entries = map;
  }

  /** Names compare exactly: on Linux "path" and "PATH" are different variables. */
  checkEnv(name: string): Decision {
    const type = typeof name === "string" ? this.#entries.get(name) : undefined;
    if (type === undefined) {
      return deny(
        "gate",
        `environment variable ${q(String(name))} is not declared in the manifest`,
      );
    }
    return allow("gate", `env ${name} (${type})`);
  }

  isSecret(name: string): boolean {
    return this.#entries.get(name) === "secret";
  }

  /** Every secret name, for redacting values wherever they might be printed. */
  secretNames(): readonly string[] {
    return [...this.#entries].filter(([, t]) => t === "secret").map(([n]) => n);
  }
}
