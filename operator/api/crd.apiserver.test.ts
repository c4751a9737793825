/**
 * The generated CRDs against a real kube-apiserver + etcd: what the server accepts, defaults
 * and rejects is the contract; the unit tests only show what we meant to send.
 */
import { readFileSync } from "node:fs";
import https from "node:https";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse } from "yaml";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  type KubeResponse,
  kubeRequest,
  startControlPlane,
  toolsCacheDir,
} from "../../test/harness/control-plane.js";
import { CRD_FILES, KIND_DEFINITIONS, KINDS, type Kind } from "./crd.js";

const toolsBuilt = controlPlaneToolsBuilt();
if (!toolsBuilt) {
  console.warn(
    `CRD API-server tests SKIPPED: etcd/kube-apiserver are not built in ${toolsCacheDir()}; run \`make tools\``,
  );
}

const repo = (p: string) => new URL(`../../${p}`, import.meta.url);
const NS = "astrid-demo";
// biome-ignore lint/suspicious/noExplicitAny: test code reads API objects field by field; a wrong path fails the assertion.
type Obj = Record<string, any>;
const example = (name: string): Obj => parse(readFileSync(repo(`examples/${name}`), "utf8")) as Obj;

/** A request with its own content type and accept header, which kubeRequest (JSON) fixes. */
function rawRequest(
  cp: ControlPlaneHandle,
  method: string,
  apiPath: string,
  headers: { contentType?: string; accept: string },
  body?: string,
): Promise<KubeResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      new URL(apiPath, cp.url),
      {
        method,
        ca: cp.caPem,
        headers: {
          authorization: `Bearer ${cp.token}`,
          accept: headers.accept,
          ...(body === undefined
            ? {}
            : { "content-type": headers.contentType, "content-length": Buffer.byteLength(body) }),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            body: JSON.parse(Buffer.concat(chunks).toString()),
          }),
        );
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** Server-side apply of YAML text, as `kubectl apply --server-side` sends it. */
const applyYaml = (cp: ControlPlaneHandle, apiPath: string, yamlText: string) =>
  rawRequest(
    cp,
    "PATCH",
    apiPath,
    { contentType: "application/apply-patch+yaml", accept: "application/json" },
    yamlText,
  );

const collection = (kind: Kind) =>
  `/apis/astrid.dev/v1alpha1/namespaces/${NS}/${KIND_DEFINITIONS[kind].plural}`;
const crdPath = (kind: Kind) =>
  `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${KIND_DEFINITIONS[kind].plural}.astrid.dev`;

