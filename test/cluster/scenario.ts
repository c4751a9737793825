/**
 * The cluster scenario: three Capsules (react, anthropic, http) and one AgentSession that asks
 * the agent to check a status page. The model is a WIRE-PROTOCOL FAKE of the Anthropic
 * Messages API (test/fixtures/scenario-cli/wire-fakes.ts: real SSE over loopback HTTP from a
 * hand-written script); everything else is the real product. The script makes the agent
 * fetch the status page (a person approves the tool call and the connection with kubectl),
 * then answer.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { stringify } from "yaml";
import {
  type ScriptStep,
  startAnthropicWireFake,
  type WireFake,
} from "../fixtures/scenario-cli/wire-fakes.js";
import type { BuiltPackage, ClusterRig } from "./rig.js";

export const NAMESPACE = "astrid-e2e";
export const SESSION = "launch-check";
export const PRINCIPAL = "alice@example.com";
export const ANSWER = "The launch is on track: the status page says GO for Thursday.";
export const API_KEY = "sk-ant-e2e-not-a-real-key";
export const STATUS_PAGE = "launch: GO (Thursday 10:00)\n";
export const SCENARIO_STATUS_PATH = "/status";

export interface Scenario {
  /** Every object, as one multi-document YAML for `kubectl apply -f -`. */
  readonly yaml: string;
  readonly packages: Readonly<Record<string, BuiltPackage>>;
  readonly llm: WireFake;
  readonly statusUrl: string;
  /** Requests the status page has served. */
  statusHits(): number;
  stop(): Promise<void>;
}

/** The model's script: fetch the status page, then answer. */
export function scenarioScript(statusUrl: string): ScriptStep[] {
  return [{ tool: { id: "toolu_01", name: "fetch", input: { url: statusUrl } } }, { text: ANSWER }];
}

export interface ScenarioObjects {
  readonly packages: Readonly<Record<"react" | "anthropic" | "http", BuiltPackage>>;
  /** Base URL of the Messages API the anthropic capsule calls. */
  readonly llmUrl: string;
  readonly apiKey: string;
}

/** Namespace, provider Secret, the three Capsules and the AgentSession, as multi-document YAML. */
export function scenarioYaml(o: ScenarioObjects): string {
  const capsule = (p: BuiltPackage, extra: Record<string, unknown> = {}) => ({
    apiVersion: "astrid.dev/v1alpha1",
    kind: "Capsule",
    metadata: { name: p.name, namespace: NAMESPACE },
    spec: { manifest: p.manifest, package: { wasmRef: p.url, digest: p.digest }, ...extra },
  });
  const secretRef = (key: string) => ({
    name: key,
    valueFrom: { secretKeyRef: { name: "anthropic-credentials", key } },
  });
  const docs = [
    { apiVersion: "v1", kind: "Namespace", metadata: { name: NAMESPACE } },
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: { name: "anthropic-credentials", namespace: NAMESPACE },
      stringData: { ANTHROPIC_API_KEY: o.apiKey, ANTHROPIC_BASE_URL: o.llmUrl },
    },
    // An orchestrator runs in session pods only: pods of its own would answer sessions'
    // prompts without their mode and budget (the operator refuses sessions until this is 0).
    capsule(o.packages.react, { replicas: 0 }),
    // The provider's only outbound host is its API: it may connect without asking.
    capsule(o.packages.anthropic, {
      mode: "autonomous",
      env: [secretRef("ANTHROPIC_API_KEY"), secretRef("ANTHROPIC_BASE_URL")],
    }),
    // Tool calls and connections of the http tool ask a person (guided).
    capsule(o.packages.http, { mode: "guided" }),
    {
      apiVersion: "astrid.dev/v1alpha1",
      kind: "AgentSession",
      metadata: { name: SESSION, namespace: NAMESPACE },
      spec: {
        task: "Check the launch status page and tell me whether the launch is on track.",
        orchestrator: "react",
        capsules: ["react", "anthropic", "http"],
        bindings: { react: { llm: "anthropic" } },
        mode: "guided",
        budget: {
          maxSessionUsd: "1.00",
          maxCallUsd: "0.50",
          maxSessionTokens: 100000,
          maxCallTokens: 20000,
        },
        principal: PRINCIPAL,
      },
    },
  ];
  return docs.map((d) => stringify(d, { lineWidth: 0 })).join("---\n");
}

export async function prepareScenario(rig: ClusterRig): Promise<Scenario> {
  let hits = 0;
  const page = http.createServer((_req, res) => {
    hits++;
    res.writeHead(200, { "content-type": "text/plain" }).end(STATUS_PAGE);
  });
  await new Promise<void>((r) => page.listen(0, "127.0.0.1", r));
  const statusUrl = `http://127.0.0.1:${(page.address() as AddressInfo).port}${SCENARIO_STATUS_PATH}`;
  const llm = await startAnthropicWireFake(API_KEY, scenarioScript(statusUrl));
  const [react, anthropic, httpPkg] = await Promise.all([
    rig.buildPackage("capsules/react"),
    // Test copies that differ only in `net` (loopback), checked by the provider tests.
    rig.buildPackage("capsules/anthropic", "test/fixtures/providers/anthropic.Capsule.toml"),
    rig.buildPackage("capsules/http", "test/fixtures/cluster/http.Capsule.toml"),
  ]);
  const packages = { react, anthropic, http: httpPkg };
  return {
    yaml: scenarioYaml({ packages, llmUrl: llm.url, apiKey: API_KEY }),
    packages,
    llm,
    statusUrl,
    statusHits: () => hits,
    async stop() {
      await llm.close();
      await new Promise<void>((r) => page.close(() => r()));
    },
  };
}
