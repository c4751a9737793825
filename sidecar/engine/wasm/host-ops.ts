/**
 * The host ABI as a table of named operations, shared by both WASM engines: a guest names an
 * operation (`"fs.read"`, the WIT interface and function, kebab-cased) and passes one argument
 * object; this module validates that object and calls the matching `HostApi` method.
 *
 * Validation happens here, at the boundary, because the arguments come from guest code: a
 * guest that passes a number where a path belongs gets HostError("invalid") and never reaches
 * the enforced host with a value its checks were not written for.
 */
import { z } from "zod";
import { type HostApi, HostError } from "../../abi/host.js";

const bytes = z.instanceof(Uint8Array);
const str = z.string();
const timeout = z.number().int().nonnegative();
const stringMap = z.record(z.string(), z.string());
const httpRequest = z.object({
  method: str,
  url: str,
  headers: stringMap.optional(),
  body: bytes.optional(),
  timeoutMs: timeout.optional(),
});

/** Each op: the schema of its argument object and the call it makes on the host. */
const OPS = {
  "sys.log": op(
    z.object({
      level: z.enum(["debug", "info", "warn", "error"]),
      message: str,
      fields: z.record(z.string(), z.unknown()).optional(),
    }),
    (h, a) => h.log(a.level, a.message, a.fields),
  ),
  "sys.clock-now": op(z.object({}), (h) => h.clockNow()),
  "sys.config": op(z.object({ key: str }), (h, a) => h.config(a.key) ?? null),
  "sys.secret": op(z.object({ name: str }), (h, a) => h.secret(a.name)),
  "sys.sleep": op(z.object({ ms: timeout }), (h, a) => h.sleep(a.ms)),
  "sys.sha256": op(z.object({ text: str }), (h, a) => h.sha256(a.text)),
  "sys.stream-delta": op(
    z.strictObject({
      text: str.optional(),
      toolUse: z.strictObject({ id: str.min(1), name: str.optional(), inputJson: str }).optional(),
      done: z.boolean().optional(),
    }),
    (h, a) => h.streamDelta(a),
  ),
  "ipc.publish": op(z.object({ subject: str, data: bytes }), (h, a) =>
    h.ipcPublish(a.subject, a.data),
  ),
  "ipc.request": op(z.object({ subject: str, data: bytes, timeoutMs: timeout }), (h, a) =>
    h.ipcRequest(a.subject, a.data, a.timeoutMs),
  ),
  "ipc.subscribe": op(z.object({ pattern: str }), (h, a) => h.ipcSubscribe(a.pattern)),
  "ipc.recv": op(z.object({ handle: z.number().int(), timeoutMs: timeout }), (h, a) =>
    h.ipcRecv(a.handle, a.timeoutMs),
  ),
  "ipc.unsubscribe": op(z.object({ handle: z.number().int() }), (h, a) =>
    h.ipcUnsubscribe(a.handle),
  ),
  "ipc.call": op(
    z.object({ subject: str, kind: str, body: z.unknown(), timeoutMs: timeout }),
    (h, a) => h.ipcCall(a.subject, a.kind, a.body, a.timeoutMs),
  ),
  "sys.session-emit": op(z.object({ event: z.unknown() }), (h, a) => h.sessionEmit(a.event)),
  "kv.get": op(z.object({ bucket: str, key: str }), (h, a) => h.kvGet(a.bucket, a.key)),
  "kv.set": op(z.object({ bucket: str, key: str, value: bytes }), (h, a) =>
    h.kvSet(a.bucket, a.key, a.value),
  ),
  "kv.delete": op(z.object({ bucket: str, key: str }), (h, a) => h.kvDelete(a.bucket, a.key)),
  "kv.list": op(z.object({ bucket: str, prefix: str }), (h, a) => h.kvList(a.bucket, a.prefix)),
  "fs.read": op(z.object({ path: str }), (h, a) => h.fsRead(a.path)),
  "fs.write": op(z.object({ path: str, data: bytes }), (h, a) => h.fsWrite(a.path, a.data)),
  "fs.list": op(z.object({ path: str }), (h, a) => h.fsList(a.path)),
  "fs.stat": op(z.object({ path: str }), (h, a) => h.fsStat(a.path)),
  "net.http-request": op(httpRequest, (h, a) => h.httpRequest(a)),
  "net.http-open": op(httpRequest, (h, a) => h.httpOpen(a)),
  "net.http-read": op(z.object({ handle: z.number().int(), timeoutMs: timeout }), (h, a) =>
    h.httpRead(a.handle, a.timeoutMs),
  ),
  "net.http-close": op(z.object({ handle: z.number().int() }), (h, a) => h.httpClose(a.handle)),
  "process.spawn": op(
    z.object({
      command: str,
      args: z.array(str),
      stdin: bytes.optional(),
      timeoutMs: timeout.optional(),
    }),
    (h, a) => h.processSpawn(a),
  ),
  "approval.request": op(
    z.object({
      kind: z.enum(["tool", "fs_read", "fs_write", "net", "process", "other"]),
      target: str,
      args: z.unknown().optional(),
      reason: str,
    }),
    (h, a) => h.approvalRequest(a),
  ),
} as const;

