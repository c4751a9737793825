/** `make docs`: writes the generated reference pages. Tests fail when they are out of date. */
import { writeFileSync } from "node:fs";
import { protocolReference } from "../core/protocol/reference.js";

writeFileSync(new URL("../docs/protocol.md", import.meta.url), protocolReference());
console.log("wrote docs/protocol.md");
