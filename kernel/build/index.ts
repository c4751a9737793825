export {
  type BuildOptions,
  type BuiltCapsule,
  type BuiltEngine,
  buildCapsule,
  MCP_SKIPPED_DIRS,
  QUICKJS_ENTRIES,
} from "./build.js";
export { bundleQuickJs, isNodeBuiltin, type QuickJsBundle } from "./bundle-quickjs.js";
export { type CoreModuleExpectations, checkCoreWasm } from "./check-core-wasm.js";
export { BuildError, type BuildErrorCode } from "./errors.js";
