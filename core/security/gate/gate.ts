/**
 * The manifest gate (security layer 2): one object per capsule, built once from its manifest,
 * that every host function asks before touching files, the network, processes or the
 * environment. Nothing a prompt says reaches the options: they come from the signed manifest
 * only, so no request can widen what the gate grants. Each concern lives in its own file
 * (fs.ts, net.ts, process.ts, env.ts); this file only composes them.
 */

import type { FsRule, NetRule, ProcessRule } from "../../manifest/capability-rules.js";
import { parseFsRule, parseNetRule, parseProcessRule } from "../../manifest/capability-rules.js";
import type { Decision } from "../decision.js";
import type { EnvEntry } from "./env.js";
import { EnvGate } from "./env.js";
import type { CheckedOpen } from "./fs.js";
import { FsGate } from "./fs.js";
import type { ConnectRequest, DnsLookup, ResolvedDecision } from "./net.js";
import { NetGate } from "./net.js";
import type { ResolvedExecutable } from "./process.js";
import { ProcessGate } from "./process.js";

export interface ManifestGateOptions {
  /** The capsule's workspace: root of `cwd://` rules and of relative paths. */
  readonly workspace: string;
  /** Root of `home://` rules. */
  readonly home: string;
  readonly fsRead?: readonly FsRule[];
  readonly fsWrite?: readonly FsRule[];
  readonly net?: readonly NetRule[];
  readonly netBind?: readonly NetRule[];
  readonly hostProcess?: readonly ProcessRule[];
  readonly env?: readonly EnvEntry[];
  /** Directories for bare command names; default /usr/local/bin, /usr/bin, /bin. */
  readonly trustedPath?: readonly string[];
}

/** The `[capabilities]` strings of Capsule.toml, as written. */
export interface CapabilityEntries {
  readonly fs_read?: readonly string[];
  readonly fs_write?: readonly string[];
  readonly net?: readonly string[];
  readonly net_bind?: readonly string[];
  readonly host_process?: readonly string[];
}

/** Every question the gate answers, for callers that route requests generically. */
export type GateRequest =
  | { readonly kind: "read"; readonly path: string }
  | { readonly kind: "write"; readonly path: string }
  | { readonly kind: "connect"; readonly request: ConnectRequest }
  | { readonly kind: "url"; readonly url: string }
  | { readonly kind: "spawn"; readonly command: string; readonly args: readonly string[] }
  | { readonly kind: "env"; readonly name: string };

export class ManifestGate {
  readonly fs: FsGate;
  readonly net: NetGate;
  readonly process: ProcessGate;
  readonly env: EnvGate;

  constructor(options: ManifestGateOptions) {
    this.fs = new FsGate({
      read: options.fsRead ?? [],
      write: options.fsWrite ?? [],
      workspace: options.workspace,
      home: options.home,
    });
    this.net = new NetGate({ connect: options.net ?? [], bind: options.netBind ?? [] });
    this.process = new ProcessGate(options.hostProcess ?? [], {
      workspace: options.workspace,
      ...(options.trustedPath ? { trustedPath: options.trustedPath } : {}),
    });
    this.env = new EnvGate(options.env ?? []);
  }

  /** Builds the gate from the manifest's strings; a bad entry throws RuleSyntaxError. */
  static fromEntries(
    capabilities: CapabilityEntries,
    rest: Omit<ManifestGateOptions, "fsRead" | "fsWrite" | "net" | "netBind" | "hostProcess">,
  ): ManifestGate {
    return new ManifestGate({
      ...rest,
      fsRead: (capabilities.fs_read ?? []).map(parseFsRule),
      fsWrite: (capabilities.fs_write ?? []).map(parseFsRule),
      net: (capabilities.net ?? []).map(parseNetRule),
      netBind: (capabilities.net_bind ?? []).map(parseNetRule),
      hostProcess: (capabilities.host_process ?? []).map(parseProcessRule),
    });
  }

  /** One entry point for every kind of request. */
  async check(request: GateRequest): Promise<Decision> {
    switch (request.kind) {
      case "read":
        return this.fs.checkRead(request.path);
      case "write":
        return this.fs.checkWrite(request.path);
      case "connect":
        return this.net.checkConnect(request.request);
      case "url":
        return this.net.checkUrl(request.url);
      case "spawn":
        return this.process.checkSpawn(request.command, request.args);
      case "env":
        return this.env.checkEnv(request.name);
    }
  }

  checkRead(path: string): Promise<Decision> {
    return this.fs.checkRead(path);
  }

  checkWrite(path: string): Promise<Decision> {
    return this.fs.checkWrite(path);
  }

  checkedOpen(path: string, flags: number, mode?: number): Promise<CheckedOpen> {
    return this.fs.checkedOpen(path, flags, mode);
  }

  checkUrl(url: string): Decision {
    return this.net.checkUrl(url);
  }

  checkConnect(request: ConnectRequest): Decision {
    return this.net.checkConnect(request);
  }

  resolveAndCheck(url: string, lookup?: DnsLookup): Promise<ResolvedDecision> {
    return this.net.resolveAndCheck(url, lookup);
  }

  checkSpawn(command: string, args: readonly string[]): Decision {
    return this.process.checkSpawn(command, args);
  }

  resolveExecutable(command: string): Promise<ResolvedExecutable> {
    return this.process.resolveExecutable(command);
  }

  checkEnv(name: string): Decision {
    return this.env.checkEnv(name);
  }

  isSecret(name: string): boolean {
    return this.env.isSecret(name);
  }
}
