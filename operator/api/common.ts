/**
 * Shapes shared by the astrid.dev kinds: names, conditions, secret references, money. Each
 * one is a zod schema so the CRD's OpenAPI schema and the TypeScript type come from the same
 * object and cannot drift.
 */
import { z } from "zod";

export const GROUP = "astrid.dev";
export const VERSION = "v1alpha1";
export const API_VERSION = `${GROUP}/${VERSION}`;

/** A CEL rule as Kubernetes stores it in `x-kubernetes-validations`. */
export interface CelRule {
  readonly rule: string;
  readonly message: string;
  /** Set when the rule reads `oldSelf` and should say which field it concerns. */
  readonly fieldPath?: string;
  readonly reason?: "FieldValueInvalid" | "FieldValueForbidden" | "FieldValueRequired";
}

/**
 * Has the CRD check a zod regex as a CEL rule carrying `message` instead of as `pattern`:
 * the API server's pattern error prints the regex, which tells a person little.
 */
export function readablePattern(message: string): { "x-astrid-pattern-message": string } {
  return { "x-astrid-pattern-message": message };
}

/** Attaches CEL rules to a schema; the CRD generator copies them into the OpenAPI schema. */
export function celRules(...rules: CelRule[]): { "x-kubernetes-validations": CelRule[] } {
  return { "x-kubernetes-validations": rules };
}

// Object names become Deployment names, NATS users and audit fields: a DNS label keeps them
// valid in all of those (and bounded, which also keeps CEL cost estimates finite).
export const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const objectName = z
  .string()
  .min(1)
  .max(63)
  .regex(DNS_LABEL, "must be a DNS label: lowercase letters, digits and '-', 1-63 characters");

/**
 * A USD amount as a decimal string. Money never travels as a float: core/security/budget
 * converts it exactly to integer micro-dollars, so at most 6 decimals, and at most 9 integer
 * digits keeps the micro-dollar value a safe integer.
 */
export const USD_DECIMAL = /^(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$/;
const USD_MESSAGE = 'must be a decimal USD amount with at most 6 decimals, e.g. "5.00"';
export const usdAmount = z
  .string()
  .max(16)
  .regex(USD_DECIMAL, USD_MESSAGE)
  .meta(readablePattern(USD_MESSAGE));

/**
 * A count that may exceed 2^53 (micro-dollars summed over a long-lived cluster), held as a
 * decimal string per the Kubernetes API conventions: JavaScript and JSON clients lose
 * precision on larger numbers.
 */
export const INT64_STRING = /^(0|[1-9][0-9]{0,18})$/;
const INT64_MESSAGE = "must be a non-negative integer written as a string";
export const int64String = z
  .string()
  .max(19)
  .regex(INT64_STRING, INT64_MESSAGE)
  .meta(readablePattern(INT64_MESSAGE));

/** A count that stays far below 2^53 (tokens, generations): a plain JSON integer. */
export const count = z.number().int().min(0);

export const SHA256_DIGEST = /^sha256:[0-9a-f]{64}$/;

/** metav1.Condition, field for field, so kubectl and client libraries read it as usual. */
export const conditionSchema = z.strictObject({
  type: z
    .string()
    .min(1)
    .max(316)
    .regex(
      /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/,
    ),
  status: z.enum(["True", "False", "Unknown"]),
  observedGeneration: count.optional(),
  lastTransitionTime: z.iso.datetime({ offset: true }),
  reason: z
    .string()
    .min(1)
    .max(1024)
    .regex(/^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$/),
  message: z.string().max(32768),
});
export type Condition = z.output<typeof conditionSchema>;

/** A condition list keyed by `type`, so server-side apply merges one condition per writer. */
export function conditionList(types: readonly string[]) {
  return z
    .array(conditionSchema)
    .max(16)
    .meta({
      description: `Conditions by type: ${types.join(", ")}.`,
      "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["type"],
    });
}

/** Where a secret value comes from; the value itself never appears in a CR. */
export const secretKeyRefSchema = z.strictObject({
  name: z.string().min(1).max(253),
  key: z.string().min(1).max(253),
  optional: z.boolean().optional(),
});

/** The common object metadata the schemas check in examples; the API server owns the rest. */
export const objectMetaSchema = z
  .object({
    name: objectName,
    namespace: z.string().min(1).max(63).optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
  })
  .loose();

/** A condition as a reconciler decides it; times and generation are filled in by withTimes. */
export interface ConditionInput<T extends string = string> {
  type: T;
  status: Condition["status"];
  reason: string;
  message: string;
}

/**
 * The conditions to write: each stamped with the object's generation, and keeping its
 * lastTransitionTime when the status did not change, so a re-reconcile writes nothing.
 */
export function withTimes(
  wanted: readonly ConditionInput[],
  current: readonly Condition[],
  generation: number,
  now: string,
): Condition[] {
  return wanted.map((c) => {
    const prev = current.find((p) => p.type === c.type);
    return {
      ...c,
      observedGeneration: generation,
      lastTransitionTime: prev && prev.status === c.status ? prev.lastTransitionTime : now,
    };
  });
}
