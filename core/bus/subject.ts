/**
 * NATS subject grammar, shared by both bus implementations and by the IPC ACL so that the
 * embedded bus, the sidecar's ACL and the NATS server all agree on what a pattern matches.
 *
 * A subject is dot-separated tokens. In a pattern, `*` stands for exactly one token and `>`
 * for one or more trailing tokens (only as the last token). Published subjects are literal.
 */

export class SubjectError extends Error {
  override readonly name = "SubjectError";
}

/** Upper bound on subject length; NATS has no hard limit, but nothing we route needs more. */
export const MAX_SUBJECT_LENGTH = 512;

// NATS forbids whitespace in subjects; we also refuse control characters so a subject is
// always printable in audit entries and logs.
const FORBIDDEN = /[\s\u0000-\u001f\u007f]/;

function checkCommon(kind: string, s: string): string[] {
  if (typeof s !== "string" || s.length === 0) throw new SubjectError(`${kind} is empty`);
  if (s.length > MAX_SUBJECT_LENGTH) {
    throw new SubjectError(`${kind} is longer than ${MAX_SUBJECT_LENGTH} characters`);
  }
  if (FORBIDDEN.test(s)) {
    throw new SubjectError(`${kind} "${s}" contains whitespace or a control character`);
  }
  const tokens = s.split(".");
  if (tokens.some((t) => t.length === 0)) {
    throw new SubjectError(`${kind} "${s}" has an empty token (leading, trailing or double dot)`);
  }
  return tokens;
}

/** Throws unless `s` is a literal subject that may be published to. */
export function assertPublishSubject(s: string): void {
  const tokens = checkCommon("subject", s);
  for (const t of tokens) {
    if (t.includes("*") || t.includes(">")) {
      throw new SubjectError(`subject "${s}" contains a wildcard; publish to a literal subject`);
    }
  }
}

/** Throws unless `p` is a valid subscription pattern. */
export function assertPattern(p: string): void {
  const tokens = checkCommon("pattern", p);
  tokens.forEach((t, i) => {
    if (t === "*") return;
    if (t === ">") {
      if (i !== tokens.length - 1) {
        throw new SubjectError(`pattern "${p}": ">" is only allowed as the last token`);
      }
      return;
    }
    // NATS treats "a*" as a literal token; we refuse it because it reads like a glob and an
    // ACL author who writes it almost certainly means something else.
    if (t.includes("*") || t.includes(">")) {
      throw new SubjectError(
        `pattern "${p}": wildcard inside token "${t}"; "*" and ">" must stand alone`,
      );
    }
  });
}

export function isValidPattern(p: string): boolean {
  try {
    assertPattern(p);
    return true;
  } catch {
    return false;
  }
}

/** Pre-split pattern: matching a pattern against many subjects splits it once. */
export interface CompiledPattern {
  readonly source: string;
  readonly tokens: readonly string[];
  readonly tail: boolean;
}

export function compilePattern(p: string): CompiledPattern {
  assertPattern(p);
  const tokens = p.split(".");
  const tail = tokens[tokens.length - 1] === ">";
  return { source: p, tokens: tail ? tokens.slice(0, -1) : tokens, tail };
}

/** Does the literal subject match the pattern? Both are assumed valid. */
export function matchCompiled(pattern: CompiledPattern, subjectTokens: readonly string[]): boolean {
  const n = pattern.tokens.length;
  if (pattern.tail ? subjectTokens.length <= n : subjectTokens.length !== n) return false;
  for (let i = 0; i < n; i++) {
    const t = pattern.tokens[i];
    if (t !== "*" && t !== subjectTokens[i]) return false;
  }
  return true;
}

export function subjectMatches(pattern: string, subject: string): boolean {
  return matchCompiled(compilePattern(pattern), subject.split("."));
}

/**
 * Is every subject matched by `inner` also matched by `outer`? Used to decide whether a
 * requested subscription pattern stays inside an allowed one (a capsule allowed `a.*` may
 * subscribe to `a.b` or `a.*` but not to `a.>` or `>`).
 */
export function patternCovers(outer: string, inner: string): boolean {
  const o = compilePattern(outer);
  const i = compilePattern(inner);
  const on = o.tokens.length;
  const inn = i.tokens.length;
  if (i.tail) {
    // inner reaches arbitrarily deep: only an outer tail at or before inner's tail covers it.
    if (!o.tail || on > inn) return false;
  } else if (o.tail ? inn <= on : inn !== on) {
    return false;
  }
  for (let k = 0; k < on; k++) {
    const ot = o.tokens[k];
    const it = i.tokens[k];
    if (ot === "*") continue;
    if (it === "*" || ot !== it) return false;
  }
  return true;
}
