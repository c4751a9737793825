/**
 * The distribution through the real `astrid -p` binary: a throwaway ASTRID_HOME made by
 * `astrid init`, config.toml wiring react → cache → router → the anthropic capsule, with the fs
 * and shell tools; the openai-compatible capsule is the router's second provider. Both providers
 * talk HTTP to WIRE-PROTOCOL FAKES (fixtures/scenario-cli/wire-fakes.ts) playing a hand-written
 * multi-step task: read data.txt, run `wc -l data.txt`, write result.txt, answer.
 *
 * What is shown: the task completes and every capsule of the chain served it (each has an audit
 * chain, and `astrid audit verify` passes on the session); autonomous mode asks nobody even with
 * a terminal to ask on; safe mode asks before each tool call (answered on a pseudo-terminal),
 * denies when nobody can answer, and asks nobody with --yes.
 *
 * Across sessions: a second identical run in a new session is answered by the cache (its kv
 * store is the home's, state/kv/cache/), and the router reaches its second provider, which runs
 * because `[capsules] enabled` names it though no binding does.
 */
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { AstridSandbox, lastLine, runInTerminal } from "./fixtures/cli/astrid-cli.js";
import { FAKE_KEY, installFakeAnthropic } from "./fixtures/cli/fake-anthropic.js";
import {
  type ScriptStep,
  startAnthropicWireFake,
  startOpenAiWireFake,
  type WireFake,
} from "./fixtures/scenario-cli/wire-fakes.js";

const MODEL = "scenario-model";
const ANSWER = "data.txt has 3 lines; I wrote that to result.txt.";
const SCRIPT: ScriptStep[] = [
  { tool: { id: "toolu_01", name: "read_file", input: { path: "data.txt" } } },
  { tool: { id: "toolu_02", name: "run", input: { command: "wc", args: ["-l", "data.txt"] } } },
  { tool: { id: "toolu_03", name: "write_file", input: { path: "result.txt", text: "3 lines" } } },
  { text: ANSWER },
];
const PROMPT = "Count the lines of data.txt and write the count to result.txt";
/** Every capsule of `enabled` runs: openai-compatible too, named only by the router's setting. */
const CHAIN = ["anthropic", "cache", "fs", "openai-compatible", "react", "router", "shell"];
/** Safe mode's answers: the provider's connection for the session, every other question once. */
const SAFE_ANSWERS = ["s", "o", "o", "o", "o", "o"];

let anthropic: WireFake;
let openai: WireFake;
let sb: AstridSandbox;
/** This test's config.toml, as written before each test. */
let config: string;

beforeAll(async () => {
  anthropic = await startAnthropicWireFake(FAKE_KEY, SCRIPT);
  openai = await startOpenAiWireFake(SCRIPT);
});
afterAll(async () => {
  await anthropic.close();
  await openai.close();
});
beforeEach(async () => {
  anthropic.requests.length = 0;
  openai.requests.length = 0;
  sb = AstridSandbox.create();
  // `astrid init`, with the anthropic capsule's manifest granted loopback instead of
  // api.anthropic.com (the code is the shipped one).
  await installFakeAnthropic(sb, anthropic.url, MODEL);
  config = [
    "[defaults]",
    'provider = "anthropic"',
    "",
    "[capsules]",
    'enabled = ["react", "cache", "router", "anthropic", "openai-compatible", "fs", "shell"]',
    "",
    // The whole interposition is this wiring: no capsule's code or manifest knows the others.
    "[bindings.react]",
    '"astrid.llm" = "cache"',
    "[bindings.cache]",
    '"astrid.llm" = "router"',
    "[bindings.router]",
    '"astrid.llm" = "anthropic"',
    "",
    "[providers.anthropic]",
    `base_url = "${anthropic.url}"`,
    `model = "${MODEL}"`,
    'api_key_env = "ANTHROPIC_API_KEY"',
    `[providers.anthropic.price."${MODEL}"]`,
    "input = 3000000",
    "output = 15000000",
    "",
    "[providers.openai-compatible]",
    `base_url = "${openai.url}"`,
    `model = "${MODEL}"`,
    `[providers.openai-compatible.price."${MODEL}"]`,
    "input = 150000",
    "output = 600000",
    "",
  ].join("\n");
  sb.writeConfig(config);
  writeFileSync(path.join(sb.workspace, "data.txt"), "one\ntwo\nthree\n");
});
afterEach(async () => {
  await sb.dispose();
});

/** The daemon inherits the first run's environment: the key and the router's provider order. */
const envWith = (providers = "anthropic,openai-compatible") => ({
  ANTHROPIC_API_KEY: FAKE_KEY,
  ROUTER_PROVIDERS: providers,
});

const resultFile = () => path.join(sb.workspace, "result.txt");

/** `astrid audit verify` on one session: every chain of the run must be intact. */
async function verifySession(session: string): Promise<string[]> {
  const r = await sb.ok(["audit", "verify", path.join(sb.home, "sessions", session)]);
  const lines = r.stdout.trimEnd().split("\n");
  expect(lines.filter((l) => !l.startsWith("ok "))).toEqual([]);
  return lines.map((l) => path.basename(l.split(":")[0]!.replace(/^ok\s+/, "")));
}

/** The tool results react sent back to the model on the last step, as the model read them. */
function lastToolResults(): string[] {
  const req = anthropic.requests[anthropic.requests.length - 1]!;
  const parts = (req.body.messages as { content: { type: string; content?: string }[] }[])
    .flatMap((m) => (Array.isArray(m.content) ? m.content : []))
    .filter((p) => p.type === "tool_result");
  return parts.map((p) => p.content ?? "");
}

