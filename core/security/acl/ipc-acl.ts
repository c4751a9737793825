/**
 * Layer 3, the IPC ACL: which subjects a capsule may publish to and which patterns it may
 * subscribe to, from its manifest's `ipc_publish` / `ipc_subscribe`. The sidecar asks it for
 * every message, so patterns are compiled once and decisions for literal subjects are cached.
 *
 * Two grants are implicit, because request/reply cannot work without them and the explicit
 * alternative (`_INBOX.>`) would let a capsule read every other capsule's replies:
 * - a capsule that may publish may subscribe under its own inbox prefix
 *   `_INBOX.<capsule-id>.>` (the sidecar connects with that `inboxPrefix`);
 * - a capsule that may subscribe may answer a message it received by publishing to that
 *   message's reply subject, passed explicitly as `{ inReplyTo }` by the sidecar.
 */
import {
  assertPattern,
  assertPublishSubject,
  type CompiledPattern,
  compilePattern,
  matchCompiled,
  patternCovers,
} from "../../bus/subject.js";
import { allow, type Decision, deny } from "../decision.js";

export interface IpcAclSpec {
  /** Patterns the capsule may publish to (manifest `ipc_publish`). */
  readonly publish: readonly string[];
  /** Patterns the capsule may subscribe to (manifest `ipc_subscribe`). */
  readonly subscribe: readonly string[];
}

export interface IpcAclOptions {
  /** The capsule's id; one subject token, it names the capsule's private inbox. */
  readonly capsuleId: string;
  /** Most cached decisions per direction; the cache is cleared when full. */
  readonly cacheSize?: number;
}

export interface PublishContext {
  /**
   * The reply subject of a message this capsule received and is answering. Only the sidecar
   * sets it, from the message it delivered; the capsule never names it directly.
   */
  readonly inReplyTo?: string;
}

/** Prefix every reply subject must carry; see checkPublish for the threat. */
export const INBOX_ROOT = "_INBOX";

const CAPSULE_ID = /^[A-Za-z0-9_-]{1,64}$/;

export class IpcAcl {
  readonly publishPatterns: readonly string[];
  readonly subscribePatterns: readonly string[];
  /** `_INBOX.<capsule-id>`: pass as the NATS client's `inboxPrefix`. */
  readonly inboxPrefix: string;
  private readonly inboxPattern: string;
  private readonly compiledPublish: readonly CompiledPattern[];
  private readonly cacheSize: number;
  private readonly publishCache = new Map<string, Decision>();
  private readonly subscribeCache = new Map<string, Decision>();

  constructor(spec: IpcAclSpec, opts: IpcAclOptions) {
    if (!CAPSULE_ID.test(opts.capsuleId)) {
      throw new Error(
        `capsule id "${opts.capsuleId}" must be 1-64 characters of A-Z a-z 0-9 _ - (one subject token)`,
      );
    }
    for (const p of [...spec.publish, ...spec.subscribe]) assertPattern(p);
    this.publishPatterns = [...spec.publish];
    this.subscribePatterns = [...spec.subscribe];
    this.compiledPublish = spec.publish.map(compilePattern);
    this.inboxPrefix = `${INBOX_ROOT}.${opts.capsuleId}`;
    this.inboxPattern = `${this.inboxPrefix}.>`;
    this.cacheSize = opts.cacheSize ?? 4096;
  }

  /** True when the capsule may make requests and therefore owns an inbox. */
  get hasInbox(): boolean {
    return this.publishPatterns.length > 0;
  }

  /** True when the capsule may receive requests and therefore answer them. */
  get mayReply(): boolean {
    return this.subscribePatterns.length > 0;
  }

  checkPublish(subject: string, ctx?: PublishContext): Decision {
    if (ctx?.inReplyTo !== undefined && subject === ctx.inReplyTo) return this.checkReply(subject);
    const hit = this.publishCache.get(subject);
    if (hit) return hit;
    const decision = this.decidePublish(subject);
    this.remember(this.publishCache, subject, decision);
    return decision;
  }

  checkSubscribe(pattern: string): Decision {
    const hit = this.subscribeCache.get(pattern);
    if (hit) return hit;
    const decision = this.decideSubscribe(pattern);
    this.remember(this.subscribeCache, pattern, decision);
    return decision;
  }

  private decidePublish(subject: string): Decision {
    try {
      assertPublishSubject(subject);
    } catch (err) {
      return deny("acl", `publish refused: ${(err as Error).message}`);
    }
    const tokens = subject.split(".");
    for (const p of this.compiledPublish) {
      if (matchCompiled(p, tokens)) return allow("acl", `ipc_publish "${p.source}"`);
    }
    return deny(
      "acl",
      `publish to "${subject}" is not allowed by ipc_publish ${list(this.publishPatterns)}`,
    );
  }

  private decideSubscribe(pattern: string): Decision {
    try {
      assertPattern(pattern);
    } catch (err) {
      return deny("acl", `subscribe refused: ${(err as Error).message}`);
    }
    // Covering, not overlapping: a capsule allowed `tool.v1.execute.fs` that asks for
    // `tool.v1.execute.*` would otherwise receive every other tool's calls.
    for (const p of this.subscribePatterns) {
      if (patternCovers(p, pattern)) return allow("acl", `ipc_subscribe "${p}"`);
    }
    if (this.hasInbox && patternCovers(this.inboxPattern, pattern)) {
      return allow("acl", `own inbox "${this.inboxPattern}"`);
    }
    return deny(
      "acl",
      `subscribe to "${pattern}" is not covered by ipc_subscribe ${list(this.subscribePatterns)}`,
    );
  }

  private checkReply(subject: string): Decision {
    if (!this.mayReply) {
      return deny("acl", `reply to "${subject}" refused: the capsule subscribes to nothing`);
    }
    try {
      assertPublishSubject(subject);
    } catch (err) {
      return deny("acl", `reply refused: ${(err as Error).message}`);
    }
    // The reply subject is chosen by the requester. Without this check a requester could name
    // `tool.v1.execute.shell` as its reply subject and make the responder publish there for it
    // (confused deputy); replies may only go to an inbox.
    if (!subject.startsWith(`${INBOX_ROOT}.`)) {
      return deny(
        "acl",
        `reply to "${subject}" refused: reply subjects must start with "${INBOX_ROOT}."`,
      );
    }
    return allow("acl", "reply to a received request");
  }

  private remember(cache: Map<string, Decision>, key: string, d: Decision): void {
    // Clear-on-full keeps the per-message cost at one Map lookup; a capsule that floods the
    // cache with distinct subjects only costs itself a recompute.
    if (cache.size >= this.cacheSize) cache.clear();
    cache.set(key, d);
  }
}

function list(patterns: readonly string[]): string {
  return patterns.length === 0 ? "(empty: nothing allowed)" : `[${patterns.join(", ")}]`;
}
