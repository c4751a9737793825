/**
 * `astrid` command line: argv in, one Command out (or a UsageError saying what was wrong).
 * The shapes follow the seed: `astrid -p "…"`, `--yes`, `--session`, `--print-session`,
 * `--format`, `astrid chat`, `astrid session …`, `astrid capsule …`, `astrid audit verify`.
 */
import { parseArgs } from "node:util";
import { SECURITY_MODES, type SecurityMode } from "../../core/security/modes/policy-table.js";

export type OutputFormat = "text" | "json" | "stream-json";

export interface PromptOptions {
  readonly session: string | undefined;
  readonly printSession: boolean;
  readonly format: OutputFormat;
  readonly mode: SecurityMode | undefined;
  readonly yes: boolean;
}

export type Command =
  | { readonly kind: "help"; readonly topic: string | undefined }
  | { readonly kind: "version" }
  | ({ readonly kind: "prompt"; readonly text: string } & PromptOptions)
  | ({ readonly kind: "chat" } & PromptOptions)
  | { readonly kind: "init"; readonly force: boolean }
  | { readonly kind: "session.list" | "session.show" | "session.delete"; readonly id?: string }
  | { readonly kind: "capsule.install"; readonly source: string }
  | { readonly kind: "capsule.list" | "capsule.tree" }
  | { readonly kind: "capsule.remove"; readonly name: string; readonly version?: string }
  | { readonly kind: "audit.verify"; readonly path: string | undefined }
  | { readonly kind: "status" | "stop" };

export class UsageError extends Error {
  override readonly name = "UsageError";
}

const FORMATS: readonly OutputFormat[] = ["text", "json", "stream-json"];

function promptOptions(v: Record<string, string | boolean | undefined>): PromptOptions {
  const format = (v.format ?? "text") as string;
  if (!FORMATS.includes(format as OutputFormat)) {
    throw new UsageError(`--format: expected one of ${FORMATS.join(", ")}, got "${format}"`);
  }
  const mode = v.mode as string | undefined;
  if (mode !== undefined && !SECURITY_MODES.includes(mode as SecurityMode)) {
    throw new UsageError(`--mode: expected one of ${SECURITY_MODES.join(", ")}, got "${mode}"`);
  }
  const session = v.session as string | undefined;
  if (session !== undefined && !/^[A-Za-z0-9_-]{1,128}$/.test(session)) {
    throw new UsageError(`--session: expected a session id of [A-Za-z0-9_-], got "${session}"`);
  }
  return {
    session,
    printSession: v["print-session"] === true,
    format: format as OutputFormat,
    mode: mode as SecurityMode | undefined,
    yes: v.yes === true,
  };
}

const PROMPT_FLAGS = {
  print: { type: "string", short: "p" },
  session: { type: "string" },
  "print-session": { type: "boolean" },
  format: { type: "string" },
  mode: { type: "string" },
  yes: { type: "boolean", short: "y" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
  force: { type: "boolean" },
} as const;

export function parseCommand(argv: readonly string[]): Command {
  let parsed: ReturnType<
    typeof parseArgs<{ options: typeof PROMPT_FLAGS; allowPositionals: true; args: string[] }>
  >;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: PROMPT_FLAGS,
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(`${(err as Error).message}; see astrid --help`);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const [verb, sub, ...rest] = parsed.positionals;
  if (v.help) return { kind: "help", topic: verb };
  if (v.version) return { kind: "version" };
  if (v.print !== undefined) {
    if (verb !== undefined) {
      throw new UsageError(`-p takes the prompt as its value; unexpected argument "${verb}"`);
    }
    if (String(v.print).trim() === "") throw new UsageError("-p needs a prompt");
    return { kind: "prompt", text: String(v.print), ...promptOptions(v) };
  }
  const none = (what: string) => {
    if (rest.length > 0 || (sub !== undefined && what !== "sub")) {
      throw new UsageError(`unexpected argument "${rest[0] ?? sub}" for ${verb}`);
    }
  };
  switch (verb) {
    case undefined:
      return { kind: "help", topic: undefined };
    case "help":
      return { kind: "help", topic: sub };
    case "chat":
      none("");
      return { kind: "chat", ...promptOptions(v) };
    case "init":
      none("");
      return { kind: "init", force: v.force === true };
    case "status":
    case "stop":
      none("");
      return { kind: verb };
    case "session": {
      if (sub === "list") return { kind: "session.list" };
      if (sub === "show" || sub === "delete") {
        if (!rest[0]) throw new UsageError(`astrid session ${sub} needs a session id`);
        return { kind: `session.${sub}`, id: rest[0] };
      }
      throw new UsageError(`astrid session: expected list, show or delete, got "${sub ?? ""}"`);
    }
    case "capsule": {
      if (sub === "list" || sub === "tree") return { kind: `capsule.${sub}` };
      if (sub === "install") {
        if (!rest[0])
          throw new UsageError("astrid capsule install needs a folder or .capsule file");
        return { kind: "capsule.install", source: rest[0] };
      }
      if (sub === "remove") {
        if (!rest[0]) throw new UsageError("astrid capsule remove needs a capsule name");
        const [name, version] = rest[0].split("@");
        return { kind: "capsule.remove", name: name!, ...(version ? { version } : {}) };
      }
      throw new UsageError(
        `astrid capsule: expected install, list, remove or tree, got "${sub ?? ""}"`,
      );
    }
    case "audit":
      if (sub !== "verify")
        throw new UsageError(`astrid audit: expected verify, got "${sub ?? ""}"`);
      return { kind: "audit.verify", path: rest[0] };
    default:
      throw new UsageError(`unknown command "${verb}"; see astrid --help`);
  }
}
