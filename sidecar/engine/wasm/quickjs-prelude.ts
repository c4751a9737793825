/**
 * Guest-side JavaScript evaluated in every QuickJS context before the capsule's bundle. It
 * turns the two raw host functions into the `astrid` global and returns the dispatcher the
 * engine calls handlers through.
 *
 * Bytes cross the boundary without base64: the guest replaces each Uint8Array in the
 * arguments with `{"$buf": i}` and passes the i-th ArrayBuffer as an extra argument; results
 * come back as `[json, ...arrayBuffers]` and are revived the same way.
 *
 * The prelude captures JSON, Promise and friends before the bundle runs so a capsule that
 * replaces them breaks only itself; the engine never trusts what the dispatcher returns
 * (type, size and JSON are checked host-side).
 */
export const RAW_HOST_GLOBAL = "__astridRawHost";

export const QUICKJS_PRELUDE = `(() => {
  "use strict";
  const raw = globalThis.${RAW_HOST_GLOBAL};
  delete globalThis.${RAW_HOST_GLOBAL};
  const parse = JSON.parse;
  const stringify = JSON.stringify;
  const freeze = Object.freeze;
  const isBufRef = (v) =>
    v !== null && typeof v === "object" && !Array.isArray(v) &&
    Object.keys(v).length === 1 && Number.isInteger(v.$buf);
  const pack = (args) => {
    const bufs = [];
    const json = stringify(args === undefined ? {} : args, (_k, v) => {
      if (v instanceof Uint8Array) {
        bufs.push(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
        return { $buf: bufs.length - 1 };
      }
      if (v instanceof ArrayBuffer) {
        bufs.push(v.slice(0));
        return { $buf: bufs.length - 1 };
      }
      return v;
    });
    return [json, bufs];
  };
  const unpack = (json, bufs) =>
    json === undefined ? undefined : parse(json, (_k, v) => (isBufRef(v) ? new Uint8Array(bufs[v.$buf]) : v));
  const call = (op, args) => {
    const [json, bufs] = pack(args);
    return raw.call(op, json, ...bufs).then((r) => unpack(r[0], r.slice(1)));
  };
  const callSync = (op, args) => unpack(raw.callSync(op, pack(args)[0]), []);
  // QuickJS has no TextEncoder/TextDecoder; capsules speaking HTTP need UTF-8 both ways.
  // Each byte that starts no valid sequence decodes to U+FFFD (never a throw).
  const utf8Encode = (str) => {
    const out = [];
    for (const ch of String(str)) {
      let c = ch.codePointAt(0);
      if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd;
      if (c < 0x80) out.push(c);
      else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
      else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
      else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    }
    return new Uint8Array(out);
  };
  const utf8Decode = (bytes) => {
    const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    const parts = [];
    let codes = [];
    let i = 0;
    const cont = (k) => k < b.length && (b[k] & 0xc0) === 0x80;
    while (i < b.length) {
      const x = b[i];
      let c = 0xfffd;
      let n = 1;
      if (x < 0x80) c = x;
      else if (x >= 0xc2 && x < 0xe0 && cont(i + 1)) { c = ((x & 31) << 6) | (b[i + 1] & 63); n = 2; }
      else if (x >= 0xe0 && x < 0xf0 && cont(i + 1) && cont(i + 2)) {
        const v = ((x & 15) << 12) | ((b[i + 1] & 63) << 6) | (b[i + 2] & 63);
        if (v >= 0x800 && (v < 0xd800 || v > 0xdfff)) { c = v; n = 3; }
      } else if (x >= 0xf0 && x < 0xf5 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
        const v = ((x & 7) << 18) | ((b[i + 1] & 63) << 12) | ((b[i + 2] & 63) << 6) | (b[i + 3] & 63);
        if (v >= 0x10000 && v <= 0x10ffff) { c = v; n = 4; }
      }
      codes.push(c);
      if (codes.length >= 8192) { parts.push(String.fromCodePoint(...codes)); codes = []; }
      i += n;
    }
    parts.push(String.fromCodePoint(...codes));
    return parts.join("");
  };
  const astrid = {
    sys: {
      log: (level, message, fields) => callSync("sys.log", { level, message, fields }),
      clockNow: () => callSync("sys.clock-now", {}),
      config: (key) => callSync("sys.config", { key }),
      secret: (name) => call("sys.secret", { name }),
      sleep: (ms) => call("sys.sleep", { ms }),
      sha256: (text) => callSync("sys.sha256", { text }),
      streamDelta: (delta) => call("sys.stream-delta", delta),
    },
    ipc: {
      publish: (subject, data) => call("ipc.publish", { subject, data }),
      request: (subject, data, timeoutMs) => call("ipc.request", { subject, data, timeoutMs }),
      subscribe: (pattern) => call("ipc.subscribe", { pattern }),
      recv: (handle, timeoutMs) => call("ipc.recv", { handle, timeoutMs }),
      unsubscribe: (handle) => call("ipc.unsubscribe", { handle }),
      call: (subject, kind, body, timeoutMs) =>
        call("ipc.call", { subject, kind, body, timeoutMs }).then((r) => r.body),
    },
    session: { emit: (event) => call("sys.session-emit", { event }) },
    kv: {
      get: (bucket, key) => call("kv.get", { bucket, key }),
      set: (bucket, key, value) => call("kv.set", { bucket, key, value }),
      delete: (bucket, key) => call("kv.delete", { bucket, key }),
      list: (bucket, prefix) => call("kv.list", { bucket, prefix }),
    },
    fs: {
      read: (path) => call("fs.read", { path }),
      write: (path, data) => call("fs.write", { path, data }),
      list: (path) => call("fs.list", { path }),
      stat: (path) => call("fs.stat", { path }),
    },
    net: {
      httpRequest: (req) => call("net.http-request", req),
      httpOpen: (req) => call("net.http-open", req),
      httpRead: (handle, timeoutMs) => call("net.http-read", { handle, timeoutMs }),
      httpClose: (handle) => call("net.http-close", { handle }),
    },
    process: { spawn: (req) => call("process.spawn", req) },
    approval: { request: (ask) => call("approval.request", ask) },
    utf8: { encode: utf8Encode, decode: utf8Decode },
    call,
  };
  astrid.log = astrid.sys.log;
  astrid.streamDelta = astrid.sys.streamDelta;
  astrid.sleep = astrid.sys.sleep;
  // No ambient clock (layer 1): QuickJS would read the host's time through emscripten, so Date
  // is replaced by one whose "now" is the sys.clock-now host call, like every other authority.
  const NativeDate = Date;
  const hostNow = () => callSync("sys.clock-now", {});
  function HostDate(...a) {
    if (!new.target) return new NativeDate(hostNow()).toString();
    return a.length === 0 ? new NativeDate(hostNow()) : Reflect.construct(NativeDate, a, new.target);
  }
  HostDate.prototype = NativeDate.prototype;
  HostDate.now = hostNow;
  HostDate.parse = NativeDate.parse;
  HostDate.UTC = NativeDate.UTC;
  Object.defineProperty(NativeDate.prototype, "constructor", { value: HostDate });
  globalThis.Date = HostDate;
  for (const k of Object.keys(astrid)) if (typeof astrid[k] === "object") freeze(astrid[k]);
  Object.defineProperty(globalThis, "astrid", { value: freeze(astrid), enumerable: false });
  return async (handler, inputJson) => {
    const out = await handler(parse(inputJson));
    return out === undefined ? "null" : stringify(out);
  };
})()`;
