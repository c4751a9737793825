/**
 * What a session starts, from the shipped capsules' real manifests: what bindings reach, plus
 * everything an explicit `[capsules] enabled` names (a router's providers are named only in its
 * setting), minus what lacks a required setting; and which kv store its sidecars get. The
 * fingerprint changes with each of these inputs, so a prepared session never stands in for a
 * session that would start other capsules or keep its kv elsewhere.
 */
import { generateKeyPairSync } from "node:crypto";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { loadManifest } from "../../core/manifest/index.js";
import { generateIssuerKey, TrustedKeys } from "../../core/security/tokens/keys.js";
import { MemoryRevocationSet } from "../../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../../core/security/tokens/verifier.js";
import { MemoryKvStore } from "../../sidecar/enforce/kv.js";
import { parseConfigText } from "../config/load.js";
import type { InstalledEntry } from "../store.js";
import {
  type PlanContext,
  planSession,
  type SessionInputs,
  sessionFingerprint,
} from "./session-plan.js";

const DISTRIBUTION = path.resolve("capsules");
const ALL = ["anthropic", "cache", "fs", "github", "ollama", "openai-compatible", "react"];
const issuer = generateIssuerKey();
let installed: InstalledEntry[];

beforeAll(async () => {
  installed = await Promise.all(
    [...ALL, "router", "shell"].map(async (name) => ({
      name,
      version: "0.1.0",
      digest: `sha256:${name}`,
      dir: path.join(DISTRIBUTION, name),
      manifest: await loadManifest(path.join(DISTRIBUTION, name)),
    })),
  );
});

const kvOfHome = async () => new MemoryKvStore();

function context(env: NodeJS.ProcessEnv, log: string[]): PlanContext {
  return {
    home: "/h",
    userHome: "/u",
    principal: "user:test",
    env,
    orchestrator: undefined,
    grantsFile: "/h/grants.json",
    kv: kvOfHome,
    log: (line) => log.push(line),
    base: {
      identity: { key: generateKeyPairSync("ed25519").privateKey, keyId: "kernel" },
      issuer,
      tokens: new TokenVerifier({
        keys: new TrustedKeys([issuer.publicKey]),
        revocations: new MemoryRevocationSet(),
      }),
      logger: () => {},
    },
  };
}

function inputs(toml: string): SessionInputs {
  return {
    workspace: "/w",
    mode: "guided",
    yes: false,
    config: parseConfigText(toml, "config.toml").config,
  };
}

/** The installed capsules a config may run, as the daemon's store gives them. */
const enabledOf = (i: SessionInputs) =>
  installed.filter((e) => i.config.capsules.enabled?.includes(e.name) ?? true);

const ROUTED = `
[capsules]
enabled = ["react", "cache", "router", "anthropic", "openai-compatible", "fs", "shell", "github"]
[bindings.react]
"astrid.llm" = "cache"
[bindings.cache]
"astrid.llm" = "router"
[bindings.router]
"astrid.llm" = "anthropic"
`;

describe("planSession", () => {
  it("with enabled unset, starts the orchestrator, what it reaches and the tools only", () => {
    const log: string[] = [];
    const i = inputs("");
    const plan = planSession(context({ ANTHROPIC_API_KEY: "k" }, log), i, enabledOf(i), "s-1");
    expect(plan.capsules.map((c) => c.manifest.package.name).sort()).toEqual([
      "anthropic",
      "fs",
      "react",
      "shell",
    ]);
    expect(plan.extraConfig).toEqual({ tool_capsules: "fs,shell" });
    expect(log).toEqual(["session s-1: github not started: GITHUB_TOKEN not set"]);
  });

  it("starts every capsule an explicit enabled list names, though no binding reaches it", () => {
    const log: string[] = [];
    const i = inputs(ROUTED);
    const plan = planSession(context({ ANTHROPIC_API_KEY: "k" }, log), i, enabledOf(i), "s-1");
    expect(plan.capsules.map((c) => c.manifest.package.name).sort()).toEqual([
      "anthropic",
      "cache",
      "fs",
      "openai-compatible",
      "react",
      "router",
      "shell",
    ]);
    expect(plan.bindings.router).toEqual({ "astrid.llm": "anthropic" });
    expect(log).toEqual(["session s-1: github not started: GITHUB_TOKEN not set"]);
  });

  it("leaves out a named capsule missing a required setting, but not one the orchestrator reaches", () => {
    const log: string[] = [];
    const named = inputs(
      `[defaults]\nprovider = "ollama"\n[capsules]\nenabled = ["react", "ollama", "anthropic", "fs"]\n`,
    );
    const plan = planSession(context({}, log), named, enabledOf(named), "s-2");
    expect(plan.capsules.map((c) => c.manifest.package.name).sort()).toEqual([
      "fs",
      "ollama",
      "react",
    ]);
    expect(log).toEqual(["session s-2: anthropic not started: ANTHROPIC_API_KEY not set"]);

    // The bound provider starts without its key: its start, not a silent gap, says what is wrong.
    log.length = 0;
    const bound = inputs(`[capsules]\nenabled = ["react", "anthropic"]\n`);
    const p = planSession(context({}, log), bound, enabledOf(bound), "s-3");
    expect(p.capsules.map((c) => c.manifest.package.name).sort()).toEqual(["anthropic", "react"]);
    expect(log).toEqual([]);
  });

  it("gives the sidecars the home's kv store unless kv.persist is false", () => {
    const ctx = context({ ANTHROPIC_API_KEY: "k" }, []);
    const on = inputs(ROUTED);
    expect(planSession(ctx, on, enabledOf(on), "s-1").kv).toBe(kvOfHome);
    const off = inputs(`${ROUTED}\n[kv]\npersist = false\n`);
    expect(planSession(ctx, off, enabledOf(off), "s-1").kv).toBeUndefined();
  });
});

describe("sessionFingerprint", () => {
  it("differs exactly when what starts or where the kv lives differs", () => {
    const fp = (toml: string) => {
      const i = inputs(toml);
      return sessionFingerprint(i, enabledOf(i));
    };
    expect(fp(ROUTED)).toBe(fp(ROUTED));
    expect(fp(`${ROUTED}\n[kv]\npersist = true\n`)).toBe(fp(ROUTED));
    expect(fp(`${ROUTED}\n[kv]\npersist = false\n`)).not.toBe(fp(ROUTED));
    expect(fp(ROUTED.replace(', "openai-compatible"', ""))).not.toBe(fp(ROUTED));
  });
});
