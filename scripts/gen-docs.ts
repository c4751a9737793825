/** `make docs`: writes the generated reference pages. Tests fail when they are out of date. */
import { readFileSync, writeFileSync } from "node:fs";
import { protocolReference } from "../core/protocol/reference.js";
import { CONFIG_TABLE_END, CONFIG_TABLE_START, sidecarConfigTable } from "../sidecar/config.js";

writeFileSync(new URL("../docs/protocol.md", import.meta.url), protocolReference());
console.log("wrote docs/protocol.md");

// The sidecar's settings table, between its markers in docs/sidecar.md.
const sidecarDoc = new URL("../docs/sidecar.md", import.meta.url);
const doc = readFileSync(sidecarDoc, "utf8");
const a = doc.indexOf(CONFIG_TABLE_START);
const b = doc.indexOf(CONFIG_TABLE_END);
if (a < 0 || b < a) throw new Error("docs/sidecar.md: the config table markers are missing");
writeFileSync(
  sidecarDoc,
  `${doc.slice(0, a + CONFIG_TABLE_START.length)}\n\n${sidecarConfigTable().trim()}\n\n${doc.slice(b)}`,
);
console.log("wrote docs/sidecar.md (settings table)");
