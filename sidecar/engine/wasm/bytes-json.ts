/**
 * JSON with byte arrays: each Uint8Array (Buffer included — its own toJSON would otherwise
 * turn it into `{type, data}` first) is replaced by whatever `encode` makes of it.
 */
export function stringifyWithBytes(value: unknown, encode: (bytes: Uint8Array) => unknown): string {
  return JSON.stringify(value ?? null, function (this: Record<string, unknown>, key, v) {
    const original = this[key];
    return original instanceof Uint8Array ? encode(original) : v;
  });
}

/** The core-WASM ABI's spelling of bytes inside JSON: `{"$b64": "<base64>"}`. */
export function toB64Ref(bytes: Uint8Array): { $b64: string } {
  return { $b64: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64") };
}

/** JSON.parse reviver turning `{"$b64": "..."}` (and nothing else) back into a Uint8Array. */
export function reviveB64(_key: string, v: unknown): unknown {
  if (v !== null && typeof v === "object" && !Array.isArray(v)) {
    const keys = Object.keys(v);
    const b64 = (v as { $b64?: unknown }).$b64;
    if (keys.length === 1 && typeof b64 === "string")
      return new Uint8Array(Buffer.from(b64, "base64"));
  }
  return v;
}
