/**
 * Admission check of a compiled (core) WASM guest before it is ever instantiated. A guest
 * reaches the world only through imports, so the only import allowed is `astrid.call`; and
 * its memory must declare a maximum no larger than the capsule's budget, because the engine
 * cannot cap a memory the guest defines itself (and does not import one: the toolchains —
 * clang, Rust, AssemblyScript — define and export their memory by default, and set its
 * maximum with `--max-memory=<bytes>` / `--maximumMemory <pages>`).
 */
import { Wasm, type WasmModule } from "./webassembly.js";

const PAGE = 64 * 1024;
/** ABI functions, never callable as handlers. */
export const RESERVED_EXPORTS: ReadonlySet<string> = new Set(["alloc", "dealloc", "memory"]);

export interface CheckedCoreModule {
  readonly module: WasmModule;
  /** Exported functions other than `alloc` and `dealloc`: the handlers. */
  readonly handlers: readonly string[];
  readonly maxMemoryPages: number;
}

export class CoreModuleRejected extends Error {
  override readonly name = "CoreModuleRejected";
}

export async function checkCoreModule(
  name: string,
  bytes: Uint8Array,
  memoryMb: number,
): Promise<CheckedCoreModule> {
  let module: WasmModule;
  try {
    module = await Wasm.compile(bytes);
  } catch (err) {
    throw new CoreModuleRejected(
      `${name}: not a valid WebAssembly module (${err instanceof Error ? err.message : String(err)})`,
    );
  }
  for (const imp of Wasm.Module.imports(module)) {
    if (!(imp.module === "astrid" && imp.name === "call" && imp.kind === "function")) {
      throw new CoreModuleRejected(
        `${name}: imports ${imp.kind} ${imp.module}.${imp.name}; only the function astrid.call is provided`,
      );
    }
  }
  const exports = Wasm.Module.exports(module);
  const exported = (n: string, kind: string) =>
    exports.some((e) => e.name === n && e.kind === kind);
  if (!exported("memory", "memory")) {
    throw new CoreModuleRejected(`${name}: must export its memory as "memory"`);
  }
  if (!exported("alloc", "function")) {
    throw new CoreModuleRejected(`${name}: must export alloc(len: i32) -> i32`);
  }
  const limits = declaredMemoryLimits(bytes);
  if (!limits) throw new CoreModuleRejected(`${name}: defines no memory of its own`);
  const budgetPages = (memoryMb * 1024 * 1024) / PAGE;
  if (limits.max === undefined) {
    throw new CoreModuleRejected(
      `${name}: its memory declares no maximum; build it with a maximum ≤ ${memoryMb} MiB`,
    );
  }
  if (limits.max > budgetPages) {
    throw new CoreModuleRejected(
      `${name}: its memory maximum is ${(limits.max * PAGE) / (1024 * 1024)} MiB, above the budget of ${memoryMb} MiB`,
    );
  }
  return {
    module,
    handlers: exports
      .filter((e) => e.kind === "function" && !RESERVED_EXPORTS.has(e.name))
      .map((e) => e.name),
    maxMemoryPages: limits.max,
  };
}

/**
 * Limits of the first memory in the memory section (id 5). The JS API does not expose a
 * module's declared limits on Node 20, so this reads the binary: sections are
 * `id:u8 size:leb128 payload`, the memory section is `count:leb128` then
 * `flags:u8 min:leb128 [max:leb128 if flags & 1]`.
 */
export function declaredMemoryLimits(bytes: Uint8Array): { min: number; max?: number } | undefined {
  let pos = 8; // magic + version
  const leb = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = bytes[pos++];
      if (b === undefined) throw new CoreModuleRejected("truncated module");
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
    }
  };
  while (pos < bytes.length) {
    const id = bytes[pos++];
    const size = leb();
    const end = pos + size;
    if (id === 5) {
      if (leb() === 0) return undefined;
      const flags = leb();
      // Shared or 64-bit memories are outside this engine's model; refuse rather than guess.
      if (flags > 1) throw new CoreModuleRejected(`memory flags ${flags} are not supported`);
      const min = leb();
      return flags & 1 ? { min, max: leb() } : { min };
    }
    pos = end;
  }
  return undefined;
}
