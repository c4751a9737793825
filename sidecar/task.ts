/**
 * Task mode: a session pod's sidecar sends its AgentSession's task, once, as a `session.prompt`
 * to its own capsule and reports the answer where Kubernetes picks it up (the container's
 * termination message), then the process drains and exits.
 *
 * The prompt goes over the bus like any caller's, not into the engine directly, so it passes
 * the same pipeline: session binding, the token check against the operator-minted session
 * token, budget, approvals, audit. A sidecar cannot grant its own task more than the token.
 *
 * The result is one JSON line of at most 4096 bytes (the kubelet keeps no more of a
 * termination message): the answer's text is cut to fit and marked `"truncated": true`; the
 * whole text is in the audit chain.
 */
import { readFile, writeFile } from "node:fs/promises";
import type { z } from "zod";
import type { Bus } from "../core/bus/bus.js";
import { RequestTimeoutError } from "../core/bus/errors.js";
import { decode, encode, expectKind } from "../core/protocol/envelope.js";
import type { ErrorReply, SessionResponse } from "../core/protocol/messages.js";
import { subjects } from "../core/protocol/topics.js";
import type { SecurityMode } from "../core/security/modes/modes.js";
import type { SidecarLogger } from "./log.js";
import { TOKEN_HEADER } from "./sidecar.js";

export const TASK_RESULT_MAX_BYTES = 4096;
/** The sender named in the prompt's envelope: the task comes from the AgentSession's spec. */
export const TASK_SENDER = "operator";

type SessionResponseBody = z.infer<typeof SessionResponse>;
export type TaskErrorCode = ErrorReply["code"];

const bytes = (s: string): number => Buffer.byteLength(s, "utf8");

/**
 * The longest prefix of `chars` for which `render(prefix)` fits in `max` bytes (whole code
 * points only, so a cut never splits a character). Rendering grows with the prefix, so a
 * binary search finds it in a few steps even for a megabyte of text.
 */
function longestFitting(chars: readonly string[], render: (s: string) => string, max: number) {
  let lo = 0;
  let hi = chars.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (bytes(render(chars.slice(0, mid).join(""))) <= max) lo = mid;
    else hi = mid - 1;
  }
  return chars.slice(0, lo).join("");
}

/** The success line, newline included, at most 4096 bytes. */
export function taskResultLine(r: SessionResponseBody): { line: string; truncated: boolean } {
  const render = (text: string, truncated: boolean): string =>
    `${JSON.stringify({ text, stopReason: r.stopReason, usage: r.usage, truncated })}\n`;
  const whole = render(r.text, false);
  if (bytes(whole) <= TASK_RESULT_MAX_BYTES) return { line: whole, truncated: false };
  const text = longestFitting(Array.from(r.text), (t) => render(t, true), TASK_RESULT_MAX_BYTES);
  return { line: render(text, true), truncated: true };
}

/** The failure line, newline included, at most 4096 bytes (the message is cut to fit). */
export function taskErrorLine(code: TaskErrorCode, message: string): string {
  const render = (m: string): string => `${JSON.stringify({ error: { code, message: m } })}\n`;
  return render(longestFitting(Array.from(message), render, TASK_RESULT_MAX_BYTES));
}

export interface SessionTaskOptions {
  readonly bus: Bus;
  readonly session: string;
  readonly principal: string;
  readonly mode: SecurityMode;
  readonly text: string;
  readonly tokenFile: string;
  readonly resultFile: string;
  readonly timeoutMs: number;
  readonly logger: SidecarLogger;
}

type Outcome =
  | { readonly ok: true; readonly response: SessionResponseBody }
  | { readonly ok: false; readonly code: TaskErrorCode; readonly message: string };

async function ask(o: SessionTaskOptions): Promise<Outcome> {
  let token: string;
  try {
    token = (await readFile(o.tokenFile, "utf8")).trim();
  } catch (err) {
    return {
      ok: false,
      code: "invalid",
      message: `cannot read the task's token file ${o.tokenFile}: ${(err as Error).message}`,
    };
  }
  if (token === "") {
    return { ok: false, code: "invalid", message: `the task's token file ${o.tokenFile} is empty` };
  }
  const subject = subjects.sessionPrompt(o.session);
  let data: Uint8Array;
  try {
    const wire = encode(
      "session.prompt",
      { text: o.text, mode: o.mode },
      { session: o.session, principal: o.principal, capsule: TASK_SENDER },
      { timeoutMs: o.timeoutMs },
    );
    const reply = await o.bus.request(subject, wire, {
      timeoutMs: o.timeoutMs,
      headers: { [TOKEN_HEADER]: token },
    });
    data = reply.data;
  } catch (err) {
    if (err instanceof RequestTimeoutError) {
      return {
        ok: false,
        code: "timeout",
        message: `no answer to the task within ${o.timeoutMs} ms (task.timeoutMs)`,
      };
    }
    return { ok: false, code: "unavailable", message: `${subject}: ${(err as Error).message}` };
  }
  try {
    const env = decode(data, { checkDeadline: false });
    if (env.kind === "error") {
      const e = env.body as ErrorReply;
      return { ok: false, code: e.code, message: e.message };
    }
    return { ok: true, response: expectKind(env, "session.response").body };
  } catch (err) {
    return {
      ok: false,
      code: "internal",
      message: `the capsule's answer is not a session.response: ${(err as Error).message}`,
    };
  }
}

/**
 * Sends the task, writes the result file and returns the exit code: 0 when an answer came
 * (whatever its stopReason), 1 when none did or the result could not be written.
 */
export async function runSessionTask(o: SessionTaskOptions): Promise<number> {
  o.logger.info({ timeoutMs: o.timeoutMs }, "task sent");
  const outcome = await ask(o);
  let line: string;
  if (outcome.ok) {
    const { line: l, truncated } = taskResultLine(outcome.response);
    line = l;
    o.logger.info(
      { stopReason: outcome.response.stopReason, usage: outcome.response.usage, truncated },
      "task answered",
    );
  } else {
    line = taskErrorLine(outcome.code, outcome.message);
    o.logger.error({ code: outcome.code, reason: outcome.message }, "task failed");
  }
  try {
    await writeFile(o.resultFile, line);
  } catch (err) {
    o.logger.error(
      { resultFile: o.resultFile, reason: (err as Error).message },
      "cannot write the task result",
    );
    return 1;
  }
  return outcome.ok ? 0 : 1;
}
