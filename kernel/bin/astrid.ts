/**
 * `astrid`: the command line of the local shape. Commands that touch only files (init, capsule,
 * audit) run here; prompts, chat, sessions and status go to astrid-daemon, started on demand.
 * Exit codes are listed in HELP and docs/cli.md.
 *
 * `astrid -p` with a daemon running is a thin client: argument parsing, the socket client and
 * output. Everything else (local commands, spawning the daemon, the terminal for approvals) is
 * imported when used, so a prompt pays only for what it runs (issue 5: < 150 ms to the first
 * model request; bench/cli measures it).
 */
import { type Command, type PromptOptions, parseCommand, UsageError } from "../cli/args.js";
import { astridHome } from "../config/astrid-home.js";
import { ensureDaemon } from "../ipc/autostart.js";
import { DaemonClient, DaemonNotRunningError } from "../ipc/client.js";
import type { DaemonMessage } from "../protocol.js";

export const EXIT = {
  ok: 0,
  failed: 1,
  usage: 2,
  daemon: 3,
  stopped: 4,
  interrupted: 130,
} as const;

const HELP = `astrid — an operating system for AI agents (local shape)

usage:
  astrid -p "PROMPT" [options]      one turn; piped stdin is passed along (git diff | astrid -p …)
  astrid chat [options]             interactive session
  astrid init                       create ~/.astrid (config, keys) and install the default capsules
  astrid session list|show ID|delete ID
  astrid capsule install DIR|FILE | list | remove NAME[@VERSION] | tree
  astrid audit verify [PATH]        verify audit chains (default: every session's)
  astrid status | stop              the daemon

options for -p and chat:
  --session ID        continue a session        --print-session   print the session id last on stderr
  --mode MODE         safe|guided|autonomous|yolo (default from config.toml)
  -y, --yes           answer approvals as autonomous mode does; everything else is still enforced
  --format FORMAT     text|json|stream-json (default text)
  -h, --help          this help                 -V, --version

environment: ASTRID_HOME (default ~/.astrid); provider keys such as ANTHROPIC_API_KEY.
exit codes: 0 done; 1 failed; 2 usage error; 3 daemon unavailable; 4 the agent stopped early
(step limit, budget spent, denied); 130 interrupted.`;

/** Ids of requests on this connection (the global Web Crypto: no node:crypto import at start). */
const requestId = (): string => crypto.randomUUID();

function out(line: string) {
  process.stdout.write(`${line}\n`);
}
function err(line: string) {
  process.stderr.write(`${line}\n`);
}

async function connect(home: string): Promise<DaemonClient> {
  return ensureDaemon({
    home,
    timeoutMs: 15_000,
    spawnDaemon: async () => {
      const [{ spawn }, { openSync }, path, { installRoot, runningBundled }] = await Promise.all([
        import("node:child_process"),
        import("node:fs"),
        import("node:path"),
        import("../install-root.js"),
      ]);
      // From the bundle the daemon is dist/astrid-daemon.js and needs no loader; from the
      // sources it is the .ts file, run with the same loader this CLI was started with. No
      // --enable-source-maps for the bundle: reading its map would delay a cold start, and the
      // daemon logs messages, not stacks.
      const main = runningBundled(import.meta.url)
        ? path.join(installRoot(), "dist", "astrid-daemon.js")
        : path.join(installRoot(), "kernel", "bin", "astrid-daemon.ts");
      const child = spawn(process.execPath, [...process.execArgv, main, "--home", home], {
        detached: true,
        stdio: ["ignore", "ignore", openSync(`${home}/logs/daemon.log`, "a")],
        env: process.env,
      });
      child.unref();
      return child;
    },
  });
}

async function readStdin(): Promise<string | undefined> {
  if (process.stdin.isTTY) return undefined;
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString("utf8");
  return text.length > 0 ? text : undefined;
}

const ANSWERS: Record<
  string,
  "allow_once" | "allow_session" | "allow_workspace" | "allow_always" | "deny"
> = {
  o: "allow_once",
  s: "allow_session",
  w: "allow_workspace",
  a: "allow_always",
  d: "deny",
};

/**
 * The terminal, opened once per process: approvals are asked there, not on stdin (which may be
 * a pipe). One reader for the whole run — a reader per question would leave a pending read
 * that swallows the person's next answer.
 */
type Terminal = import("node:readline").Interface;
let terminal: Terminal | null | undefined;
async function openTerminal(): Promise<Terminal | null> {
  if (terminal !== undefined) return terminal;
  const [{ openSync }, { createInterface }, tty] = await Promise.all([
    import("node:fs"),
    import("node:readline"),
    import("node:tty"),
  ]);
  try {
    const input = new tty.ReadStream(openSync("/dev/tty", "r"));
    terminal = createInterface({ input, output: process.stderr });
  } catch {
    terminal = null;
  }
  return terminal;
}

