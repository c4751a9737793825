/**
 * An informer per kind: list, then watch from the list's resourceVersion, keeping a local
 * store that reconcilers read instead of the API server. A watch that ends is resumed from
 * the last resourceVersion seen; a 410 Gone (the server forgot that version) forces a fresh
 * list, diffed against the store so deletes missed meanwhile are still reported. A resync
 * period re-announces every object, so a reconciler that dropped something sees it again.
 */
import type { Logger } from "pino";
import { keyOf, objectKey } from "./keys.js";
import {
  ApiError,
  apiErrorFrom,
  type KubeObject,
  type KubeRest,
  type ResourceType,
  resourcePath,
} from "./rest.js";

export interface EventHandler<T extends KubeObject = KubeObject> {
  onAdd?(obj: T): void;
  onUpdate?(oldObj: T, newObj: T): void;
  onDelete?(obj: T): void;
}

export interface InformerOptions {
  /** Watch one namespace only; all namespaces when absent. */
  namespace?: string;
  /** Server-side label selector, e.g. `app=astrid`. */
  labelSelector?: string;
  /** Objects per list page; default 500. */
  pageSize?: number;
  /** Re-announce every cached object as an update this often; 0 (default) = never. */
  resyncMs?: number;
  log?: Logger;
}

interface KubeList {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: KubeObject[];
}

interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: KubeObject;
}

/** Waits `ms`, or less if `signal` aborts, so stop() never waits out a retry delay. */
const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    // The listener goes when the sleep ends either way: a long-lived signal must not collect
    // one listener per retry.
    const onAbort = () => {
      clearTimeout(t);
      resolve();
    };
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });

/** Default page size of lists: bounds the memory of one response on large clusters. */
const LIST_PAGE = 500;

export class Informer<T extends KubeObject = KubeObject> {
  /** namespace ("" for cluster-scoped) → name → object: the by-namespace index. */
  private readonly byNamespace = new Map<string, Map<string, T>>();
  /** owner UID → keys of the objects it owns: the by-owner index. */
  private readonly byOwner = new Map<string, Set<string>>();
  private readonly handlers: EventHandler<T>[] = [];
  private resourceVersion = "";
  private synced = false;
  private readonly syncWaiters: (() => void)[] = [];
  private running = false;
  private stopping = new AbortController();
  private watchAbort: AbortController | undefined;
  private resyncTimer: NodeJS.Timeout | undefined;
  private loop: Promise<void> | undefined;
  /** Forces the next loop pass to list again (410, or a test asking for it). */
  private needList = true;
  /** How many lists and watch connections this informer made (diagnostics, tests). */
  readonly stats = { lists: 0, watches: 0 };

  constructor(
    private readonly rest: KubeRest,
    readonly type: ResourceType,
    private readonly opts: InformerOptions = {},
  ) {}

