/** "Did you mean" for unknown keys: a typo in a capability key must not pass silently. */

function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0] ?? 0;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j] ?? 0;
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      prev[j] = Math.min(up + 1, (prev[j - 1] ?? 0) + 1, diag + cost);
      diag = up;
    }
  }
  return prev[b.length] ?? 0;
}

/** The single known key close to `key` (edit distance ≤ 2, or case/separator only), if any. */
export function closestKey(key: string, known: readonly string[]): string | undefined {
  const norm = (s: string): string => s.toLowerCase().replace(/[-_]/g, "");
  const exactish = known.filter((k) => norm(k) === norm(key));
  if (exactish.length === 1) return exactish[0];
  const limit = key.length <= 3 ? 1 : 2;
  const scored = known
    .map((k) => ({ k, d: distance(key, k) }))
    .filter((x) => x.d <= limit)
    .sort((x, y) => x.d - y.d);
  const best = scored[0];
  if (!best) return undefined;
  // Two equally close candidates: guessing would mislead, so suggest nothing.
  if (scored[1] && scored[1].d === best.d) return undefined;
  return best.k;
}
