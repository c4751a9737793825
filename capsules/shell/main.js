// The shell tool capsule: one command, no shell. The host spawns it only when the manifest's
// host_process list matches the command and its arguments; the capsule adds a timeout, keeps
// the result small enough for a model, and refuses the few arguments that would turn a listed
// read-only command into a writer or a launcher of unlisted commands.
const MAX_STDOUT = 64 * 1024;
const MAX_STDERR = 16 * 1024;
const DEFAULT_TIMEOUT_MS = 30000;

const tools = [
  {
    name: "run",
    description:
      "Run one host command in the workspace, without a shell (no pipes, globs or redirects). " +
      "Only commands the capsule's manifest lists are allowed: ls, cat, grep, git status, " +
      "git diff, git log, wc, head, tail and find, unless the user widened the list.",
    inputSchema: {
      type: "object",
      properties: {
        command: { type: "string", description: "The command name, e.g. ls" },
        args: { type: "array", items: { type: "string" }, description: "Its arguments" },
      },
      required: ["command"],
    },
  },
];

export function describe() {
  return { tools };
}

const ok = (callId, text) => ({ callId, content: [{ type: "text", text }], isError: false });
const fail = (callId, text) => ({ callId, content: [{ type: "text", text }], isError: true });

// A listed command with one of these arguments runs other programs (find -exec) or writes
// files (find -delete, git diff --output): the gate's `**` cannot tell them apart, so the
// capsule refuses them before asking the host. Widening the manifest does not lift this list.
const LAUNCHERS = {
  find: [
    "-exec",
    "-execdir",
    "-ok",
    "-okdir",
    "-delete",
    "-fprint",
    "-fprint0",
    "-fprintf",
    "-fls",
  ],
  git: ["--output", "--ext-diff"],
};

function refusedArgument(command, args) {
  const name = command.split("/").pop();
  const bad = LAUNCHERS[name];
  if (!bad) return undefined;
  return args.find((a) => bad.some((b) => a === b || a.startsWith(`${b}=`)));
}

function timeoutMs() {
  const raw = astrid.sys.config("SHELL_TIMEOUT_MS");
  if (raw === undefined || raw === null || raw === "") return DEFAULT_TIMEOUT_MS;
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    throw Object.assign(
      new Error(`SHELL_TIMEOUT_MS must be a positive integer of milliseconds, got "${raw}"`),
      { code: "invalid" },
    );
  }
  return n;
}

/** Decodes at most `max` bytes, cut on a character boundary, and says how much was left out. */
function clip(bytes, max) {
  if (bytes.length <= max) return { text: astrid.utf8.decode(bytes), cut: 0 };
  let end = max;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return { text: astrid.utf8.decode(bytes.subarray(0, end)), cut: bytes.length - end };
}

export async function run({ callId, arguments: a }) {
  const command = a.command;
  const args = a.args ?? [];
  if (typeof command !== "string" || command === "") {
    return fail(callId, 'invalid: run needs a command name, e.g. "ls"');
  }
  if (!Array.isArray(args) || args.some((x) => typeof x !== "string")) {
    return fail(callId, "invalid: args must be an array of strings");
  }
  const launcher = refusedArgument(command, args);
  if (launcher !== undefined) {
    return fail(
      callId,
      `refused: "${command} ${launcher}" would write files or run commands the allow-list does not name; use a listed command directly`,
    );
  }
  let limit;
  let r;
  try {
    limit = timeoutMs();
    r = await astrid.process.spawn({ command, args, timeoutMs: limit });
  } catch (e) {
    // A denial (gate, approval) fails the call so the orchestrator learns it was refused and
    // the refusal stays in the audit chain; anything else is a result the model can read.
    if (e.code === "denied") throw e;
    return fail(callId, `${e.code ?? "error"}: ${e.message}`);
  }
  const out = clip(r.stdout, MAX_STDOUT);
  const err = clip(r.stderr, MAX_STDERR);
  const lines = [];
  if (r.signal) {
    lines.push(
      r.signal === "SIGKILL"
        ? `killed (SIGKILL): the command ran past its ${limit} ms timeout or the call's deadline`
        : `killed by ${r.signal}`,
    );
  } else {
    lines.push(`exit code ${r.exitCode}`);
  }
  if (out.text !== "") lines.push("--- stdout ---", out.text.replace(/\n$/, ""));
  if (err.text !== "") lines.push("--- stderr ---", err.text.replace(/\n$/, ""));
  if (r.truncated) lines.push("[output truncated: the host keeps at most 1 MiB of each stream]");
  if (out.cut > 0) lines.push(`[stdout truncated: ${out.cut} more bytes not shown]`);
  if (err.cut > 0) lines.push(`[stderr truncated: ${err.cut} more bytes not shown]`);
  const text = lines.join("\n");
  return r.exitCode === 0 && !r.signal ? ok(callId, text) : fail(callId, text);
}
