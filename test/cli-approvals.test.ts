/**
 * Approval prompts of the real `astrid` in guided mode, answered through a pseudo-terminal
 * (util-linux `script` gives the CLI the /dev/tty it asks on). The session runs react + fs +
 * replay; the replayed model calls the fs `search` tool once (the `make demo` transcript) or
 * twice with the same arguments (fixtures/cli/search-twice.jsonl), then answers; guided mode
 * asks before every tool call.
 *
 * What is shown, per answer: the question names the capsule and the tool; `o` allows this call
 * only (the next turn asks again); `s` covers the identical call and the rest of the session but
 * not a new session; `w` and `a` cover the identical call, and another workspace still asks
 * after `w`; `d` denies, the turn ends with stopReason "denied" and exit code 4. A grant that
 * covered too much would let a model act without the person's consent; one that covered too
 * little would nag, so both directions are checked. Known product bugs are pinned as
 * (formerly `it.fails`, now fixed): lasting grants across sessions, a second question in
 * one turn, and exiting without further terminal input.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  AstridSandbox,
  DEMO_TRANSCRIPT,
  lastLine,
  REPO,
  runInTerminal,
} from "./fixtures/cli/astrid-cli.js";

const SEARCH_TWICE = path.join(REPO, "test", "fixtures", "cli", "search-twice.jsonl");
const QUESTION = "fs wants tool search";
const FINAL = "The notes say the launch is on Friday, after the security review.";
const PROMPT = ["-p", "When is the launch?"];

let sb: AstridSandbox;

beforeEach(async () => {
  sb = AstridSandbox.create();
  await sb.ok(["init"]);
});
afterEach(async () => {
  await sb.dispose();
});

/** How many times the agent called the search tool, as the CLI shows them. */
const searches = (screen: string) => screen.split("· search ").length - 1;

/** One turn in the terminal answering the first question with `letter`. */
async function turn(letter: string, args: string[] = [], cwd?: string) {
  const r = await runInTerminal(sb, [...PROMPT, "--print-session", ...args], [letter], {
    ...(cwd ? { cwd } : {}),
  });
  expect(r.killed, `hung; the screen showed:\n${r.stdout}`).toBe(false);
  return { ...r, session: lastLine(r.stdout) };
}

function otherWorkspace(transcript: string): string {
  const dir = path.join(sb.root, "ws2");
  mkdirSync(dir);
  return sb.addReplayWorkspace(dir, transcript);
}

