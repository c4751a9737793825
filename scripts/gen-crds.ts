/** `npx tsx scripts/gen-crds.ts`: writes crds/*.yaml and docs/crds.md from operator/api. */
import { writeFileSync } from "node:fs";
import { CRD_FILES, crdYaml, KINDS } from "../operator/api/crd.js";
import { crdReference } from "../operator/api/reference.js";

for (const kind of KINDS) {
  writeFileSync(new URL(`../${CRD_FILES[kind]}`, import.meta.url), crdYaml(kind));
  console.log(`wrote ${CRD_FILES[kind]}`);
}
writeFileSync(new URL("../docs/crds.md", import.meta.url), crdReference());
console.log("wrote docs/crds.md");
