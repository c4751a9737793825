/**
 * Reads come from the informer cache (cheap, and what level-triggered reconcilers should see);
 * writes go to the API server. Every write uses ONE field manager, `astrid-operator`, so
 * server-side apply sees a single owner for everything the operator sets — two writers
 * applying the same object under different managers fight over its fields (ToolHive #5023).
 */
import type { Informer } from "./cache.js";
import {
  type KubeObject,
  type KubeRest,
  NotFoundError,
  type ResourceType,
  resourcePath,
} from "./rest.js";

/** The operator's field manager for server-side apply. */
export const FIELD_MANAGER = "astrid-operator";

export interface ApplyOptions {
  /**
   * Take fields another manager owns instead of failing with a ConflictError. Only where the
   * operator means to own the field (API conventions).
   */
  force?: boolean;
}

export interface DeleteOptions {
  propagationPolicy?: "Foreground" | "Background" | "Orphan";
}

export class Client {
  private readonly informers = new Map<string, Informer>();
  readonly fieldManager: string;

  constructor(
    private readonly rest: KubeRest,
    opts: { fieldManager?: string } = {},
  ) {
    this.fieldManager = opts.fieldManager ?? FIELD_MANAGER;
  }

  /** Makes `get`/`list` for this kind read from `informer`. */
  registerInformer(informer: Informer): void {
    this.informers.set(typeId(informer.type), informer);
  }

  private informerFor(type: ResourceType): Informer {
    const inf = this.informers.get(typeId(type));
    if (!inf) {
      throw new Error(
        `no informer for ${type.kind} (${type.apiVersion}): reads come from the cache; ask the manager for one first`,
      );
    }
    return inf;
  }

  /** The cached object, or undefined when the cache does not hold it. */
  get<T extends KubeObject = KubeObject>(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
  ): T | undefined {
    return this.informerFor(type).get(namespace, name) as T | undefined;
  }

  list<T extends KubeObject = KubeObject>(
    type: ResourceType,
    namespace?: string,
    selector?: Record<string, string>,
  ): T[] {
    return this.informerFor(type).list(namespace, selector) as T[];
  }

  /** Cached objects of `type` owned by the object with `uid`. */
  listOwnedBy<T extends KubeObject = KubeObject>(type: ResourceType, uid: string): T[] {
    return this.informerFor(type).listOwnedBy(uid) as T[];
  }

  /**
   * Server-side apply: sends the fields the operator wants and becomes their owner. The object
   * must carry apiVersion, kind and metadata.name (and namespace for namespaced kinds).
   * Rejects with ConflictError when another manager owns a field and `force` is not set.
   */
  apply<T extends KubeObject>(type: ResourceType, obj: T, opts: ApplyOptions = {}): Promise<T> {
    return this.patchApply(type, obj, undefined, opts);
  }

  /** Server-side apply to the status subresource (only `status` is taken from `obj`). */
  applyStatus<T extends KubeObject>(
    type: ResourceType,
    obj: T,
    opts: ApplyOptions = {},
  ): Promise<T> {
    return this.patchApply(type, obj, "status", opts);
  }

  private async patchApply<T extends KubeObject>(
    type: ResourceType,
    obj: T,
    subresource: string | undefined,
    opts: ApplyOptions,
  ): Promise<T> {
    const name = obj.metadata?.name;
    if (!name) throw new Error(`apply ${type.kind}: metadata.name is required`);
    const ns = obj.metadata?.namespace;
    if (type.namespaced && !ns)
      throw new Error(`apply ${type.kind} ${name}: metadata.namespace is required`);
    if (obj.apiVersion !== type.apiVersion || obj.kind !== type.kind) {
      throw new Error(
        `apply ${type.kind} ${name}: expected apiVersion ${type.apiVersion} and kind ${type.kind}, got ${obj.apiVersion} ${obj.kind}`,
      );
    }
    return this.rest.request<T>("PATCH", resourcePath(type, ns, name, subresource), {
      // JSON is YAML, so the apply content type takes the object as JSON.
      contentType: "application/apply-patch+yaml",
      body: obj,
      query: { fieldManager: this.fieldManager, force: opts.force ? true : undefined },
    });
  }

  /** Deletes the object; resolves false when it was already gone. */
  async delete(
    type: ResourceType,
    namespace: string | undefined,
    name: string,
    opts: DeleteOptions = {},
  ): Promise<boolean> {
    try {
      await this.rest.request("DELETE", resourcePath(type, namespace, name), {
        body: {
          kind: "DeleteOptions",
          apiVersion: "v1",
          propagationPolicy: opts.propagationPolicy,
        },
      });
      return true;
    } catch (err) {
      if (err instanceof NotFoundError) return false;
      throw err;
    }
  }
}

function typeId(type: ResourceType): string {
  return `${type.apiVersion}/${type.kind}`;
}

/**
 * True when every field of `desired` already has that value in `current` — i.e. applying
 * `desired` would change nothing. Reconcilers check this before writing so a restart or a
 * resync does not rewrite (and roll) unchanged children (ToolHive #4877).
 */
export function isSubset(desired: unknown, current: unknown): boolean {
  if (desired === current) return true;
  if (Array.isArray(desired)) {
    if (!Array.isArray(current) || current.length !== desired.length) return false;
    return desired.every((d, i) => isSubset(d, current[i]));
  }
  if (typeof desired === "object" && desired !== null) {
    if (typeof current !== "object" || current === null || Array.isArray(current)) return false;
    const cur = current as Record<string, unknown>;
    return Object.entries(desired as Record<string, unknown>).every(([k, v]) =>
      isSubset(v, cur[k]),
    );
  }
  return false;
}
