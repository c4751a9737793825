/**
 * Subscription index for the embedded bus: a token trie (the shape of nats-server's
 * sublist) plus a cache of match results per literal subject, cleared whenever a
 * subscription is added or removed. A publish costs one map lookup on a hot subject and a
 * walk of at most (tokens × 3) trie nodes on a cold one, never a scan of every subscription.
 */
import { assertPattern, assertPublishSubject } from "./subject.js";

export interface Indexed {
  readonly pattern: string;
  readonly queue: string | undefined;
}

/** Who gets a message on one subject: every plain subscriber, one member per queue group. */
export interface MatchResult<T extends Indexed> {
  readonly plain: readonly T[];
  readonly groups: readonly (readonly T[])[];
  /** Round-robin cursor over each group's members. */
  cursor: number;
}

interface TrieNode<T> {
  readonly literal: Map<string, TrieNode<T>>;
  star: TrieNode<T> | undefined;
  /** Subscriptions whose pattern ends at this node. */
  readonly here: T[];
  /** Subscriptions whose pattern is this node's path followed by ">". */
  readonly tail: T[];
}

function node<T>(): TrieNode<T> {
  return { literal: new Map(), star: undefined, here: [], tail: [] };
}

/** Above this many cached subjects the cache is dropped and refilled from hot traffic. */
const CACHE_LIMIT = 4096;
// Reply inboxes are unique per request: caching them would only evict hot subjects.
const UNCACHED_PREFIX = "_INBOX.";

export class Sublist<T extends Indexed> {
  private readonly root: TrieNode<T> = node();
  private readonly cache = new Map<string, MatchResult<T>>();
  private count = 0;

  get size(): number {
    return this.count;
  }

  insert(sub: T): void {
    assertPattern(sub.pattern);
    const tokens = sub.pattern.split(".");
    let n = this.root;
    for (let i = 0; i < tokens.length; i++) {
      const t = tokens[i]!;
      if (t === ">") {
        n.tail.push(sub);
        this.count++;
        this.changed();
        return;
      }
      let next: TrieNode<T> | undefined;
      if (t === "*") {
        next = n.star ??= node();
      } else {
        next = n.literal.get(t);
        if (!next) {
          next = node();
          n.literal.set(t, next);
        }
      }
      n = next;
    }
    n.here.push(sub);
    this.count++;
    this.changed();
  }

  /** Returns false if `sub` was not indexed. */
  remove(sub: T): boolean {
    const tokens = sub.pattern.split(".");
    const path: TrieNode<T>[] = [];
    let n: TrieNode<T> | undefined = this.root;
    let list: T[] | undefined;
    for (let i = 0; i < tokens.length && n; i++) {
      const t = tokens[i]!;
      if (t === ">") {
        list = n.tail;
        break;
      }
      path.push(n);
      n = t === "*" ? n.star : n.literal.get(t);
    }
    if (!n) return false;
    list ??= n.here;
    const at = list.indexOf(sub);
    if (at < 0) return false;
    list.splice(at, 1);
    this.count--;
    this.prune(tokens, path, n);
    this.changed();
    return true;
  }

  /** Trie nodes besides the root: stays bounded by live patterns, not by past churn. */
  nodeCount(): number {
    let c = -1;
    const walk = (n: TrieNode<T>) => {
      c++;
      for (const v of n.literal.values()) walk(v);
      if (n.star) walk(n.star);
    };
    walk(this.root);
    return c;
  }

  /** Every indexed subscription (for shutdown). */
  all(): T[] {
    const out: T[] = [];
    const walk = (n: TrieNode<T>) => {
      out.push(...n.here, ...n.tail);
      for (const v of n.literal.values()) walk(v);
      if (n.star) walk(n.star);
    };
    walk(this.root);
    return out;
  }

  /** Who receives a message on `subject`; throws SubjectError if it is not a literal subject. */
  match(subject: string): MatchResult<T> {
    const hit = this.cache.get(subject);
    if (hit) return hit;
    assertPublishSubject(subject);
    const plain: T[] = [];
    const byQueue = new Map<string, T[]>();
    this.collect(this.root, subject.split("."), 0, plain, byQueue);
    const result: MatchResult<T> = { plain, groups: [...byQueue.values()], cursor: 0 };
    if (!subject.startsWith(UNCACHED_PREFIX)) {
      if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
      this.cache.set(subject, result);
    }
    return result;
  }

  private collect(
    n: TrieNode<T>,
    tokens: readonly string[],
    i: number,
    plain: T[],
    byQueue: Map<string, T[]>,
  ): void {
    if (i === tokens.length) {
      add(n.here, plain, byQueue);
      return;
    }
    // ">" needs at least one more token, which there is.
    add(n.tail, plain, byQueue);
    const lit = n.literal.get(tokens[i]!);
    if (lit) this.collect(lit, tokens, i + 1, plain, byQueue);
    if (n.star) this.collect(n.star, tokens, i + 1, plain, byQueue);
  }

  // Drops nodes left empty so churn of unique patterns (per-request inboxes) cannot grow the trie.
  private prune(tokens: readonly string[], path: TrieNode<T>[], last: TrieNode<T>): void {
    let child = last;
    for (let i = path.length - 1; i >= 0; i--) {
      if (!isEmpty(child)) return;
      const parent = path[i]!;
      const t = tokens[i]!;
      if (t === "*") parent.star = undefined;
      else parent.literal.delete(t);
      child = parent;
    }
  }

  private changed(): void {
    this.cache.clear();
  }
}

function isEmpty<T>(n: TrieNode<T>): boolean {
  return n.here.length === 0 && n.tail.length === 0 && n.literal.size === 0 && !n.star;
}

function add<T extends Indexed>(subs: readonly T[], plain: T[], byQueue: Map<string, T[]>): void {
  for (const s of subs) {
    if (s.queue === undefined) {
      plain.push(s);
      continue;
    }
    const g = byQueue.get(s.queue);
    if (g) g.push(s);
    else byQueue.set(s.queue, [s]);
  }
}
