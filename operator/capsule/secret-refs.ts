/**
 * The Secrets a Capsule's `spec.env` names, checked before its pods need them. A missing one
 * would leave the pods in CreateContainerConfigError with the reason buried in pod events; the
 * Capsule says it in its own conditions instead, and says it again until the Secret appears
 * (kagent users hit exactly this).
 *
 * Secrets are read one by one with GET, not watched: a cache of every Secret in the watched
 * namespaces would hold credentials the operator never needs in its memory.
 */
import type { Capsule } from "../api/capsule.js";
import { type KubeRest, NotFoundError, resourcePath, Secrets } from "../runtime/rest.js";

/** Key names of a Secret (never its values), or undefined when it does not exist. */
export type SecretKeys = (
  namespace: string,
  name: string,
) => Promise<readonly string[] | undefined>;

export function secretKeysFrom(rest: KubeRest): SecretKeys {
  return async (namespace, name) => {
    try {
      const s = await rest.request<{ data?: Record<string, string> }>(
        "GET",
        resourcePath(Secrets, namespace, name),
      );
      return Object.keys(s.data ?? {});
    } catch (err) {
      if (err instanceof NotFoundError) return undefined;
      throw err;
    }
  };
}

/** What is missing, one line per variable, or [] when every required reference resolves. */
export async function missingSecretRefs(capsule: Capsule, keysOf: SecretKeys): Promise<string[]> {
  const namespace = capsule.metadata.namespace ?? "";
  const seen = new Map<string, readonly string[] | undefined>();
  const problems: string[] = [];
  for (const e of capsule.spec.env ?? []) {
    const ref = e.valueFrom.secretKeyRef;
    if (ref.optional) continue;
    if (!seen.has(ref.name)) seen.set(ref.name, await keysOf(namespace, ref.name));
    const keys = seen.get(ref.name);
    if (keys === undefined) problems.push(`${e.name}: Secret ${ref.name} not found`);
    else if (!keys.includes(ref.key))
      problems.push(`${e.name}: Secret ${ref.name} has no key ${ref.key}`);
  }
  return problems;
}
