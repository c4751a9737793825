/**
 * The part of the WebAssembly JS API the engines use, typed here because the project's lib
 * setting (ES2023, no DOM) and @types/node 20 do not declare it. Node provides the real
 * objects; this only gives them types.
 */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(deltaPages: number): number;
}

export interface WasmModule {
  readonly __wasmModule?: never;
}

export interface WasmInstance {
  readonly exports: Record<string, unknown>;
}

export interface WasmModuleDescriptor {
  module: string;
  name: string;
  kind: "function" | "table" | "memory" | "global" | "tag";
}

export type WasmImports = Record<string, Record<string, unknown>>;

interface WasmApi {
  Memory: new (desc: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory;
  Module: {
    new (bytes: Uint8Array): WasmModule;
    imports(module: WasmModule): WasmModuleDescriptor[];
    exports(module: WasmModule): { name: string; kind: string }[];
  };
  Instance: new (module: WasmModule, imports: WasmImports) => WasmInstance;
  compile(bytes: Uint8Array): Promise<WasmModule>;
  instantiate(module: WasmModule, imports: WasmImports): Promise<WasmInstance>;
  RuntimeError: new (...args: unknown[]) => Error;
}

export const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
