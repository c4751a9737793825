export * from "./capability-rules.js";
export * from "./errors.js";
export * from "./graph.js";
export { type KeyPath, locateKey } from "./locate.js";
export { usdToMicro } from "./money.js";
export { loadManifest, MANIFEST_FILE, parseManifest } from "./parse.js";
export { type Engine, type Manifest, manifestSchema, type RawManifest } from "./schema.js";