describe("astrid approvals in guided mode, answered on the terminal", { timeout: 90_000 }, () => {
  it("o (once) allows this call only: the next turn of the session asks again", async () => {
    sb.useReplay(DEMO_TRANSCRIPT);
    const first = await turn("o");
    expect(first.code).toBe(0);
    expect(first.asked).toEqual([QUESTION]);
    expect(searches(first.stdout)).toBe(1);
    expect(first.stdout).toContain(FINAL);

    // The continued session sends the first turn as history, so replay (which picks its line by
    // the assistant messages in the request) is one line further on: stage a recording whose
    // line 1 is the tool call again.
    const demo = readFileSync(DEMO_TRANSCRIPT, "utf8").trimEnd().split("\n");
    const secondTurn = path.join(sb.workspace, "second-turn.jsonl");
    writeFileSync(secondTurn, `${[demo[1], demo[0], demo[1]].join("\n")}\n`);
    sb.addReplayWorkspace(sb.workspace, secondTurn);
    const again = await turn("o", ["--session", first.session]);
    expect(again.code).toBe(0);
    expect(searches(again.stdout)).toBeGreaterThan(0);
    expect(again.asked).toEqual([QUESTION]);
  });

  it("s (session) covers the identical call and the next turn, not a new session", async () => {
    sb.useReplay(SEARCH_TWICE);
    const first = await turn("s");
    expect(first.code).toBe(0);
    expect(first.asked).toEqual([QUESTION]);
    expect(searches(first.stdout)).toBe(2);
    expect(first.stdout).toContain(FINAL);

    // The replayed model searches again in the next turn (react sends no history today, so the
    // transcript restarts at its first line; see the report on session history).
    const same = await turn("d", ["--session", first.session]);
    expect(same.code).toBe(0);
    expect(searches(same.stdout)).toBeGreaterThan(0);
    expect(same.asked).toEqual([]);

    const fresh = await turn("s");
    expect(fresh.session).not.toBe(first.session);
    expect(fresh.asked).toEqual([QUESTION]);
  });

  it("w (workspace) covers the identical call, and another workspace still asks", async () => {
    sb.useReplay(SEARCH_TWICE);
    const first = await turn("w");
    expect(first.code).toBe(0);
    expect(first.asked).toEqual([QUESTION]);
    expect(searches(first.stdout)).toBe(2);
    expect(first.stdout).toContain(FINAL);

    const elsewhere = await turn("d", [], otherWorkspace(DEMO_TRANSCRIPT));
    expect(elsewhere.asked).toEqual([QUESTION]);
    expect(elsewhere.code).toBe(4);
  });

  it("a (always) covers the identical call", async () => {
    sb.useReplay(SEARCH_TWICE);
    const first = await turn("a");
    expect(first.code).toBe(0);
    expect(first.asked).toEqual([QUESTION]);
    expect(searches(first.stdout)).toBe(2);
    expect(first.stdout).toContain(FINAL);
  });

  // Lasting grants live in the home's grants.json, shared by every session. The second turn
  // answers "d" if asked, so a forgotten grant shows as a question and exit 4, not a hang.
  it("w (workspace) covers a new session in the same workspace", async () => {
    sb.useReplay(SEARCH_TWICE);
    const first = await turn("w");
    expect(first.asked).toEqual([QUESTION]);
    sb.addReplayWorkspace(sb.workspace, DEMO_TRANSCRIPT);
    const fresh = await turn("d");
    expect(fresh.session).not.toBe(first.session);
    expect(searches(fresh.stdout)).toBe(1);
    expect(fresh.asked).toEqual([]);
    expect(fresh.code).toBe(0);
  });

  it("a (always) covers a new session in another workspace", async () => {
    sb.useReplay(SEARCH_TWICE);
    const first = await turn("a");
    expect(first.asked).toEqual([QUESTION]);
    const elsewhere = await turn("d", [], otherWorkspace(DEMO_TRANSCRIPT));
    expect(elsewhere.session).not.toBe(first.session);
    expect(searches(elsewhere.stdout)).toBe(1);
    expect(elsewhere.asked).toEqual([]);
    expect(elsewhere.code).toBe(0);
  });

  it("d (deny) refuses the call: stopReason denied and exit code 4", async () => {
    sb.useReplay(DEMO_TRANSCRIPT);
    const r = await turn("d");
    expect(r.asked).toEqual([QUESTION]);
    expect(r.code).toBe(4);
    const show = await sb.ok(["session", "show", r.session]);
    const { transcript } = JSON.parse(show.stdout) as {
      transcript: { role: string; stopReason?: string }[];
    };
    expect(transcript.map((t) => [t.role, t.stopReason])).toEqual([
      ["user", undefined],
      ["assistant", "denied"],
    ]);
  });

  // One terminal reader per process: a reader per question would swallow the next answer.
  it("two questions in one turn are each answered", async () => {
    sb.useReplay(SEARCH_TWICE, "\n[approvals]\ntimeout_seconds = 3\n");
    const r = await runInTerminal(sb, PROMPT, ["o", "o"]);
    expect(r.asked).toEqual([QUESTION, QUESTION]);
    expect(r.code).toBe(0);
  });

  // ... and the process exits after the answer even with the terminal still open.
  it("exits after the answer with the terminal left open", async () => {
    sb.useReplay(DEMO_TRANSCRIPT);
    const r = await runInTerminal(sb, PROMPT, ["o"], { keepInputOpen: true, killAfterMs: 10_000 });
    expect(r.stdout).toContain(FINAL);
    expect(r.killed).toBe(false);
    expect(r.code).toBe(0);
  });
});
