/**
 * What a person does with the cluster scenario, with kubectl: apply it, wait for the
 * capsules, answer each Approval as it appears, read the session's status, and verify the
 * audit chains on the volumes with the capsules' identity keys. Shared by the end-to-end test
 * and `make cluster-demo`.
 */
import { createPublicKey, type KeyObject } from "node:crypto";
import { AuditKeyring, verifyChain } from "../../core/audit/index.js";
import type { ClusterRig } from "./rig.js";
import { NAMESPACE, type Scenario, SESSION } from "./scenario.js";

// biome-ignore lint/suspicious/noExplicitAny: JSON from kubectl, read field by field.
export type Obj = Record<string, any>;

/** Capsules of the scenario, and those with pods of their own (the orchestrator has none). */
export const CAPSULES = ["react", "anthropic", "http"] as const;
export const SERVING = ["anthropic", "http"] as const;

/** All the driving needs: a kubectl against the cluster (the rig's, or one on PATH for kind). */
export type Kubectl = Pick<ClusterRig, "kubectl">;

export async function kubectlJson(rig: Kubectl, args: readonly string[]): Promise<Obj> {
  const r = await rig.kubectl([...args, "-o", "json"]);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Obj;
}

export function condition(o: Obj, type: string): Obj | undefined {
  return (o.status?.conditions ?? []).find((c: Obj) => c.type === type);
}

export function finished(session: Obj): boolean {
  return (
    condition(session, "Succeeded")?.status === "True" ||
    condition(session, "Failed")?.status === "True"
  );
}

/** `kubectl apply --server-side` of the scenario, then waits for every Capsule to be Ready. */
export async function applyScenario(rig: Kubectl, scenario: Pick<Scenario, "yaml">): Promise<void> {
  const applied = await rig.kubectl(["apply", "--server-side", "-f", "-"], scenario.yaml);
  if (applied.code !== 0) throw new Error(`kubectl apply: ${applied.stderr}`);
  const ready = await rig.kubectl([
    "wait",
    "-n",
    NAMESPACE,
    "--for=condition=Ready",
    ...CAPSULES.map((c) => `capsule/${c}`),
    "--timeout=180s",
  ]);
  if (ready.code !== 0) throw new Error(`capsules not Ready: ${ready.stderr}`);
}

/**
 * Plays the person at kubectl until the session finishes: each Approval that appears Pending
 * is shown to `onApproval` and answered with `kubectl patch` (allow_once). Returns the
 * finished AgentSession and the Approvals answered, in order.
 */
export async function answerUntilFinished(
  rig: Kubectl,
  opts: { timeoutMs: number; onApproval?: (a: Obj) => void },
): Promise<{ session: Obj; approvals: Obj[] }> {
  const approvals: Obj[] = [];
  const deadline = Date.now() + opts.timeoutMs;
  for (;;) {
    const session = await kubectlJson(rig, ["get", "agentsession", SESSION, "-n", NAMESPACE]);
    if (finished(session)) return { session, approvals };
    if (Date.now() > deadline) {
      throw new Error(`session did not finish: ${JSON.stringify(session.status)}`);
    }
    const list = await kubectlJson(rig, ["get", "approvals", "-n", NAMESPACE]);
    for (const a of list.items as Obj[]) {
      if (a.spec.decision || a.status?.state !== "Pending") continue;
      opts.onApproval?.(a);
      approvals.push(a);
      const patched = await rig.kubectl([
        "patch",
        "approval",
        a.metadata.name,
        "-n",
        NAMESPACE,
        "--type=merge",
        "-p",
        JSON.stringify({ spec: { decision: "allow_once", decidedBy: "bob@example.com" } }),
      ]);
      if (patched.code !== 0) throw new Error(`kubectl patch: ${patched.stderr}`);
    }
    await new Promise((r) => setTimeout(r, 300));
  }
}

export interface ChainReport {
  readonly claim: string;
  readonly dir: string;
  readonly result: Awaited<ReturnType<typeof verifyChain>>;
}

/** The claims holding the scenario's audit chains: each serving pod's, and the session's. */
export const AUDIT_CLAIMS = [...SERVING.map((c) => `audit-${c}-0`), `${SESSION}-audit`];

/**
 * Verifies the audit chain of each claim (its files at `dirOf(claim)`), trusting only the
 * public halves of the capsules' identity Secrets (what an auditor with kubectl would do).
 */
export async function verifyAuditChains(
  rig: Kubectl,
  dirOf: (claim: string) => string,
): Promise<ChainReport[]> {
  const keys: [string, KeyObject][] = [];
  for (const c of CAPSULES) {
    const s = await kubectlJson(rig, ["get", "secret", `${c}-identity`, "-n", NAMESPACE]);
    const pem = Buffer.from(s.data["key.pem"], "base64").toString("utf8");
    keys.push([c, createPublicKey(pem)]);
  }
  const keyring = new AuditKeyring(keys);
  const reports: ChainReport[] = [];
  for (const claim of AUDIT_CLAIMS) {
    const dir = dirOf(claim);
    reports.push({ claim, dir, result: await verifyChain(dir, keyring) });
  }
  return reports;
}
