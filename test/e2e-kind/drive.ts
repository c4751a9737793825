/**
 * The cluster scenario on a kind cluster (run by run.sh, which made the cluster, loaded the
 * image and installed the chart): serves the fixtures from a pod, applies the same Capsules and
 * AgentSession as test/cluster-e2e.test.ts, answers the Approvals with kubectl, checks the
 * session's status and verifies the audit chains copied off the volumes.
 *
 * NOT RUN in this repository's CI (no Docker engine there); see README.md.
 *
 *   npx tsx test/e2e-kind/drive.ts <bundled fixtures-server.mjs>
 */
import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import {
  AUDIT_CLAIMS,
  answerUntilFinished,
  applyScenario,
  condition,
  type Kubectl,
  verifyAuditChains,
} from "../cluster/drive.js";
import { type BuiltPackage, kubectlRunner, repoRoot } from "../cluster/rig.js";
import { ANSWER, API_KEY, NAMESPACE, SESSION, scenarioYaml } from "../cluster/scenario.js";

const run = promisify(execFile);
const FIXTURES = `fixtures.${NAMESPACE}.svc`;
// kind's default Service range; the capsules' net rules must list the address a name resolves
// to when it is private (the SSRF guard), not only the name.
const SERVICE_CIDR = process.env.KIND_SERVICE_CIDR ?? "10.96.0.0/12";
const IMAGE = process.env.ASTRID_IMAGE ?? "astrid/astrid:e2e";

const kubectl: Kubectl = { kubectl: kubectlRunner("kubectl") };

