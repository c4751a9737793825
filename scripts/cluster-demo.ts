/**
 * `make cluster-demo`: the cluster shape on this machine, without Docker. Starts the test
 * control plane (etcd, kube-apiserver, kube-controller-manager), nats-server, the kubelet
 * harness and astrid-operator; applies three Capsules and an AgentSession with kubectl;
 * answers the session's Approvals with `kubectl patch` as a person would; prints the
 * session's status and usage and the audit verification; tears everything down.
 * The model is a local wire-protocol fake of the Anthropic Messages API (no key needed).
 */
import { answerUntilFinished, applyScenario, verifyAuditChains } from "../test/cluster/drive.js";
import { startClusterRig } from "../test/cluster/rig.js";
import { NAMESPACE, prepareScenario, SESSION } from "../test/cluster/scenario.js";

const say = (line: string) => console.log(`==> ${line}`);

async function main(): Promise<number> {
  const started = Date.now();
  const rig = await startClusterRig({ log: say });
  try {
    const scenario = await prepareScenario(rig);
    say(
      "model: a local wire-protocol fake of the Anthropic Messages API (scripted answers, no key)",
    );
    say(
      `kubectl apply --server-side: namespace ${NAMESPACE}, Capsules react/anthropic/http, AgentSession ${SESSION}`,
    );
    await applyScenario(rig, scenario);
    console.log((await rig.kubectl(["get", "capsules", "-n", NAMESPACE])).stdout);

    say(
      "the session runs; its tool calls ask a person (Approval objects), answered with kubectl patch",
    );
    const { session } = await answerUntilFinished(rig, {
      timeoutMs: 240_000,
      onApproval: (a) =>
        say(
          `approval ${a.metadata.name}: ${a.spec.capsule} wants ${a.spec.action.kind} ${a.spec.action.target} → allow_once`,
        ),
    });
    console.log((await rig.kubectl(["get", "agentsessions,approvals", "-n", NAMESPACE])).stdout);
    const st = session.status ?? {};
    say(`result: ${st.result}`);
    say(
      `usage: ${st.usage?.inputTokens} input + ${st.usage?.outputTokens} output tokens, ${st.usage?.costMicroUsd} µUSD`,
    );

    say("audit chains on the volumes, verified with the capsules' identity keys:");
    let broken = 0;
    for (const r of await verifyAuditChains(rig, (claim) =>
      rig.kubelet.claimPath(NAMESPACE, claim),
    )) {
      if (r.result.ok) console.log(`  ok      ${r.claim}: ${r.result.entries} entries`);
      else {
        broken++;
        console.log(`  BROKEN  ${r.claim}: ${JSON.stringify(r.result.error)}`);
      }
    }
    const ok = session.status?.conditions?.some(
      (c: { type: string; status: string }) => c.type === "Succeeded" && c.status === "True",
    );
    say(`done in ${((Date.now() - started) / 1000).toFixed(1)} s; tearing down`);
    return ok && broken === 0 ? 0 : 1;
  } finally {
    await rig.stop();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    console.error(`cluster-demo: ${err.message}`);
    process.exit(1);
  },
);
