/**
 * The answer every security layer gives. An allow names the rule that granted it and a deny
 * names why, because both end up in the audit chain and a reviewer must be able to tell which
 * line of which manifest (or which token, budget or approval) let an action through.
 */

export type Layer = "sandbox" | "gate" | "acl" | "token" | "budget" | "approval";

export type Decision =
  | { readonly allowed: true; readonly layer: Layer; readonly rule: string }
  | { readonly allowed: false; readonly layer: Layer; readonly reason: string };

export function allow(layer: Layer, rule: string): Decision {
  return { allowed: true, layer, rule };
}

export function deny(layer: Layer, reason: string): Decision {
  return { allowed: false, layer, reason };
}