async function must(args: string[], stdin?: string): Promise<string> {
  const r = await kubectl.kubectl(args, stdin);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** capsules/<name> built with a Capsule.toml whose `net` is `net`. */
async function build(
  work: string,
  name: string,
  net?: string[],
): Promise<BuiltPackage & { archive: string }> {
  const src = path.join(work, "src", name);
  cpSync(path.join(repoRoot, "capsules", name), src, { recursive: true });
  if (net) {
    const toml = readFileSync(path.join(src, "Capsule.toml"), "utf8");
    const patched = toml.replace(/^net = \[.*\]$/m, `net = ${JSON.stringify(net)}`);
    if (patched === toml)
      throw new Error(`capsules/${name}/Capsule.toml has no net line to replace`);
    writeFileSync(path.join(src, "Capsule.toml"), patched);
  }
  const { stdout } = await run(path.join(repoRoot, "bin", "astrid-build"), [
    src,
    "--out",
    path.join(work, "out"),
    "--archive",
    "--json",
  ]);
  const r = JSON.parse(stdout) as { name: string; digest: string; archive: string };
  return {
    name: r.name,
    digest: r.digest,
    archive: r.archive,
    url: `http://${FIXTURES}:8080/packages/${path.basename(r.archive)}`,
    manifest: readFileSync(path.join(src, "Capsule.toml"), "utf8"),
  };
}

async function main(): Promise<void> {
  const server = process.argv[2];
  if (!server) throw new Error("usage: drive.ts <bundled fixtures-server.mjs>");
  const work = mkdtempSync(path.join(os.tmpdir(), "astrid-kind-"));
  const react = await build(work, "react");
  const anthropic = await build(work, "anthropic", [
    `http://${FIXTURES}:8081`,
    `${SERVICE_CIDR}:8081`,
  ]);
  const httpPkg = await build(work, "http", [`http://${FIXTURES}:8080`, `${SERVICE_CIDR}:8080`]);

  console.log("==> fixtures pod: packages, status page, Messages API fake");
  await kubectl.kubectl(["create", "namespace", NAMESPACE]);
  const cm = await must([
    "create",
    "configmap",
    "e2e-fixtures",
    "-n",
    NAMESPACE,
    "--dry-run=client",
    "-o",
    "yaml",
    `--from-file=server.mjs=${server}`,
    ...[react, anthropic, httpPkg].map((p) => `--from-file=${p.archive}`),
  ]);
  await must(["apply", "--server-side", "-f", "-"], cm);
  await must(["apply", "-f", "-"], fixturesYaml());
  await must(["rollout", "status", "-n", NAMESPACE, "deployment/fixtures", "--timeout=120s"]);

  console.log("==> Capsules and AgentSession");
  await applyScenario(kubectl, {
    yaml: scenarioYaml({
      packages: { react, anthropic, http: httpPkg },
      llmUrl: `http://${FIXTURES}:8081`,
      apiKey: API_KEY,
    }),
  });
  const { session, approvals } = await answerUntilFinished(kubectl, {
    timeoutMs: 300_000,
    onApproval: (a) => console.log(`==> approving ${a.spec.action.kind} ${a.spec.action.target}`),
  });
  console.log(await must(["get", "capsules,agentsessions,approvals", "-n", NAMESPACE]));
  const ok =
    condition(session, "Succeeded")?.status === "True" &&
    String(session.status?.result ?? "").includes(ANSWER) &&
    approvals.length === 2;

  console.log("==> audit chains, copied off the volumes");
  await must(["apply", "-f", "-"], auditReaderYaml());
  await must([
    "wait",
    "-n",
    NAMESPACE,
    "--for=condition=Ready",
    "pod/audit-reader",
    "--timeout=120s",
  ]);
  const dirs = path.join(work, "audit");
  for (const claim of AUDIT_CLAIMS) {
    await must(["cp", "-n", NAMESPACE, `audit-reader:/audit/${claim}`, path.join(dirs, claim)]);
  }
  let broken = 0;
  for (const r of await verifyAuditChains(kubectl, (claim) => path.join(dirs, claim))) {
    console.log(`${r.result.ok ? "ok    " : "BROKEN"}  ${r.claim}`);
    if (!r.result.ok) broken++;
  }
  if (!ok || broken > 0) throw new Error(`scenario failed: ${JSON.stringify(session.status)}`);
  console.log(`==> ${SESSION} succeeded; e2e-kind passed`);
}

function fixturesYaml(): string {
  const labels = { app: "fixtures" };
  return JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: [
      {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: "fixtures", namespace: NAMESPACE },
        spec: {
          selector: { matchLabels: labels },
          template: {
            metadata: { labels },
            spec: {
              containers: [
                {
                  name: "fixtures",
                  image: IMAGE,
                  imagePullPolicy: "Never",
                  args: ["/fixtures/server.mjs"],
                  env: [{ name: "FIXTURES_DIR", value: "/fixtures" }],
                  volumeMounts: [{ name: "fixtures", mountPath: "/fixtures" }],
                },
              ],
              volumes: [{ name: "fixtures", configMap: { name: "e2e-fixtures" } }],
            },
          },
        },
      },
      {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "fixtures", namespace: NAMESPACE },
        spec: {
          selector: labels,
          ports: [
            { name: "http", port: 8080 },
            { name: "llm", port: 8081 },
          ],
        },
      },
    ],
  });
}

/** A pod mounting every audit claim, for `kubectl cp` (the session pod has exited). */
function auditReaderYaml(): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: "audit-reader", namespace: NAMESPACE },
    spec: {
      containers: [
        {
          name: "reader",
          image: IMAGE,
          imagePullPolicy: "Never",
          command: ["sleep", "3600"],
          volumeMounts: AUDIT_CLAIMS.map((c) => ({
            name: c,
            mountPath: `/audit/${c}`,
            readOnly: true,
          })),
        },
      ],
      volumes: AUDIT_CLAIMS.map((c) => ({
        name: c,
        persistentVolumeClaim: { claimName: c, readOnly: true },
      })),
    },
  });
}

main().catch((err: Error) => {
  console.error(`e2e-kind: ${err.message}`);
  process.exit(1);
});