describe.skipIf(!toolsBuilt)("astrid.dev CRDs on a real API server", () => {
  let cp: ControlPlaneHandle | undefined;
  const plane = (): ControlPlaneHandle => {
    if (!cp) throw new Error("control plane did not start");
    return cp;
  };
  const req = (method: string, path: string, body?: unknown) =>
    kubeRequest(plane(), method, path, body);
  /** Create strictly (unknown fields are errors, not silently pruned). */
  const create = (kind: Kind, obj: unknown, dryRun = false) =>
    req("POST", `${collection(kind)}?fieldValidation=Strict${dryRun ? "&dryRun=All" : ""}`, obj);
  const message = (r: KubeResponse) => (r.body as { message?: string }).message;

  beforeAll(async () => {
    cp = await startControlPlane();
    const ns = await req("POST", "/api/v1/namespaces", {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: NS },
    });
    expect(ns.status).toBe(201);
    for (const kind of KINDS) {
      const r = await applyYaml(
        plane(),
        `${crdPath(kind)}?fieldManager=astrid&force=true`,
        readFileSync(repo(CRD_FILES[kind]), "utf8"),
      );
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    }
    // Established means the API server serves the kind; wait for it, then for the endpoint.
    for (const kind of KINDS) {
      for (;;) {
        const r = await req("GET", crdPath(kind));
        const conds = ((r.body as Obj).status?.conditions ?? []) as Obj[];
        if (conds.some((c) => c.type === "Established" && c.status === "True")) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      while ((await req("GET", collection(kind))).status !== 200) {
        await new Promise((res) => setTimeout(res, 100));
      }
    }
  }, 120_000);
  afterAll(async () => cp?.stop(), 30_000);

  it("re-applying the committed CRDs changes nothing", async () => {
    for (const kind of KINDS) {
      const before = (await req("GET", crdPath(kind))).body as Obj;
      const again = await applyYaml(
        plane(),
        `${crdPath(kind)}?fieldManager=astrid&force=true`,
        readFileSync(repo(CRD_FILES[kind]), "utf8"),
      );
      expect(again.status).toBe(200);
      expect((again.body as Obj).metadata.resourceVersion).toBe(before.metadata.resourceVersion);
    }
  });

  it("the examples pass the server-side dry run, store nothing, then are created", async () => {
    const files: [Kind, string][] = [
      ["Capsule", "capsule-fs.yaml"],
      ["Capsule", "capsule-anthropic.yaml"],
      ["Capsule", "capsule-react.yaml"],
      ["AgentSession", "agentsession.yaml"],
      ["Approval", "approval-preapproved.yaml"],
    ];
    for (const [kind, file] of files) {
      const obj = example(file);
      const dry = await create(kind, obj, true);
      expect(dry.status, `${file}: ${message(dry)}`).toBe(201);
      expect((await req("GET", `${collection(kind)}/${obj.metadata.name}`)).status).toBe(404);
      const made = await create(kind, obj);
      expect(made.status, `${file}: ${message(made)}`).toBe(201);
      expect((made.body as Obj).metadata.generation).toBe(1);
    }
    // The server applies the schema's default, not only zod.
    // (capsule-fs.yaml leaves replicas out; capsule-react.yaml sets 0.)
    const fs = (await req("GET", `${collection("Capsule")}/fs`)).body as Obj;
    expect(fs.spec.replicas).toBe(1);
    const list = (await req("GET", collection("Capsule"))).body as Obj;
    expect((list.items as Obj[]).map((i) => i.metadata.name).sort()).toEqual([
      "anthropic",
      "fs",
      "react",
    ]);
  });

  /** An example under another name with `edit` applied to its spec. */
  const variant = (file: string, name: string, edit: (spec: Obj) => void): Obj => {
    const obj = structuredClone(example(file));
    obj.metadata.name = name;
    edit(obj.spec);
    return obj;
  };

  it("rejects an unknown security mode, naming the allowed ones", async () => {
    const r = await create(
      "AgentSession",
      variant("agentsession.yaml", "bad-mode", (s) => {
        s.mode = "reckless";
      }),
    );
    expect(r.status).toBe(422);
    expect(message(r)).toBe(
      'AgentSession.astrid.dev "bad-mode" is invalid: [spec.mode: Unsupported value: "reckless": supported values: "safe", "guided", "autonomous", "yolo", <nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation]',
    );
  });

  it("rejects an orchestrator that is not among the capsules (CEL)", async () => {
    const r = await create(
      "AgentSession",
      variant("agentsession.yaml", "bad-orchestrator", (s) => {
        s.orchestrator = "planner";
      }),
    );
    expect(r.status).toBe(422);
    expect(message(r)).toBe(
      'AgentSession.astrid.dev "bad-orchestrator" is invalid: spec: Invalid value: orchestrator must be one of capsules',
    );
  });

  it("rejects a binding to a capsule outside the session (CEL)", async () => {
    const r = await create(
      "AgentSession",
      variant("agentsession.yaml", "bad-binding", (s) => {
        s.bindings = { react: { llm: "openai" } };
      }),
    );
    expect(r.status).toBe(422);
    expect(message(r)).toBe(
      'AgentSession.astrid.dev "bad-binding" is invalid: spec: Invalid value: every importer and exporter in bindings must be one of capsules',
    );
  });

  it("rejects a budget amount that is not an exact decimal, and a call limit above the session's", async () => {
    const comma = await create(
      "AgentSession",
      variant("agentsession.yaml", "bad-usd", (s) => {
        s.budget.maxSessionUsd = "2,00";
      }),
    );
    expect(comma.status).toBe(422);
    expect(message(comma)).toBe(
      'AgentSession.astrid.dev "bad-usd" is invalid: spec.budget.maxSessionUsd: Invalid value: "2,00": must be a decimal USD amount with at most 6 decimals, e.g. "5.00"',
    );
    const over = await create(
      "AgentSession",
      variant("agentsession.yaml", "call-over-session", (s) => {
        s.budget.maxCallUsd = "2.5";
        s.budget.maxCallTokens = 500001;
      }),
    );
    expect(over.status).toBe(422);
    expect(message(over)).toBe(
      'AgentSession.astrid.dev "call-over-session" is invalid: [spec.budget: Invalid value: maxCallTokens must be at most maxSessionTokens, spec.budget: Invalid value: maxCallUsd must be at most maxSessionUsd]',
    );
  });

  it("rejects a Capsule with no artefact, or with two (CEL)", async () => {
    const none = await create(
      "Capsule",
      variant("capsule-fs.yaml", "no-artefact", (s) => {
        delete s.package.wasmRef;
      }),
    );
    expect(none.status).toBe(422);
    expect(message(none)).toBe(
      'Capsule.astrid.dev "no-artefact" is invalid: spec.package: Invalid value: exactly one of package.image or package.wasmRef must be set',
    );
    const two = await create(
      "Capsule",
      variant("capsule-fs.yaml", "two-artefacts", (s) => {
        s.package.image = "registry.example.com/astrid/fs:0.1.0";
      }),
    );
    expect(two.status).toBe(422);
    expect(message(two)).toBe(
      'Capsule.astrid.dev "two-artefacts" is invalid: spec.package: Invalid value: exactly one of package.image or package.wasmRef must be set',
    );
  });

  it("rejects unknown fields instead of dropping them (fieldValidation=Strict)", async () => {
    const r = await create(
      "Capsule",
      variant("capsule-fs.yaml", "typo", (s) => {
        s.replica = 3;
      }),
    );
    expect(r.status).toBe(400);
    expect(message(r)).toBe(
      'Capsule in version "v1alpha1" cannot be handled as a Capsule: strict decoding error: unknown field "spec.replica"',
    );
  });

  it("an Approval is answered once: the decision and the question cannot change afterwards (CEL transition rules)", async () => {
    const pending = variant("approval-preapproved.yaml", "pending-write", (s) => {
      delete s.decision;
      delete s.decidedBy;
    });
    expect((await create("Approval", pending)).status).toBe(201);
    const path = `${collection("Approval")}/pending-write`;

    const unsigned = (await req("GET", path)).body as Obj;
    unsigned.spec.decision = "allow_once";
    const r0 = await req("PUT", path, unsigned);
    expect(r0.status).toBe(422);
    expect(message(r0)).toBe(
      'Approval.astrid.dev "pending-write" is invalid: spec: Invalid value: decidedBy is required when decision is set',
    );

    const answer = (await req("GET", path)).body as Obj;
    answer.spec.decision = "deny";
    answer.spec.decidedBy = "bob@example.com";
    expect((await req("PUT", path, answer)).status).toBe(200);

    const flip = (await req("GET", path)).body as Obj;
    flip.spec.decision = "allow_always";
    const r1 = await req("PUT", path, flip);
    expect(r1.status).toBe(422);
    expect(message(r1)).toBe(
      'Approval.astrid.dev "pending-write" is invalid: spec.decision: Invalid value: decision is immutable once set',
    );

    const erase = (await req("GET", path)).body as Obj;
    delete erase.spec.decision;
    const r2 = await req("PUT", path, erase);
    expect(r2.status).toBe(422);
    expect(message(r2)).toBe(
      'Approval.astrid.dev "pending-write" is invalid: spec.decision: Invalid value: decision is immutable once set',
    );

    const retarget = (await req("GET", path)).body as Obj;
    retarget.spec.action.target = "/etc/passwd";
    const r3 = await req("PUT", path, retarget);
    expect(r3.status).toBe(422);
    expect(message(r3)).toBe(
      'Approval.astrid.dev "pending-write" is invalid: spec: Invalid value: session, capsule, action and reason are immutable',
    );
  });

  it("rejects a change of an AgentSession's principal (CEL transition rule)", async () => {
    const path = `${collection("AgentSession")}/summarise-readme`;
    const s = (await req("GET", path)).body as Obj;
    s.spec.principal = "mallory@example.com";
    const r = await req("PUT", path, s);
    expect(r.status).toBe(422);
    expect(message(r)).toBe(
      'AgentSession.astrid.dev "summarise-readme" is invalid: spec.principal: Invalid value: principal is immutable',
    );
  });

  it("status is a separate subresource: a spec write leaves status alone and the reverse", async () => {
    const path = `${collection("Capsule")}/fs`;
    const cap = (await req("GET", path)).body as Obj;
    const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    cap.status = {
      observedGeneration: 1,
      readyReplicas: 1,
      replicas: 1,
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "PodsReady",
          message: "1/1",
          lastTransitionTime: now,
          observedGeneration: 1,
        },
      ],
    };
    const statusWrite = await req("PUT", `${path}/status`, {
      ...cap,
      spec: { ...cap.spec, replicas: 7 },
    });
    expect(statusWrite.status, message(statusWrite)).toBe(200);
    const afterStatus = statusWrite.body as Obj;
    expect(afterStatus.spec.replicas).toBe(1); // the spec in a status write is ignored
    expect(afterStatus.metadata.generation).toBe(1);
    expect(afterStatus.status.readyReplicas).toBe(1);

    const specWrite = await req("PUT", path, {
      ...afterStatus,
      spec: { ...afterStatus.spec, replicas: 3 },
      status: { readyReplicas: 99 },
    });
    expect(specWrite.status, message(specWrite)).toBe(200);
    const afterSpec = specWrite.body as Obj;
    expect(afterSpec.spec.replicas).toBe(3);
    expect(afterSpec.metadata.generation).toBe(2);
    expect(afterSpec.status.readyReplicas).toBe(1); // the status in a spec write is ignored

    const scale = (await req("GET", `${path}/scale`)).body as Obj;
    expect(scale.spec.replicas).toBe(3);
    expect(scale.status.replicas).toBe(1);
  });

  it("rejects a status condition that is not a metav1.Condition", async () => {
    const path = `${collection("AgentSession")}/summarise-readme`;
    const s = (await req("GET", path)).body as Obj;
    s.status = {
      conditions: [
        {
          type: "Ready",
          status: "Maybe",
          reason: "x",
          message: "",
          lastTransitionTime: "yesterday",
        },
      ],
      usage: { inputTokens: 1, outputTokens: 2, costMicroUsd: 12 },
    };
    const r = await req("PUT", `${path}/status`, s);
    expect(r.status).toBe(422);
    // The server lists several errors in no fixed order: compare them as a set.
    const causes = ((r.body as Obj).details.causes as Obj[]).map((c) => `${c.field}: ${c.message}`);
    expect(causes.sort()).toEqual([
      "<nil>: Invalid value: null: some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
      'status.conditions[0].lastTransitionTime: Invalid value: "yesterday": conditions[0].lastTransitionTime in body must be of type date-time: "yesterday"',
      'status.conditions[0].status: Unsupported value: "Maybe": supported values: "True", "False", "Unknown"',
      'status.usage.costMicroUsd: Invalid value: "integer": usage.costMicroUsd in body must be of type string: "integer"',
    ]);
  });

  it("kubectl's table view shows the printer columns", async () => {
    const r = await rawRequest(plane(), "GET", collection("AgentSession"), {
      accept: "application/json;as=Table;v=v1;g=meta.k8s.io",
    });
    expect(r.status).toBe(200);
    const table = r.body as Obj;
    expect((table.columnDefinitions as Obj[]).map((c) => c.name)).toEqual([
      "Name",
      ...KIND_DEFINITIONS.AgentSession.printerColumns.map((c) => c.name),
    ]);
    const row = (table.rows as Obj[]).find((x) => x.cells[0] === "summarise-readme");
    // Name, Ready, Running, Succeeded, Mode, Cost, Budget, Approvals, Orchestrator, Principal
    // (Age varies).
    expect(row?.cells.slice(0, 10)).toEqual([
      "summarise-readme",
      null,
      null,
      null,
      "guided",
      null,
      "2.00",
      null,
      "react",
      "alice@example.com",
    ]);
  });
});