describe("astrid -p with react → cache → router → providers, fs and shell", {
  timeout: 120_000,
}, () => {
  it("completes the task in autonomous mode asking nobody, and the session's chains verify", async () => {
    const r = await runInTerminal(
      sb,
      ["-p", PROMPT, "--mode", "autonomous", "--print-session"],
      [],
      { env: envWith(), killAfterMs: 60_000 },
    );
    expect(r.killed, `hung; the screen showed:\n${r.stdout}`).toBe(false);
    expect(r.code, r.stdout).toBe(0);
    expect(r.asked).toEqual([]);
    expect(r.stdout).toContain(ANSWER);
    expect(readFileSync(resultFile(), "utf8")).toBe("3 lines");

    // Four model steps reached the Messages API, each deterministic (react's temperature 0)
    // and with the fs and shell tools offered.
    expect(anthropic.requests).toHaveLength(4);
    for (const req of anthropic.requests) {
      expect(req.body.temperature).toBe(0);
      expect((req.body.tools as { name: string }[]).map((t) => t.name).sort()).toEqual(
        expect.arrayContaining(["read_file", "run", "write_file"]),
      );
    }
    // The model read the file's text and the command's real output, fenced as tool results.
    const results = lastToolResults();
    expect(results[0]).toContain("one\ntwo\nthree");
    expect(results[1]).toMatch(/3 data\.txt/);
    expect(results.every((t) => t.startsWith("<tool_result "))).toBe(true);
    expect(openai.requests).toHaveLength(0);

    const chains = await verifySession(lastLine(r.stdout));
    expect(chains.sort()).toEqual(CHAIN);
  });

  it("asks before each action in safe mode, denies with no terminal, and asks nobody with --yes", async () => {
    const asked = await runInTerminal(
      sb,
      ["-p", PROMPT, "--mode", "safe", "--print-session"],
      SAFE_ANSWERS,
      { env: envWith(), killAfterMs: 60_000 },
    );
    expect(asked.killed, `hung; the screen showed:\n${asked.stdout}`).toBe(false);
    expect(asked.code, asked.stdout).toBe(0);
    // Everything that leaves the workspace or acts asks: the provider's connection ("s" covers
    // the session's later model calls), each tool call, the command the shell spawns and the
    // file the fs tool writes.
    expect(asked.asked).toEqual([
      `anthropic wants net ${new URL(anthropic.url).host}`,
      "fs wants tool read_file",
      "shell wants tool run",
      "shell wants process wc",
      "fs wants tool write_file",
      `fs wants fs_write ${resultFile()}`,
    ]);
    expect(asked.stdout).toContain(ANSWER);
    expect(readFileSync(resultFile(), "utf8")).toBe("3 lines");
    await verifySession(lastLine(asked.stdout));
    rmSync(resultFile());

    // Nobody to ask: the first model call is refused, the agent stops early (exit 4).
    const alone = await sb.run(["-p", PROMPT, "--mode", "safe"], { env: envWith() });
    expect(alone.code).toBe(4);
    expect(alone.stderr).toContain(
      `approval needed for net ${new URL(anthropic.url).host}, but there is no terminal: denied (use --yes)`,
    );
    expect(existsSync(resultFile())).toBe(false);

    const yes = await sb.ok(["-p", PROMPT, "--mode", "safe", "--yes"], { env: envWith() });
    expect(yes.stdout).toBe(`${ANSWER}\n`);
    expect(yes.stderr).not.toContain("approval needed");
    expect(readFileSync(resultFile(), "utf8")).toBe("3 lines");
  });

  // The cache capsule's kv store is the home's (state/kv/cache/), not the session's: a new
  // session's cache answers what an earlier one stored.
  it("answers a second identical run from the cache: the provider sees no request", async () => {
    await sb.ok(["-p", PROMPT, "--yes"], { env: envWith() });
    expect(anthropic.requests).toHaveLength(4);
    rmSync(resultFile());
    const again = await sb.ok(["-p", PROMPT, "--yes"], { env: envWith() });
    expect(again.stdout).toBe(`${ANSWER}\n`);
    expect(readFileSync(resultFile(), "utf8")).toBe("3 lines");
    expect(anthropic.requests).toHaveLength(4);
    // One store, the cache's: no other capsule of the chain declares a kv bucket.
    expect(readdirSync(path.join(sb.home, "state", "kv"))).toEqual(["cache"]);
  });

  it("asks the provider again in a new session with kv.persist = false: nothing is kept", async () => {
    sb.writeConfig(`${config}[kv]\npersist = false\n`);
    await sb.ok(["-p", PROMPT, "--yes"], { env: envWith() });
    rmSync(resultFile());
    const again = await sb.ok(["-p", PROMPT, "--yes"], { env: envWith() });
    expect(again.stdout).toBe(`${ANSWER}\n`);
    expect(anthropic.requests).toHaveLength(8);
    expect(existsSync(path.join(sb.home, "state"))).toBe(false);
  });

  // openai-compatible is reached by no binding, only by the name in ROUTER_PROVIDERS: it runs
  // because `[capsules] enabled` names it.
  it("routes to the second provider when the router prefers it", async () => {
    const r = await sb.ok(["-p", PROMPT, "--yes"], {
      env: envWith("openai-compatible,anthropic"),
    });
    expect(r.stdout).toBe(`${ANSWER}\n`);
    expect(openai.requests).toHaveLength(4);
    expect(anthropic.requests).toHaveLength(0);
  });
});
