import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DaemonMessage } from "../protocol.js";
import { daemonProtocolTable } from "./doc.js";
import { DAEMON_ERROR_CODES, REQUEST_TYPES } from "./messages.js";

describe("docs/daemon-protocol.md", () => {
  it("contains the message tables generated from kernel/protocol.ts", () => {
    const doc = readFileSync("docs/daemon-protocol.md", "utf8");
    // On failure: paste daemonProtocolTable() under "## Messages".
    expect(doc).toContain(daemonProtocolTable());
  });

  it("lists every request, daemon message and error code", () => {
    // Columns are padded for the formatter; compare rows with the padding collapsed.
    const rows = daemonProtocolTable()
      .split("\n")
      .map((l) => l.replace(/ {2,}/g, " "));
    const types = [
      ...REQUEST_TYPES,
      ...DaemonMessage.def.options.map((o) => o.shape.type.def.values[0]),
      "hello",
      ...Object.keys(DAEMON_ERROR_CODES),
    ];
    for (const t of types) expect(rows.some((r) => r.startsWith(`| \`${t}\` |`))).toBe(true);
    expect(rows).toContain(
      '| `approval.answer` | `id`: string<br>`requestId`: string<br>`decision`: "allow_once" \\| "allow_session" \\| "allow_workspace" \\| "allow_always" \\| "deny" | none (fire-and-forget) |',
    );
    expect(rows).toContain(
      "| `error` | `id?`: string<br>`code`: string<br>`message`: string | yes |",
    );
  });
});
