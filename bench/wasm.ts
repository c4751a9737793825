/**
 * WASM sandbox (layer 1): cost of a call into a guest and of starting one, for both engines,
 * each beside its floor measured in the same run — a plain JS function for a warm call, and a
 * direct `WebAssembly.instantiate` + call on the main thread (no worker, no checks) for the
 * core engine.
 */
import * as fs from "node:fs";
import type { CallContext } from "../sidecar/abi/host.js";
import { CoreWasmEngine } from "../sidecar/engine/wasm/core-engine.js";
import { QuickJsEngine } from "../sidecar/engine/wasm/quickjs-engine.js";
import { Wasm } from "../sidecar/engine/wasm/webassembly.js";
import { RecordingHost } from "../test/fixtures/wasm/recording-host.js";
import { compileWat, coreGuestWat } from "../test/fixtures/wasm/wat.js";
import { runSuite } from "./lib.js";

const input = { tool: "read_file", args: { path: "src/main.ts", limit: 100 } };

function callCtx(): CallContext {
  return {
    callId: "b",
    session: "s",
    principal: "p",
    capsule: "bench",
    token: undefined,
    deadline: Date.now() + 60_000,
  };
}

export async function main(): Promise<void> {
  const jsSource = fs.readFileSync(
    new URL("../test/fixtures/wasm/quickjs-guest.js", import.meta.url),
    "utf8",
  );
  const wasm = await compileWat(coreGuestWat());
  const host = new RecordingHost({ "/a.txt": "hello" });
  const qjsOpts = { source: jsSource, memoryMb: 32, stackKb: 256, timeoutMs: 5000, name: "b" };
  const coreOpts = { wasm, memoryMb: 4, timeoutMs: 5000, name: "b" };
  const qjs = await QuickJsEngine.create(qjsOpts);
  const core = await CoreWasmEngine.create(coreOpts);

  // Direct main-thread instance: the floor under the core engine's worker and checks.
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const direct = async () => {
    const mod = await Wasm.compile(wasm);
    const inst = await Wasm.instantiate(mod, { astrid: { call: () => 0n } });
    return inst.exports as {
      memory: { buffer: ArrayBuffer };
      alloc: (n: number) => number;
      echo: (p: number, l: number) => bigint;
      dealloc: (p: number, l: number) => void;
    };
  };
  const directCall = (g: Awaited<ReturnType<typeof direct>>) => {
    const bytes = enc.encode(JSON.stringify(input));
    const p = g.alloc(bytes.length);
    new Uint8Array(g.memory.buffer, p, bytes.length).set(bytes);
    const r = g.echo(p, bytes.length);
    const out = new Uint8Array(g.memory.buffer, Number(r >> 32n), Number(r & 0xffffffffn));
    const value = JSON.parse(dec.decode(out));
    g.dealloc(p, bytes.length);
    return value;
  };
  const warmDirect = await direct();
  const echoFn = (x: unknown) => x;

  // Sanity: every case does the work it is named after.
  const sane = [
    JSON.stringify(await qjs.invoke("echo", input, callCtx(), host)) === JSON.stringify(input),
    JSON.stringify(await core.invoke("echo", input, callCtx(), host)) === JSON.stringify(input),
    JSON.stringify(directCall(warmDirect)) === JSON.stringify(input),
    (await core.invoke("fs_read", { path: "/a.txt" }, callCtx(), host)) !== undefined,
  ];
  if (sane.includes(false)) throw new Error(`wasm bench sanity failed: ${JSON.stringify(sane)}`);

  try {
    await runSuite("WASM sandbox (layer 1): warm calls", [
      { name: "plain JS function echo (baseline)", fn: () => echoFn(input) },
      { name: "direct WASM echo, main thread (baseline)", fn: () => directCall(warmDirect) },
      {
        name: "QuickJS invoke echo",
        baseline: "plain JS function echo (baseline)",
        goal: "p50 < 50 µs",
        fn: () => qjs.invoke("echo", input, callCtx(), host),
      },
      {
        name: "QuickJS invoke with 1 host call (fs.read)",
        baseline: "QuickJS invoke echo",
        fn: () => qjs.invoke("readFile", { path: "/a.txt" }, callCtx(), host),
      },
      {
        name: "core-WASM invoke echo (worker)",
        baseline: "direct WASM echo, main thread (baseline)",
        fn: () => core.invoke("echo", input, callCtx(), host),
      },
      {
        name: "core-WASM invoke with 1 host call (fs.read)",
        baseline: "core-WASM invoke echo (worker)",
        fn: () => core.invoke("fs_read", { path: "/a.txt" }, callCtx(), host),
      },
    ]);
    await runSuite(
      "WASM sandbox (layer 1): cold start (create + first call + stop)",
      [
        {
          name: "WebAssembly.instantiate + call, main thread (baseline)",
          fn: async () => directCall(await direct()),
        },
        {
          name: "QuickJS cold start",
          baseline: "WebAssembly.instantiate + call, main thread (baseline)",
          goal: "p50 < 50 ms",
          fn: async () => {
            const e = await QuickJsEngine.create(qjsOpts);
            await e.invoke("echo", input, callCtx(), host);
            await e.stop();
          },
        },
        {
          name: "core-WASM cold start (new worker)",
          baseline: "WebAssembly.instantiate + call, main thread (baseline)",
          fn: async () => {
            const e = await CoreWasmEngine.create(coreOpts);
            await e.invoke("echo", input, callCtx(), host);
            await e.stop();
          },
        },
      ],
      { time: 1500, warmupTime: 300 },
    );
  } finally {
    await qjs.stop();
    await core.stop();
  }
}
