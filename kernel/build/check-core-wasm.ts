/**
 * Build-time admission of a prebuilt core WASM module. The engine checks the same module again
 * at load; checking here means an author learns at build time, not when the first request
 * arrives, that the module lacks a handler the manifest routes to — or that the sidecar would
 * refuse it (imports beyond `astrid.call`, memory without a maximum within `memory_mb`).
 */

import {
  CoreModuleRejected,
  checkCoreModule,
} from "../../sidecar/engine/wasm/core-module-check.js";
import { Wasm } from "../../sidecar/engine/wasm/webassembly.js";
import { BuildError } from "./errors.js";

const MAGIC = [0x00, 0x61, 0x73, 0x6d];

interface Validator {
  validate(bytes: Uint8Array): boolean;
}
const validate = (bytes: Uint8Array): boolean =>
  (globalThis as unknown as { WebAssembly: Validator }).WebAssembly.validate(bytes);

export interface CoreModuleExpectations {
  /** `<folder>/<module path>`, for messages. */
  readonly name: string;
  readonly memoryMb: number;
  /** `[[handler]] function` names, in manifest order. */
  readonly handlers: readonly string[];
}

export async function checkCoreWasm(
  bytes: Uint8Array,
  want: CoreModuleExpectations,
): Promise<void> {
  const { name } = want;
  if (bytes.length < 8 || MAGIC.some((b, i) => bytes[i] !== b)) {
    throw new BuildError(
      "bad-module",
      `${name}: not a WebAssembly module; expected the magic bytes \\0asm at the start`,
    );
  }
  if (!validate(bytes)) {
    throw new BuildError(
      "bad-module",
      `${name}: not a valid WebAssembly module (WebAssembly.validate failed)`,
    );
  }
  const exports = Wasm.Module.exports(new Wasm.Module(bytes));
  const has = (n: string, kind: string): boolean =>
    exports.some((e) => e.name === n && e.kind === kind);
  const missing: string[] = [];
  if (!has("memory", "memory")) missing.push('memory "memory"');
  if (!has("alloc", "function")) missing.push('function "alloc"');
  const seen = new Set<string>();
  want.handlers.forEach((fn, i) => {
    if (seen.has(fn)) return;
    seen.add(fn);
    if (!has(fn, "function"))
      missing.push(`function ${JSON.stringify(fn)} (handler[${i}].function)`);
  });
  if (missing.length > 0) {
    throw new BuildError(
      "missing-export",
      `${name}: missing export ${missing.join(", ")}; expected a core module exporting memory, alloc and every [[handler]] function`,
    );
  }
  try {
    await checkCoreModule(name, bytes, want.memoryMb);
  } catch (e) {
    if (e instanceof CoreModuleRejected) throw new BuildError("bad-module", e.message);
    throw e;
  }
}