/** Asks the person; no terminal means deny. */
async function askPerson(m: Extract<DaemonMessage, { type: "approval.needed" }>) {
  const rl = await openTerminal();
  if (!rl) {
    err(`approval needed for ${m.kind} ${m.target}, but there is no terminal: denied (use --yes)`);
    return "deny" as const;
  }
  for (;;) {
    const a = await new Promise<string>((resolve) =>
      rl.question(
        `\n${m.capsule} wants ${m.kind} ${m.target}\n  (${m.reason})\n  allow [o]nce, [s]ession, [w]orkspace, [a]lways, or [d]eny? `,
        resolve,
      ),
    );
    const d = ANSWERS[a.trim().toLowerCase().slice(0, 1)];
    if (d) return d;
  }
}

async function runPrompt(
  client: DaemonClient,
  text: string,
  o: PromptOptions,
  stdin: string | undefined,
): Promise<{ code: number; session: string | undefined }> {
  const id = requestId();
  let session = o.session;
  let final: Extract<DaemonMessage, { type: "done" }> | undefined;
  for await (const m of client.request({
    type: "prompt",
    id,
    text,
    workspace: process.cwd(),
    ...(o.session ? { session: o.session } : {}),
    ...(stdin !== undefined ? { stdin } : {}),
    ...(o.mode ? { mode: o.mode } : {}),
    yes: o.yes,
  })) {
    if (o.format === "stream-json") out(JSON.stringify(m));
    switch (m.type) {
      case "session.started":
        session = m.session;
        break;
      case "delta":
        if (o.format === "text") process.stdout.write(m.text);
        break;
      case "tool":
        if (o.format === "text" && m.phase === "call") err(`· ${m.tool} ${m.summary}`);
        break;
      case "approval.needed": {
        const decision = o.yes ? "allow_once" : await askPerson(m);
        client.send({
          type: "approval.answer",
          id: requestId(),
          requestId: m.requestId,
          decision,
        });
        break;
      }
      case "done":
        final = m;
        break;
      case "error":
        if (o.format !== "stream-json") err(`astrid: ${m.message}`);
        return { code: EXIT.failed, session };
    }
  }
  if (!final) return { code: EXIT.failed, session };
  if (o.format === "text") process.stdout.write(final.text.endsWith("\n") ? "" : "\n");
  if (o.format === "json") out(JSON.stringify(final));
  return { code: final.stopReason === "done" ? EXIT.ok : EXIT.stopped, session };
}

async function daemonCommand(cmd: Command, home: string): Promise<number> {
  // Piped input (`git diff | astrid -p …`) is read while the daemon is reached, not after.
  const stdin = cmd.kind === "prompt" ? readStdin() : undefined;
  const client = await connect(home);
  try {
    switch (cmd.kind) {
      case "prompt": {
        const r = await runPrompt(client, cmd.text, cmd, await stdin);
        if (cmd.printSession && r.session) err(r.session);
        return r.code;
      }
      case "chat": {
        let session = cmd.session;
        const { createInterface } = await import("node:readline");
        const rl = createInterface({ input: process.stdin, output: process.stdout });
        try {
          for (;;) {
            const line = await new Promise<string | null>((resolve) => {
              rl.question("› ", resolve);
              rl.once("close", () => resolve(null));
            });
            if (line === null || line.trim() === "/exit") break;
            if (!line.trim()) continue;
            const r = await runPrompt(client, line, { ...cmd, session }, undefined);
            session = r.session;
          }
        } finally {
          rl.close();
        }
        if (cmd.printSession && session) err(session);
        return EXIT.ok;
      }
      default: {
        const type = cmd.kind as "status";
        const req =
          cmd.kind === "session.show" || cmd.kind === "session.delete"
            ? { type: cmd.kind, id: requestId(), session: cmd.id! }
            : { type, id: requestId() };
        for await (const m of client.request(req as never)) {
          if (m.type === "result") out(JSON.stringify(m.data, null, 2));
          if (m.type === "error") {
            err(`astrid: ${m.message}`);
            return EXIT.failed;
          }
        }
        return EXIT.ok;
      }
    }
  } finally {
    await client.close();
  }
}

async function main(): Promise<number> {
  let cmd: Command;
  try {
    cmd = parseCommand(process.argv.slice(2));
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    err(`astrid: ${e.message}`);
    return EXIT.usage;
  }
  if (cmd.kind === "help") {
    out(HELP);
    return EXIT.ok;
  }
  if (cmd.kind === "version") {
    out("astrid 0.1.0");
    return EXIT.ok;
  }
  const home = astridHome(process.env);
  switch (cmd.kind) {
    case "init":
    case "capsule.install":
    case "capsule.list":
    case "capsule.remove":
    case "capsule.tree":
    case "audit.verify": {
      // Loaded on demand: the prompt path should not pay for the build and audit code.
      const { runLocal } = await import("../cli/local-commands.js");
      return runLocal(cmd, home, { out, err });
    }
    case "stop":
      try {
        const c = await DaemonClient.connect({ home });
        for await (const _ of c.request({ type: "stop", id: requestId() })) break;
        await c.close();
        out("astrid-daemon stopped");
      } catch (e) {
        if (!(e instanceof DaemonNotRunningError)) throw e;
        out("astrid-daemon is not running");
      }
      return EXIT.ok;
    default:
      return daemonCommand(cmd, home);
  }
}

main().then(
  (code) => process.exit(code),
  (e: Error) => {
    err(`astrid: ${e.message}`);
    process.exit(e.name.startsWith("Daemon") ? EXIT.daemon : EXIT.failed);
  },
);
