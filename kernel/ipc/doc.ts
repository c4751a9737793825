/**
 * The message tables of docs/daemon-protocol.md, rendered from the zod schemas in
 * kernel/protocol.ts so the document cannot drift from what both ends validate (a test checks
 * that the committed document contains exactly this output).
 */
import { z } from "zod";
import { ClientRequest, DaemonMessage, Hello, Welcome } from "../protocol.js";
import { DAEMON_ERROR_CODES, FIRE_AND_FORGET_TYPES, TERMINAL_TYPES } from "./messages.js";

interface JsonSchema {
  type?: string | string[];
  const?: unknown;
  enum?: unknown[];
  items?: JsonSchema;
  properties?: Record<string, JsonSchema>;
  required?: string[];
  description?: string;
}

function typeOf(s: JsonSchema): string {
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((e) => JSON.stringify(e)).join(" \\| ");
  if (s.type === "array") return `${s.items ? typeOf(s.items) : "any"}[]`;
  if (s.type === "object" && s.properties) {
    const inner = fieldList(s).join(", ");
    return `{ ${inner} }`;
  }
  if (Array.isArray(s.type)) return s.type.join(" \\| ");
  return s.type ?? "any";
}

function fieldList(schema: JsonSchema): string[] {
  const required = new Set(schema.required ?? []);
  return Object.entries(schema.properties ?? {})
    .filter(([name]) => name !== "type")
    .map(([name, prop]) => {
      const desc = prop.description ? ` (${prop.description.replace(/\|/g, "\\|")})` : "";
      return `\`${name}${required.has(name) ? "" : "?"}\`: ${typeOf(prop)}${desc}`;
    });
}

function row(schema: z.core.$ZodType, last: (type: string) => string): string[] {
  const json = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as JsonSchema;
  const type = String(json.properties?.type?.const);
  const fields = fieldList(json).join("<br>") || "—";
  return [`\`${type}\``, fields, last(type)];
}

/** Columns padded to equal width: the layout the repository's formatter (biome) keeps. */
function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)];
}

/** Markdown tables of every message on the daemon socket, grouped by who sends it. */
export function daemonProtocolTable(): string {
  const handshake = [Hello, Welcome].map((s) =>
    row(s, (t) => (t === "hello" ? "client → daemon, first frame" : "daemon → client, reply")),
  );
  const requests = ClientRequest.def.options.map((s) =>
    row(s, (t) =>
      FIRE_AND_FORGET_TYPES.has(t as ClientRequest["type"])
        ? "none (fire-and-forget)"
        : "messages with its `id`, ending in a terminal one",
    ),
  );
  const answers = DaemonMessage.def.options
    .filter((s) => s !== Welcome)
    .map((s) => row(s, (t) => (TERMINAL_TYPES.has(t as DaemonMessage["type"]) ? "yes" : "no")));
  return [
    "### Handshake",
    "",
    ...table(["type", "fields", "sent"], handshake),
    "",
    "### Requests (client → daemon)",
    "",
    ...table(["type", "fields", "answered by"], requests),
    "",
    "### Daemon messages (daemon → client)",
    "",
    ...table(["type", "fields", "terminal"], answers),
    "",
    "### Error codes",
    "",
    ...table(
      ["code", "meaning"],
      Object.entries(DAEMON_ERROR_CODES).map(([code, meaning]) => [`\`${code}\``, meaning]),
    ),
    "",
  ].join("\n");
}
