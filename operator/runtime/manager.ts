/**
 * The manager owns the lifecycle: it starts the informers (on every replica, so a standby is
 * warm), waits for them to sync, serves /healthz, /readyz and /metrics, and runs the
 * controllers only while it holds the leader lease. A manager that loses the lease stops its
 * controllers for good (as controller-runtime exits): the process should then restart.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";
import { pino } from "pino";
import { Registry } from "prom-client";
import { Informer, type InformerOptions } from "./cache.js";
import { Client } from "./client.js";
import type { Controller } from "./controller.js";
import { type LeaderElectionOptions, LeaderElector } from "./leader.js";
import { type KubeObject, KubeRest, type ResourceType } from "./rest.js";

export interface ManagerOptions {
  kubeConfig: KubeConfig;
  /** Run controllers only while holding this lease; always when absent (single replica). */
  leaderElection?: Omit<LeaderElectionOptions, "onStartedLeading" | "onStoppedLeading" | "log">;
  /** Metrics of the runtime and controllers go here; a fresh registry when absent. */
  registry?: Registry;
  /** Port for /healthz, /readyz and /metrics on 127.0.0.1 unless `host` says otherwise; none when absent. 0 = any free port. */
  healthPort?: number;
  host?: string;
  /** Applied to every informer the manager creates. */
  informerDefaults?: Omit<InformerOptions, "log">;
  log?: Logger;
}

export class Manager {
  readonly rest: KubeRest;
  readonly client: Client;
  readonly registry: Registry;
  private readonly log: Logger;
  private readonly informers = new Map<string, Informer>();
  private readonly controllers: Controller[] = [];
  private elector: LeaderElector | undefined;
  private server: http.Server | undefined;
  private synced = false;
  private leading = false;
  private stopped = false;

  constructor(private readonly opts: ManagerOptions) {
    this.rest = new KubeRest(opts.kubeConfig);
    this.client = new Client(this.rest);
    this.registry = opts.registry ?? new Registry();
    this.log = opts.log ?? pino({ level: "warn" });
  }

  /** The shared informer for a kind (one per kind, so every controller reads the same cache). */
  informer<T extends KubeObject = KubeObject>(type: ResourceType): Informer<T> {
    const id = `${type.apiVersion}/${type.kind}`;
    let inf = this.informers.get(id);
    if (!inf) {
      inf = new Informer(this.rest, type, { ...this.opts.informerDefaults, log: this.log });
      this.informers.set(id, inf);
      this.client.registerInformer(inf);
    }
    return inf as unknown as Informer<T>;
  }

  addController(controller: Controller): void {
    this.controllers.push(controller);
    if (this.leading) controller.start();
  }

  get isLeader(): boolean {
    return this.leading;
  }

  get isReady(): boolean {
    return this.synced && !this.stopped;
  }

  /** Port of the health/metrics server once started. */
  get healthPort(): number | undefined {
    return (this.server?.address() as AddressInfo | null)?.port;
  }

  async start(): Promise<void> {
    if (this.opts.healthPort !== undefined) await this.serveHealth(this.opts.healthPort);
    for (const inf of this.informers.values()) inf.start();
    await Promise.all([...this.informers.values()].map((inf) => inf.waitForSync()));
    this.synced = true;
    if (this.stopped) return;
    if (!this.opts.leaderElection) {
      this.startLeading();
      return;
    }
    this.elector = new LeaderElector(this.rest, {
      ...this.opts.leaderElection,
      log: this.log,
      onStartedLeading: () => this.startLeading(),
      onStoppedLeading: () => void this.stopLeading(),
    });
    this.elector.start();
  }

  private startLeading(): void {
    if (this.stopped) return;
    this.leading = true;
    for (const c of this.controllers) c.start();
  }

  private async stopLeading(): Promise<void> {
    this.leading = false;
    await Promise.all(this.controllers.map((c) => c.stop()));
  }

  /**
   * Stops controllers (waiting for reconciles in flight), then releases the lease, then stops
   * informers and the health server. `releaseLease: false` leaves the lease to expire, as a
   * crash would.
   */
  async stop(opts: { releaseLease?: boolean } = {}): Promise<void> {
    this.stopped = true;
    // Controllers first: the lease may only go once nothing acts on the leader's behalf.
    await Promise.all(this.controllers.map((c) => c.stop()));
    this.leading = false;
    await this.elector?.stop({ release: opts.releaseLease ?? true });
    await Promise.all([...this.informers.values()].map((inf) => inf.stop()));
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private serveHealth(port: number): Promise<void> {
    const server = http.createServer((req, res) => {
      const reply = (status: number, body: string, type = "text/plain") => {
        res.writeHead(status, { "content-type": type });
        res.end(body);
      };
      if (req.url === "/healthz")
        return reply(this.stopped ? 503 : 200, this.stopped ? "stopping" : "ok");
      if (req.url === "/readyz")
        return reply(this.isReady ? 200 : 503, this.isReady ? "ok" : "caches not synced");
      if (req.url === "/metrics") {
        this.registry.metrics().then(
          (text) => reply(200, text, this.registry.contentType),
          (err: Error) => reply(500, err.message),
        );
        return;
      }
      reply(404, "not found");
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, this.opts.host ?? "127.0.0.1", () => resolve());
    });
  }
}
