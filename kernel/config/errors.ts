/**
 * Config errors name where the bad value was written (`file:line`), the field, and what was
 * expected — one line per problem, so a single run shows every mistake.
 */

export interface ConfigIssue {
  /** `/home/u/.astrid/config.toml:7`, or undefined when no file is involved. */
  readonly source?: string;
  /** Dotted key path, or "" when the problem is not about one field. */
  readonly field: string;
  readonly message: string;
}

export function formatConfigIssue(i: ConfigIssue): string {
  return [i.source, i.field, i.message].filter((x) => x !== undefined && x !== "").join(": ");
}

export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly issues: readonly ConfigIssue[]) {
    super(issues.map(formatConfigIssue).join("\n"));
  }
}