  addEventHandler(handler: EventHandler<T>): void {
    this.handlers.push(handler);
    // A handler added after the first list still hears about everything already known.
    if (this.synced) for (const obj of this.list()) this.notify(() => handler.onAdd?.(obj));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.stopping = new AbortController();
    this.loop = this.run();
    if (this.opts.resyncMs) {
      this.resyncTimer = setInterval(() => this.resync(), this.opts.resyncMs);
      this.resyncTimer.unref();
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    this.stopping.abort();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.watchAbort?.abort();
    await this.loop;
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  /** Resolves once the first list has filled the store. */
  waitForSync(): Promise<void> {
    if (this.synced) return Promise.resolve();
    return new Promise((r) => this.syncWaiters.push(r));
  }

  get(namespace: string | undefined, name: string): T | undefined {
    return this.byNamespace.get(namespace ?? "")?.get(name);
  }

  /** Cached objects, optionally of one namespace and matching every label in `selector`. */
  list(namespace?: string, selector?: Record<string, string>): T[] {
    const pools =
      namespace === undefined
        ? [...this.byNamespace.values()]
        : [this.byNamespace.get(namespace) ?? new Map<string, T>()];
    const out: T[] = [];
    for (const pool of pools) {
      for (const obj of pool.values()) {
        if (selector && !matchesLabels(obj, selector)) continue;
        out.push(obj);
      }
    }
    return out;
  }

  /** Cached objects that name `uid` in their ownerReferences. */
  listOwnedBy(uid: string): T[] {
    const out: T[] = [];
    for (const key of this.byOwner.get(uid) ?? []) {
      const [ns, name] = key.includes("/") ? key.split("/", 2) : ["", key];
      const obj = this.get(ns, name ?? "");
      if (obj) out.push(obj);
    }
    return out;
  }

  /** The resourceVersion the next watch resumes from. */
  get lastResourceVersion(): string {
    return this.resourceVersion;
  }

  /**
   * Drops the current watch connection; the informer resumes from the last resourceVersion
   * seen, or — with `relist` — lists afresh first, exactly as it does after a 410 Gone.
   */
  restartWatch(opts: { relist?: boolean } = {}): void {
    if (opts.relist) this.needList = true;
    this.watchAbort?.abort();
  }

  private async run(): Promise<void> {
    let failures = 0;
    while (this.running) {
      try {
        if (this.needList || !this.resourceVersion) await this.relist();
        // stop() may have come while listing; a watch opened now would outlive it.
        if (!this.running) break;
        await this.watchOnce();
        failures = 0;
      } catch (err) {
        if (!this.running) break;
        if (err instanceof ApiError && err.status === 410) {
          this.opts.log?.info(
            { kind: this.type.kind },
            "watch resourceVersion expired; re-listing",
          );
          this.needList = true;
          continue;
        }
        failures++;
        const delay = Math.min(100 * 2 ** failures, 10_000);
        this.opts.log?.warn(
          { kind: this.type.kind, err: (err as Error).message, retryInMs: delay },
          "informer list/watch failed",
        );
        await sleep(delay, this.stopping.signal);
      }
    }
  }

  private collectionPath(): string {
    return resourcePath(this.type, this.opts.namespace);
  }

  private async relist(): Promise<void> {
    this.stats.lists++;
    // All pages first, then the store: a list that fails half-way must not report deletes.
    const items: KubeObject[] = [];
    let resourceVersion = "";
    let continueToken: string | undefined;
    do {
      const page = await this.rest.request<KubeList>("GET", this.collectionPath(), {
        query: {
          labelSelector: this.opts.labelSelector,
          limit: this.opts.pageSize ?? LIST_PAGE,
          continue: continueToken,
        },
      });
      items.push(...(page.items ?? []));
      resourceVersion = page.metadata?.resourceVersion ?? "";
      continueToken = page.metadata?.continue || undefined;
    } while (continueToken);
    const seen = new Set<string>();
    for (const item of items) {
      // List items carry no apiVersion/kind; handlers mapping owners need them.
      const obj = { apiVersion: this.type.apiVersion, kind: this.type.kind, ...item } as T;
      seen.add(objectKey(obj));
      this.upsert(obj);
    }
    for (const obj of this.list()) {
      if (!seen.has(objectKey(obj))) this.remove(obj);
    }
    this.resourceVersion = resourceVersion;
    this.needList = false;
    if (!this.synced) {
      this.synced = true;
      for (const w of this.syncWaiters.splice(0)) w();
    }
  }

  private async watchOnce(): Promise<void> {
    const abort = new AbortController();
    this.watchAbort = abort;
    this.stats.watches++;
    let gone: ApiError | undefined;
    await this.rest.stream(
      this.collectionPath(),
      {
        watch: 1,
        resourceVersion: this.resourceVersion,
        allowWatchBookmarks: true,
        labelSelector: this.opts.labelSelector,
        // The server ends the watch after this; the loop resumes it, which also bounds how
        // long a silently dead connection can go unnoticed.
        timeoutSeconds: 300,
      },
      (raw) => {
        const ev = raw as WatchEvent;
        if (ev.type === "ERROR") {
          const status = ev.object as { code?: number };
          gone = apiErrorFrom(status.code ?? 500, ev.object, `watch ${this.collectionPath()}`);
          abort.abort();
          return;
        }
        const obj = ev.object as T;
        const rv = obj.metadata?.resourceVersion;
        if (ev.type === "ADDED" || ev.type === "MODIFIED") this.upsert(obj);
        else if (ev.type === "DELETED") this.remove(obj);
        if (rv) this.resourceVersion = rv;
      },
      abort.signal,
    );
    if (gone) throw gone;
  }

  private upsert(obj: T): void {
    // managedFields are the API server's bookkeeping of who set what; nothing here reads them,
    // and they are often the biggest part of an object (client-go's TransformStripManagedFields).
    if (obj.metadata?.managedFields) delete obj.metadata.managedFields;
    const ns = obj.metadata?.namespace ?? "";
    const name = obj.metadata?.name ?? "";
    let pool = this.byNamespace.get(ns);
    if (!pool) {
      pool = new Map();
      this.byNamespace.set(ns, pool);
    }
    const old = pool.get(name);
    if (old && old.metadata?.resourceVersion === obj.metadata?.resourceVersion) return;
    pool.set(name, obj);
    if (old) this.unindexOwners(old);
    this.indexOwners(obj);
    for (const h of this.handlers) {
      this.notify(() => (old ? h.onUpdate?.(old, obj) : h.onAdd?.(obj)));
    }
  }

  private remove(obj: T): void {
    const ns = obj.metadata?.namespace ?? "";
    const pool = this.byNamespace.get(ns);
    const name = obj.metadata?.name ?? "";
    const old = pool?.get(name);
    if (!pool || !old) return;
    pool.delete(name);
    if (pool.size === 0) this.byNamespace.delete(ns);
    this.unindexOwners(old);
    for (const h of this.handlers) this.notify(() => h.onDelete?.(obj));
  }

  private indexOwners(obj: T): void {
    for (const ref of obj.metadata?.ownerReferences ?? []) {
      let keys = this.byOwner.get(ref.uid);
      if (!keys) {
        keys = new Set();
        this.byOwner.set(ref.uid, keys);
      }
      keys.add(keyOf(obj.metadata?.namespace, obj.metadata?.name ?? ""));
    }
  }

  private unindexOwners(obj: T): void {
    const key = keyOf(obj.metadata?.namespace, obj.metadata?.name ?? "");
    for (const ref of obj.metadata?.ownerReferences ?? []) {
      const keys = this.byOwner.get(ref.uid);
      keys?.delete(key);
      if (keys?.size === 0) this.byOwner.delete(ref.uid);
    }
  }

  private resync(): void {
    for (const obj of this.list()) {
      for (const h of this.handlers) this.notify(() => h.onUpdate?.(obj, obj));
    }
  }

  /** A throwing handler must not stop the cache that every other controller reads. */
  private notify(call: () => void): void {
    try {
      call();
    } catch (err) {
      this.opts.log?.error(
        { kind: this.type.kind, err: (err as Error).message },
        "informer event handler threw",
      );
    }
  }
}

export function matchesLabels(obj: KubeObject, selector: Record<string, string>): boolean {
  const labels = obj.metadata?.labels ?? {};
  return Object.entries(selector).every(([k, v]) => labels[k] === v);
}