export type HostOpName = keyof typeof OPS;

/**
 * Which op serves each HostApi method. Typed as a record over `keyof HostApi` so a method added
 * to the ABI without an op here fails the typecheck.
 */
export const HOST_OP_OF_METHOD: Readonly<Record<keyof HostApi, HostOpName>> = {
  log: "sys.log",
  clockNow: "sys.clock-now",
  config: "sys.config",
  secret: "sys.secret",
  sleep: "sys.sleep",
  sha256: "sys.sha256",
  streamDelta: "sys.stream-delta",
  ipcPublish: "ipc.publish",
  ipcRequest: "ipc.request",
  ipcSubscribe: "ipc.subscribe",
  ipcRecv: "ipc.recv",
  ipcUnsubscribe: "ipc.unsubscribe",
  ipcCall: "ipc.call",
  sessionEmit: "sys.session-emit",
  kvGet: "kv.get",
  kvSet: "kv.set",
  kvDelete: "kv.delete",
  kvList: "kv.list",
  fsRead: "fs.read",
  fsWrite: "fs.write",
  fsList: "fs.list",
  fsStat: "fs.stat",
  httpRequest: "net.http-request",
  httpOpen: "net.http-open",
  httpRead: "net.http-read",
  httpClose: "net.http-close",
  processSpawn: "process.spawn",
  approvalRequest: "approval.request",
};

/** Ops whose HostApi method is synchronous; the QuickJS guest sees them as plain calls. */
export const SYNC_HOST_OPS: ReadonlySet<string> = new Set([
  "sys.log",
  "sys.clock-now",
  "sys.config",
  "sys.sha256",
]);

export const HOST_OP_NAMES: readonly HostOpName[] = Object.keys(OPS) as HostOpName[];

interface OpEntry {
  run(host: HostApi, args: unknown): unknown;
}

function op<S extends z.ZodType>(schema: S, call: (h: HostApi, a: z.infer<S>) => unknown): OpEntry {
  return {
    run(host, args) {
      const parsed = schema.safeParse(args);
      if (!parsed.success) {
        const issue = parsed.error.issues[0];
        const where = issue && issue.path.length > 0 ? `${issue.path.join(".")}: ` : "";
        throw new HostError("invalid", `${where}${issue?.message ?? "invalid arguments"}`);
      }
      return call(host, parsed.data);
    },
  };
}

/**
 * Runs one guest-requested operation. Unknown ops and bad arguments fail with
 * HostError("invalid"); anything the host throws that is not a HostError becomes
 * HostError("io") so no host-internal error text or stack reaches the guest.
 */
export async function callHostOp(host: HostApi, name: string, args: unknown): Promise<unknown> {
  try {
    return await runOp(host, name, args);
  } catch (err) {
    throw asHostError(name, err);
  }
}

/** The synchronous ops (sys.log, sys.clock-now, sys.config), without a promise in between. */
export function callSyncHostOp(host: HostApi, name: string, args: unknown): unknown {
  if (!SYNC_HOST_OPS.has(name)) {
    throw new HostError("invalid", `${name} is not a synchronous host operation`);
  }
  try {
    return runOp(host, name, args);
  } catch (err) {
    throw asHostError(name, err);
  }
}

function runOp(host: HostApi, name: string, args: unknown): unknown {
  if (!Object.hasOwn(OPS, name)) {
    throw new HostError("invalid", `unknown host operation "${name}"`);
  }
  return OPS[name as HostOpName].run(host, args);
}

function asHostError(name: string, err: unknown): HostError {
  if (err instanceof HostError) return err;
  return new HostError("io", `${name} failed in the host`);
}
