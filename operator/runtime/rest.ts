/**
 * The one door to the API server: authenticated HTTPS requests and watch streams, with API
 * failures turned into typed errors. Credentials and the CA come from a `KubeConfig`, so the
 * operator trusts only the cluster's CA and never turns verification off.
 */
import https from "node:https";
import type { KubeConfig } from "@kubernetes/client-node";

/** What the runtime needs to know about a kind to build its URLs (no discovery round trip). */
export interface ResourceType {
  /** `v1` for the core group, otherwise `group/version`. */
  readonly apiVersion: string;
  readonly kind: string;
  /** The lower-case plural used in URLs, e.g. `configmaps`. */
  readonly plural: string;
  readonly namespaced: boolean;
}

export const ConfigMaps: ResourceType = {
  apiVersion: "v1",
  kind: "ConfigMap",
  plural: "configmaps",
  namespaced: true,
};
export const Secrets: ResourceType = {
  apiVersion: "v1",
  kind: "Secret",
  plural: "secrets",
  namespaced: true,
};
export const Namespaces: ResourceType = {
  apiVersion: "v1",
  kind: "Namespace",
  plural: "namespaces",
  namespaced: false,
};
export const Leases: ResourceType = {
  apiVersion: "coordination.k8s.io/v1",
  kind: "Lease",
  plural: "leases",
  namespaced: true,
};

/** The parts of an object every kind shares; the rest is the kind's own business. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  [field: string]: unknown;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ObjectMeta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  deletionTimestamp?: string;
  [field: string]: unknown;
}

/** A failed API call: the HTTP status and the `Status.reason` the server gave. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly body: unknown,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** 404: the object (or its namespace) does not exist. */
export class NotFoundError extends ApiError {
  override name = "NotFoundError";
}

/**
 * 409: another writer got there first — a stale resourceVersion on update, or, under
 * server-side apply, fields owned by another field manager (`fields` lists them).
 */
export class ConflictError extends ApiError {
  override name = "ConflictError";
  constructor(
    status: number,
    reason: string,
    message: string,
    body: unknown,
    readonly fields: readonly string[],
  ) {
    super(status, reason, message, body);
  }
}

/** 410: the resourceVersion a watch asked for is older than the server still remembers. */
export class GoneError extends ApiError {
  override name = "GoneError";
}

interface StatusBody {
  kind?: string;
  reason?: string;
  message?: string;
  code?: number;
  details?: { causes?: { field?: string; message?: string }[] };
}

/** Turns a failed response (or a watch ERROR event's Status) into the matching typed error. */
export function apiErrorFrom(status: number, body: unknown, what: string): ApiError {
  const s = (typeof body === "object" && body !== null ? body : {}) as StatusBody;
  const reason = s.reason ?? "Unknown";
  const message = `${what}: ${status} ${reason}: ${s.message ?? String(body)}`;
  if (status === 404) return new NotFoundError(status, reason, message, body);
  if (status === 410) return new GoneError(status, reason, message, body);
  if (status === 409) {
    const fields = (s.details?.causes ?? []).map((c) => c.field ?? c.message ?? "").filter(Boolean);
    return new ConflictError(status, reason, message, body, fields);
  }
  return new ApiError(status, reason, message, body);
}

/** URL path of a collection or of one object (and optionally its subresource). */
export function resourcePath(
  type: ResourceType,
  namespace?: string,
  name?: string,
  subresource?: string,
): string {
  const base = type.apiVersion.includes("/")
    ? `/apis/${type.apiVersion}`
    : `/api/${type.apiVersion}`;
  const ns = type.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : "";
  const obj = name ? `/${encodeURIComponent(name)}` : "";
  const sub = name && subresource ? `/${subresource}` : "";
  return `${base}${ns}/${type.plural}${obj}${sub}`;
}

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  /** Defaults to `application/json` when there is a body. */
  contentType?: string;
}

/** Authenticated requests to one API server, configured by a KubeConfig. */
export class KubeRest {
  constructor(private readonly kubeConfig: KubeConfig) {}

  private server(): URL {
    const cluster = this.kubeConfig.getCurrentCluster();
    if (!cluster) throw new Error("kubeconfig has no current cluster: set current-context");
    return new URL(cluster.server);
  }

  private async open(
    method: string,
    path: string,
    opts: RequestOptions,
    signal?: AbortSignal,
  ): Promise<{ req: import("node:http").ClientRequest; payload?: string }> {
    const url = new URL(path, this.server());
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (v !== undefined) url.searchParams.set(k, String(v));
    }
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const options: https.RequestOptions = {
      method,
      headers: {
        accept: "application/json",
        ...(payload === undefined
          ? {}
          : {
              "content-type": opts.contentType ?? "application/json",
              "content-length": Buffer.byteLength(payload),
            }),
      },
      ...(signal ? { signal } : {}),
    };
    await this.kubeConfig.applyToHTTPSOptions(options);
    const req = https.request(url, options);
    return payload === undefined ? { req } : { req, payload };
  }

  /** One request; resolves with the parsed JSON body, rejects with an ApiError for >= 400. */
  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const { req, payload } = await this.open(method, path, opts);
    return new Promise<T>((resolve, reject) => {
      req.on("response", (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          let body: unknown = text;
          try {
            body = JSON.parse(text);
          } catch {
            // Non-JSON bodies (rare: proxies, plain-text health) are kept as text.
          }
          const status = res.statusCode ?? 0;
          if (status >= 400) reject(apiErrorFrom(status, body, `${method} ${path}`));
          else resolve(body as T);
        });
      });
      req.on("error", reject);
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }

  /**
   * A streaming GET whose body is newline-delimited JSON (a watch). Resolves when the server
   * ends the stream or `signal` aborts it; rejects with an ApiError when it refuses to start.
   */
  async stream(
    path: string,
    query: RequestOptions["query"],
    onEvent: (event: unknown) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const { req } = await this.open("GET", path, { query }, signal);
    return new Promise<void>((resolve, reject) => {
      req.on("response", (res) => {
        const status = res.statusCode ?? 0;
        let buffered = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          buffered += chunk;
          if (status >= 400) return;
          let nl = buffered.indexOf("\n");
          while (nl >= 0) {
            const line = buffered.slice(0, nl).trim();
            buffered = buffered.slice(nl + 1);
            if (line) {
              try {
                onEvent(JSON.parse(line));
              } catch (err) {
                // A garbled stream cannot be trusted past this point: end it, let the caller resume.
                req.destroy(err as Error);
                reject(err);
                return;
              }
            }
            nl = buffered.indexOf("\n");
          }
        });
        res.on("end", () => {
          if (status >= 400) {
            let body: unknown = buffered;
            try {
              body = JSON.parse(buffered);
            } catch {
              // keep the text
            }
            reject(apiErrorFrom(status, body, `watch ${path}`));
          } else resolve();
        });
        res.on("error", (err) => (signal.aborted ? resolve() : reject(err)));
        res.on("aborted", () => resolve());
        // A connection cut without an error still ends the watch; the informer resumes it.
        res.on("close", () => (status >= 400 ? undefined : resolve()));
      });
      req.on("error", (err) => (signal.aborted ? resolve() : reject(err)));
      req.end();
    });
  }
}
