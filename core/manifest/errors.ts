/** Manifest errors carry every problem at once, each with file, line and dotted field path. */

import type { KeyPath } from "./locate.js";

export interface ManifestIssue {
  readonly file: string;
  readonly line: number;
  readonly column?: number;
  /** Dotted path with [i] indexes, e.g. `capabilities.net[2]`; "" for the whole document. */
  readonly field: string;
  readonly message: string;
}

export function formatIssue(i: ManifestIssue): string {
  return `${i.file}:${i.line}: ${i.field === "" ? "(document)" : i.field}: ${i.message}`;
}

export class ManifestError extends Error {
  override readonly name = "ManifestError";
  constructor(readonly issues: readonly ManifestIssue[]) {
    super(issues.map(formatIssue).join("\n"));
  }
}

/** Thrown by loadManifest when the directory has no Capsule.toml. */
export class ManifestNotFoundError extends Error {
  override readonly name = "ManifestNotFoundError";
}

export function formatField(path: KeyPath): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else {
      const key = /^[A-Za-z0-9_-]+$/.test(seg) ? seg : JSON.stringify(seg);
      out += out === "" ? key : `.${key}`;
    }
  }
  return out;
}
