import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import type { z } from "zod";
import { parseManifest } from "../../core/manifest/index.js";
import { argsHash } from "../../core/security/approval/action.js";
import { builtDigest } from "../../scripts/sync-examples.js";
import { agentSessionSchema } from "./agentsession.js";
import { approvalSchema } from "./approval.js";
import { capsuleSchema } from "./capsule.js";

const repo = (p: string) => new URL(`../../${p}`, import.meta.url);
const example = (name: string): Record<string, unknown> =>
  parse(readFileSync(repo(`examples/${name}`), "utf8")) as Record<string, unknown>;

/** "path: message" for each issue, so a test names the exact complaint. */
function issues(schema: z.ZodType, value: unknown): string[] {
  const r = schema.safeParse(value);
  return r.success ? [] : r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`);
}

/** A deep copy of an example with `edit` applied to its spec. */
function edited(name: string, edit: (spec: Record<string, unknown>) => void): unknown {
  const obj = structuredClone(example(name));
  edit(obj.spec as Record<string, unknown>);
  return obj;
}

describe("examples/", () => {
  it.each(["fs", "anthropic", "react"])(
    "capsule-%s.yaml parses and carries its capsule's Capsule.toml",
    (name) => {
      const cap = capsuleSchema.parse(example(`capsule-${name}.yaml`));
      expect(cap.spec.manifest).toBe(readFileSync(repo(`capsules/${name}/Capsule.toml`), "utf8"));
      expect(parseManifest(cap.spec.manifest).package.name).toBe(name);
      expect(cap.metadata.name).toBe(name);
      // The fetch init container refuses any other digest: a stale one is an example that
      // can never start (`npx tsx scripts/sync-examples.ts` rewrites it).
      expect(cap.spec.package.digest).toBe(builtDigest(name));
    },
    30_000,
  );

  it("capsule-react.yaml runs no pods of its own (sessions run the orchestrator), fs the default one", () => {
    expect(capsuleSchema.parse(example("capsule-react.yaml")).spec.replicas).toBe(0);
    expect(capsuleSchema.parse(example("capsule-fs.yaml")).spec.replicas).toBe(1);
  });

  it("agentsession.yaml parses and names only the example capsules", () => {
    const s = agentSessionSchema.parse(example("agentsession.yaml"));
    expect(s.spec.capsules).toEqual(["react", "anthropic", "fs"]);
    expect(s.spec.bindings).toEqual({ react: { llm: "anthropic", tool: "fs" } });
    expect(s.spec.budget.maxSessionUsd).toBe("2.00");
  });

  it("approval-preapproved.yaml parses, is decided, and hashes its arguments as core does", () => {
    const a = approvalSchema.parse(example("approval-preapproved.yaml"));
    expect(a.spec.decision).toBe("allow_session");
    expect(a.spec.action.argsHash).toBe(argsHash(null));
    const session = agentSessionSchema.parse(example("agentsession.yaml"));
    expect(a.spec.session).toBe(session.metadata.name);
    expect(session.spec.capsules).toContain(a.spec.capsule);
  });
});

describe("schema rules a client sees before sending", () => {
  it("refuses both artefacts and neither", () => {
    const both = edited("capsule-fs.yaml", (s) => {
      (s.package as Record<string, unknown>).image = "registry.example.com/astrid/fs:0.1.0";
    });
    expect(issues(capsuleSchema, both)).toEqual([
      "spec.package: exactly one of package.image or package.wasmRef must be set",
    ]);
    const neither = edited("capsule-fs.yaml", (s) => {
      delete (s.package as Record<string, unknown>).wasmRef;
    });
    expect(issues(capsuleSchema, neither)).toEqual([
      "spec.package: exactly one of package.image or package.wasmRef must be set",
    ]);
  });

  it("refuses a bad digest, too many replicas and a literal env value", () => {
    const bad = edited("capsule-anthropic.yaml", (s) => {
      (s.package as Record<string, unknown>).digest = "sha256:ABC";
      s.replicas = 101;
      s.env = [{ name: "ANTHROPIC_API_KEY", value: "sk-live" }];
    });
    expect(issues(capsuleSchema, bad)).toEqual([
      "spec.package.digest: must be sha256: followed by 64 lowercase hex characters",
      "spec.replicas: Too big: expected number to be <=100",
      "spec.env.0.valueFrom: Invalid input: expected object, received undefined",
      'spec.env.0: Unrecognized key: "value"',
    ]);
  });

  it("refuses an unknown mode", () => {
    const bad = edited("agentsession.yaml", (s) => {
      s.mode = "reckless";
    });
    expect(issues(agentSessionSchema, bad)).toEqual([
      'spec.mode: Invalid option: expected one of "safe"|"guided"|"autonomous"|"yolo"',
    ]);
  });

  it("refuses an orchestrator or a binding outside capsules", () => {
    const bad = edited("agentsession.yaml", (s) => {
      s.orchestrator = "planner";
      s.bindings = { react: { llm: "openai" } };
    });
    expect(issues(agentSessionSchema, bad)).toEqual([
      "spec.orchestrator: orchestrator must be one of capsules",
      "spec.bindings.react: every importer and exporter in bindings must be one of capsules",
    ]);
  });

  it("refuses budget amounts that are not exact decimals, and a call limit above the session's", () => {
    const bad = edited("agentsession.yaml", (s) => {
      s.budget = {
        maxSessionUsd: "2,00",
        maxCallUsd: "0.1234567",
        maxSessionTokens: 10,
        maxCallTokens: 10,
      };
    });
    expect(issues(agentSessionSchema, bad)).toEqual([
      'spec.budget.maxSessionUsd: must be a decimal USD amount with at most 6 decimals, e.g. "5.00"',
      'spec.budget.maxCallUsd: must be a decimal USD amount with at most 6 decimals, e.g. "5.00"',
    ]);
    const over = edited("agentsession.yaml", (s) => {
      (s.budget as Record<string, unknown>).maxCallTokens = 500001;
      (s.budget as Record<string, unknown>).maxCallUsd = "2.000001";
    });
    expect(issues(agentSessionSchema, over)).toEqual([
      "spec.budget: maxCallTokens must be at most maxSessionTokens",
      "spec.budget: maxCallUsd must be at most maxSessionUsd",
    ]);
    // Compared as exact decimals: equal amounts written differently are equal.
    const equal = edited("agentsession.yaml", (s) => {
      (s.budget as Record<string, unknown>).maxCallUsd = "2.000000";
    });
    expect(issues(agentSessionSchema, equal)).toEqual([]);
  });

  it("refuses a decision nobody signed", () => {
    const bad = edited("approval-preapproved.yaml", (s) => {
      delete s.decidedBy;
    });
    expect(issues(approvalSchema, bad)).toEqual([
      "spec.decidedBy: decidedBy is required when decision is set",
    ]);
  });
});
