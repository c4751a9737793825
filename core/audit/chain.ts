/**
 * AuditChain: the durable, append-only, hash-linked and signed log of every decision.
 *
 * Contract for callers: an action is authorised only once `append` for its decision has
 * RESOLVED. With `sync: "always"` (the default) `append` resolves after the group-commit batch
 * holding the entry was written and fdatasync-ed. If a write or fdatasync fails (EIO, ENOSPC,
 * EROFS…) that batch, everything queued and every later `append` reject with AuditWriteError and
 * the chain stays failed until reopened: a layer that cannot record its decision must deny (fail
 * closed).
 *
 * Durability, opt-in `sync: "interval"`: `append` resolves once its batch was written (write(2)
 * returned: the kernel holds it, and a write error such as ENOSPC still rejects it — the action is
 * denied); the seal and the fdatasync follow at most `syncIntervalMs` later, one for everything
 * written since the last. That takes the disk's flush latency (~300 µs p50, multi-ms p99 on this
 * VM) off every decision. What is given up: a host crash or power cut can lose the entries of the
 * last interval although their actions ran. The chain itself stays whole: entries reach the file
 * in order, each record is written with its newline, so a crash leaves at worst a torn or unsealed
 * tail, which resume repairs and the next seal covers (as below); verification stays strict and
 * reports an unsealed tail as "unsigned" until then. A failed background seal or fdatasync fails
 * the chain like a failed write and is reported through `onBackgroundFailure` (no append is
 * waiting on it to carry the error); fdatasync is never retried, since after a failed fsync the
 * kernel may have dropped the dirty pages and a second fsync would report success over the loss.
 * A new segment is always written durably, after the old one was sealed and synced, so a header
 * never links to entries a crash could take away. `flushToDisk()` and `close()` make everything
 * written durable.
 *
 * Group commit: appends arriving while a batch is being written wait for the next batch, so one
 * fdatasync serves many appends (at most `maxEntries` per batch; an idle chain waits `maxDelayMs`
 * — default 0, i.e. the rest of the current tick — for company).
 *
 * Signing, measured by bench/audit.ts on this machine (2 shared vCPU, ext4 on virtio; fdatasync per
 * batch, 1,000 appends in flight):
 *   "seal"  — one ed25519 signature per batch over its last hash (a `seal` record): 90-110k appends/s,
 *             verified at ~140k entries/s;
 *   "entry" — one signature per entry over its hash: ~21k appends/s, verified at ~8.6k entries/s;
 *   baseline, fdatasync per entry (1 in flight): ~1-2k appends/s.
 * Default: "seal". The chain links make a seal cover every entry of its batch; it costs one
 * signature per batch instead of ~35 µs (sign) and ~115 µs (verify) per entry. What is given up:
 * a single entry cut out of a file cannot be shown to a third party with its own signature — its
 * proof is the seal that follows it plus the entries in between.
 *
 * Resume: opening an existing directory continues seq and prev from the last entry on disk, never
 * forks (an exclusive lock file keeps a second writer out). A record cut short by a crash
 * (bytes after the last newline of the last segment) is truncated and an `audit.recovered` info
 * entry says how many bytes went. With sync "always" that loses nothing acknowledged: a batch is
 * acknowledged only after all of it, seal included, was fdatasync-ed, so a torn record belongs to
 * a batch that was never acknowledged and whose actions were therefore never authorised. Any
 * other damage (a bad line before the tail, a broken link) refuses to open with the file and line.
 *
 * The converse does not hold: an entry on disk does not prove its action ran. A batch that was
 * fully written but whose fdatasync failed (or a crash between write and acknowledgement) leaves
 * entries whose appends rejected, so their actions were denied. The writer takes such bytes back
 * (truncate to the last durable size) when it still can.
 */
import type { KeyObject } from "node:crypto";
import { type FileHandle, lstat, mkdir, open, readFile, unlink } from "node:fs/promises";
import path from "node:path";
import {
  type AuditEntry,
  type AuditEntryInput,
  computeEntryHash,
  describeIssues,
  GENESIS_HASH,
  hashArgs,
  parseEntryInput,
  SegmentHeaderSchema,
} from "./entry.js";
import { AuditCorruptError, AuditInputError, AuditWriteError } from "./errors.js";
import { acquireWriterLock, type WriterLock } from "./lock.js";
import { listSegments, segmentFileName } from "./segment-files.js";
import { signChainHash } from "./signature.js";
import { ChainVerifier } from "./verify.js";

export type SigningStrategy = "seal" | "entry";

/** When an append is acknowledged: after fdatasync ("always") or after write(2) ("interval"). */
export type AuditSyncMode = "always" | "interval";
export const AUDIT_SYNC_MODES: readonly AuditSyncMode[] = ["always", "interval"];

export interface AuditChainOptions {
  /** The writer's ed25519 private key. */
  key: KeyObject;
  /** Id under which verifiers hold the matching public key (AuditKeyring). */
  keyId: string;
  /** Default "seal" (see the measurements above). */
  signing?: SigningStrategy;
  /** A new segment is started once the current one reaches this size. Default 64 MiB. */
  segmentMaxBytes?: number;
  groupCommit?: { maxEntries?: number; maxDelayMs?: number };
  /** Default "always" (see "Durability" above). */
  sync?: AuditSyncMode;
  /** With sync "interval": longest time a written entry waits for its seal and fdatasync. Default 10. */
  syncIntervalMs?: number;
  /**
   * Called once if a seal or fdatasync that no append was waiting for fails (sync "interval"):
   * the chain refuses every append from then on, and this is the only place the cause surfaces
   * before the next decision is denied. Wire it to alerting.
   */
  onBackgroundFailure?: (error: AuditWriteError) => void;
  /** Identity written on the chain's own entries (recoveries). */
  lifecycle?: { session?: string; principal?: string; capsule?: string };
}

export interface AppendReceipt {
  seq: number;
  hash: string;
}

interface Pending {
  line: string;
  seq: number;
  hash: string;
  resolve: (r: AppendReceipt) => void;
  reject: (e: Error) => void;
}

interface Resumed {
  index: number;
  size: number;
  nextSeq: number;
  lastHash: string;
  /** Highest seq covered by a signature or seal in the file, -1 when none. */
  coveredSeq: number;
  notes: string[];
}

const KEY_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

export class AuditChain {
  readonly dir: string;
  readonly signing: SigningStrategy;
  readonly sync: AuditSyncMode;
  readonly syncIntervalMs: number;
  readonly #onBackgroundFailure: ((error: AuditWriteError) => void) | undefined;
  readonly #key: KeyObject;
  readonly #keyId: string;
  readonly #maxBytes: number;
  readonly #maxEntries: number;
  readonly #maxDelayMs: number;
  readonly #lock: WriterLock;
  #handle: FileHandle | null = null;
  #segmentIndex: number;
  #size: number;
  /** Assigned in memory (may be ahead of disk). */
  #nextSeq: number;
  #lastHash: string;
  /** Written to the file (acknowledged with sync "interval"); equals #durable with "always". */
  #written: { seq: number | null; hash: string };
  /** Written and fdatasync-ed. */
  #durable: { seq: number | null; hash: string };
  /** Highest seq whose signature or seal is in the file, -1 when none. */
  #sealedSeq: number;
  /** Armed when the first entry after a sync is written (sync "interval"). */
  #syncTimer: NodeJS.Timeout | null = null;
  /** The next turn of the flush loop seals and fdatasyncs what was written. */
  #syncDue = false;
  #queue: Pending[] = [];
  #flushing: Promise<void> | null = null;
  #timer: { timeout: NodeJS.Timeout } | { immediate: NodeJS.Immediate } | null = null;
  #failure: AuditWriteError | null = null;
  #closed = false;
  /** The segment file the batch in flight goes to, for the failure message. */
  #writingTo = "";
  /** A failed write could not be truncated away: nothing more may be written to this file. */
  #tailUnknown = false;
  /** What the flush loop was doing, for the failure message and its handling. */
  #doing: "writing" | "syncing" = "writing";

  private constructor(
    dir: string,
    opts: AuditChainOptions,
    lock: WriterLock,
    state: Resumed,
    handle: FileHandle | null,
  ) {
    this.dir = dir;
    this.signing = opts.signing ?? "seal";
    this.sync = opts.sync ?? "always";
    this.syncIntervalMs = opts.syncIntervalMs ?? 10;
    this.#onBackgroundFailure = opts.onBackgroundFailure;
    this.#key = opts.key;
    this.#keyId = opts.keyId;
    this.#maxBytes = opts.segmentMaxBytes ?? 64 * 2 ** 20;
    this.#maxEntries = opts.groupCommit?.maxEntries ?? 1000;
    this.#maxDelayMs = opts.groupCommit?.maxDelayMs ?? 0;
    this.#lock = lock;
    this.#handle = handle;
    this.#segmentIndex = state.index;
    this.#size = state.size;
    this.#nextSeq = state.nextSeq;
    this.#lastHash = state.lastHash;
    this.#durable = { seq: state.nextSeq > 0 ? state.nextSeq - 1 : null, hash: state.lastHash };
    this.#written = { ...this.#durable };
    this.#sealedSeq = state.coveredSeq;
  }

  static async open(dir: string, opts: AuditChainOptions): Promise<AuditChain> {
    checkOptions(opts);
    await mkdir(dir, { recursive: true });
    const lock = await acquireWriterLock(dir);
    let chain: AuditChain | undefined;
    try {
      const state = await resume(dir);
      const handle =
        state.index > 0 ? await open(path.join(dir, segmentFileName(state.index)), "a") : null;
      chain = new AuditChain(dir, opts, lock, state, handle);
      if (state.notes.length > 0) {
        const id = opts.lifecycle ?? {};
        await chain.append({
          session: id.session ?? "",
          principal: id.principal ?? "astrid-audit",
          capsule: id.capsule ?? "",
          layer: "lifecycle",
          action: "audit.recovered",
          target: segmentFileName(Math.max(state.index, 1)),
          decision: "info",
          reason: `${state.notes.join("; ")}; ${
            chain.sync === "always"
              ? "nothing acknowledged was lost: an append resolves only after its whole batch, signature included, was fdatasync-ed"
              : `this chain runs with sync "interval" (${chain.syncIntervalMs} ms): entries acknowledged in the last interval before the crash may be missing, the chain up to here is whole`
          }`,
        });
        // The repair is rare and what follows builds on it: make it durable and sealed now.
        await chain.flushToDisk();
      }
    } catch (err) {
      if (chain)
        await chain.close(); // releases the lock too
      else await lock.release();
      throw err;
    }
    return chain;
  }

  /** seq and hash of the last entry known to be on disk, fdatasync-ed (seq null: the chain is empty). */
  get head(): { seq: number | null; hash: string } {
    return { ...this.#durable };
  }

  /** The error that stopped this chain, or null while it can still write. */
  get failure(): AuditWriteError | null {
    return this.#failure;
  }

  /**
   * Records one decision. Resolves with its seq and hash once it is durable (sync "always") or
   * written to the file (sync "interval"); rejects with
   * AuditInputError (bad entry, nothing written) or AuditWriteError (deny the action).
   */
  append(input: AuditEntryInput): Promise<AppendReceipt> {
    if (this.#failure) return Promise.reject(this.#failure);
    if (this.#closed) {
      return Promise.reject(new AuditWriteError(`audit chain ${this.dir} is closed`));
    }
    let line: string;
    let seq: number;
    let hash: string;
    try {
      const inp = parseEntryInput(input);
      let argsHash: string | null = null;
      if (inp.args !== undefined) {
        try {
          argsHash = hashArgs(inp.args);
        } catch (err) {
          throw new AuditInputError(`invalid audit entry: args: ${(err as Error).message}`);
        }
      }
      seq = this.#nextSeq;
      const fields = {
        seq,
        time: new Date().toISOString(),
        session: inp.session,
        principal: inp.principal,
        capsule: inp.capsule,
        layer: inp.layer,
        action: inp.action,
        target: inp.target,
        decision: inp.decision,
        reason: inp.reason,
        argsHash,
        prev: this.#lastHash,
      };
      hash = computeEntryHash(fields);
      const record: AuditEntry = { type: "entry", ...fields, hash };
      if (this.signing === "entry") {
        record.signature = { keyId: this.#keyId, sig: signChainHash(this.#key, hash) };
      }
      line = `${JSON.stringify(record)}\n`;
    } catch (err) {
      return Promise.reject(err);
    }
    this.#nextSeq = seq + 1;
    this.#lastHash = hash;
    return new Promise<AppendReceipt>((resolve, reject) => {
      this.#queue.push({ line, seq, hash, resolve, reject });
      this.#schedule();
    });
  }

  /**
   * Resolves once every entry appended before the call is written, sealed and fdatasync-ed;
   * rejects with the chain's AuditWriteError if that cannot be done. With sync "always" that is
   * already true of every resolved append.
   */
  async flushToDisk(): Promise<void> {
    const target = this.#nextSeq - 1;
    for (;;) {
      if (this.#failure) throw this.#failure;
      if ((this.#durable.seq ?? -1) >= target && this.#sealedSeq >= target) return;
      this.#syncDue = true;
      this.#startFlush();
      await this.#flushing;
    }
  }

  /** Writes what is queued, seals and syncs it, then releases the file and the lock. Later appends reject. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearSyncTimer();
    if (!this.#failure) this.#syncDue = true;
    this.#startFlush();
    while (this.#flushing) await this.#flushing;
    await this.#handle?.close().catch(() => {});
    this.#handle = null;
    await this.#lock.release();
  }

  #schedule(): void {
    if (this.#flushing) return; // the running flush takes the queue when it ends
    if (this.#queue.length >= this.#maxEntries) {
      this.#startFlush();
    } else if (!this.#timer) {
      this.#timer =
        this.#maxDelayMs > 0
          ? { timeout: setTimeout(() => this.#startFlush(), this.#maxDelayMs) }
          : { immediate: setImmediate(() => this.#startFlush()) };
    }
  }

  #startFlush(): void {
    if (this.#timer) {
      if ("timeout" in this.#timer) clearTimeout(this.#timer.timeout);
      else clearImmediate(this.#timer.immediate);
      this.#timer = null;
    }
    if (this.#flushing || this.#failure) return;
    if (this.#queue.length === 0 && !this.#syncDue) return;
    this.#flushing = this.#flushLoop().finally(() => {
      this.#flushing = null;
      // Appends made by callers woken by this flush's resolutions arrived after its last look
      // at the queue: they must not wait for an append that may never come.
      if (this.#queue.length > 0 || this.#syncDue) this.#startFlush();
    });
  }

  #armSyncTimer(): void {
    if (this.#closed) {
      this.#syncDue = true; // close() is waiting for this loop to end with everything synced
      return;
    }
    // Not unref-ed: a process that exits without close() still gets its last seal written.
    this.#syncTimer ??= setTimeout(() => {
      this.#syncTimer = null;
      this.#syncDue = true;
      this.#startFlush();
    }, this.syncIntervalMs);
  }

  #clearSyncTimer(): void {
    if (this.#syncTimer) clearTimeout(this.#syncTimer);
    this.#syncTimer = null;
  }

  async #flushLoop(): Promise<void> {
    while (!this.#failure) {
      if (this.#queue.length > 0) {
        // One batch, then a sync if one is due: a steady stream of appends cannot postpone the
        // seal and fdatasync past one batch.
        const batch = this.#queue.splice(0, this.#maxEntries);
        try {
          await this.#writeBatch(batch);
        } catch (err) {
          await this.#fail(err, batch);
          return;
        }
        if (this.sync === "interval" && (this.#durable.seq ?? -1) < batch.at(-1)!.seq) {
          this.#armSyncTimer();
        }
        for (const p of batch) p.resolve({ seq: p.seq, hash: p.hash });
      }
      if (this.#syncDue) {
        this.#syncDue = false;
        this.#clearSyncTimer();
        try {
          await this.#sealAndSync();
        } catch (err) {
          await this.#fail(err, []);
          return;
        }
      } else if (this.#queue.length === 0) return;
    }
  }

  /** Seals (sync "interval", signing "seal") and fdatasyncs everything written so far. */
  async #sealAndSync(): Promise<void> {
    const w = this.#written;
    if (w.seq === null || this.#handle === null) return;
    // A seal written after bytes a failed write left behind would sit behind a torn record, in
    // the middle of the file, where resume refuses to open: leave such a tail to resume.
    if (this.#tailUnknown)
      throw new Error("the file ends in a failed write that could not be taken back");
    const needsSeal = this.signing === "seal" && this.#sealedSeq < w.seq;
    if (!needsSeal && this.#durable.seq === w.seq) return;
    const handle = this.#handle;
    this.#writingTo = segmentFileName(this.#segmentIndex);
    if (needsSeal) {
      this.#doing = "writing";
      const buf = Buffer.from(`${this.#sealLine(w.seq, w.hash)}\n`);
      try {
        await writeAll(handle, buf);
      } catch (err) {
        await this.#takeBack(handle);
        throw err;
      }
      this.#size += buf.length;
      this.#sealedSeq = w.seq;
    }
    this.#doing = "syncing";
    await handle.datasync();
    this.#durable = { ...w };
  }

  /** Truncates a failed write away; if that fails too, the tail is unknown and stays untouched. */
  async #takeBack(handle: FileHandle): Promise<void> {
    await handle.truncate(this.#size).catch(() => {
      this.#tailUnknown = true;
    });
  }

  #sealLine(seq: number, hash: string): string {
    const sig = signChainHash(this.#key, hash);
    return JSON.stringify({ type: "seal", seq, hash, keyId: this.#keyId, sig });
  }

  async #writeBatch(batch: Pending[]): Promise<void> {
    const first = batch[0]!;
    const last = batch[batch.length - 1]!;
    const rotating = this.#handle === null || this.#size >= this.#maxBytes;
    // A new segment's header links to the old one's last hash: the old segment must be sealed and
    // on disk first, or a crash could keep the new file and lose what it links to (a fork).
    if (rotating) await this.#sealAndSync();
    this.#doing = "writing";
    // A new segment is rare (64 MiB): it is written durably in either mode.
    const durable = this.sync === "always" || rotating;
    let text = "";
    for (const p of batch) text += p.line;
    if (this.signing === "seal" && durable) text += `${this.#sealLine(last.seq, last.hash)}\n`;
    this.#writingTo = segmentFileName(this.#segmentIndex + (rotating ? 1 : 0));
    if (rotating) {
      const previous = this.#segmentIndex > 0 ? segmentFileName(this.#segmentIndex) : null;
      const header = {
        type: "segment",
        segment: segmentFileName(this.#segmentIndex + 1),
        previous,
        previousHash: this.#written.hash,
        firstSeq: first.seq,
        time: new Date().toISOString(),
      };
      text = `${JSON.stringify(header)}\n${text}`;
    }
    const buf = Buffer.from(text);
    if (!rotating) {
      const handle = this.#handle!;
      try {
        await writeAll(handle, buf);
        if (durable) await handle.datasync();
      } catch (err) {
        // Take back the unacknowledged bytes so a reader sees whole batches only (best effort:
        // after EIO the truncate may fail too; resume then cuts the torn tail).
        await this.#takeBack(handle);
        throw err;
      }
    } else {
      const name = segmentFileName(this.#segmentIndex + 1);
      const file = path.join(this.dir, name);
      // O_EXCL: never append to a file that should not exist yet (a planted file or symlink).
      const handle = await open(file, "ax");
      try {
        await writeAll(handle, buf);
        await handle.datasync();
        await syncDir(this.dir); // the new file's name must survive a crash too
      } catch (err) {
        await handle.close().catch(() => {});
        await unlink(file).catch(() => {});
        throw err;
      }
      await this.#handle?.close().catch(() => {});
      this.#handle = handle;
      this.#segmentIndex++;
      this.#size = 0;
    }
    this.#size += buf.length;
    this.#written = { seq: last.seq, hash: last.hash };
    if (durable) this.#durable = { ...this.#written };
    if (this.signing === "entry" || durable) this.#sealedSeq = last.seq;
  }

  async #fail(err: unknown, batch: Pending[]): Promise<void> {
    const written = this.#written.seq ?? -1;
    const exposed = (this.#durable.seq ?? -1) < written;
    const background = batch.length === 0;
    const lost =
      background && exposed
        ? `; entries seq ${(this.#durable.seq ?? -1) + 1}..${written} were acknowledged before they were on disk and may be lost in a crash`
        : "";
    const verb = this.#doing === "syncing" ? "syncing" : "writing";
    this.#failure = new AuditWriteError(
      `audit chain ${this.dir}: ${verb} ${this.#writingTo} failed (${(err as Error).message})${lost}; every append is refused until the chain is reopened`,
      { cause: err },
    );
    this.#clearSyncTimer();
    this.#syncDue = false;
    const failed = [...batch, ...this.#queue];
    this.#queue = [];
    for (const p of failed) p.reject(this.#failure);
    // A failed WRITE was taken back; what was written before it was acknowledged (sync "interval")
    // and its actions ran: try once to seal and sync it. Never after a failed fdatasync (see
    // "Durability" above), never twice.
    if (verb === "writing" && exposed && !background) {
      await this.#sealAndSync().catch(() => {});
    }
    if (background) this.#onBackgroundFailure?.(this.#failure);
  }
}

function checkOptions(opts: AuditChainOptions): void {
  if (opts.key?.type !== "private" || opts.key.asymmetricKeyType !== "ed25519") {
    throw new TypeError("audit chain: key must be an ed25519 private KeyObject");
  }
  if (!KEY_ID_RE.test(opts.keyId)) {
    throw new TypeError(
      `audit chain: keyId "${opts.keyId}" must be 1-128 characters of [A-Za-z0-9._:-]`,
    );
  }
  const signing = opts.signing ?? "seal";
  if (signing !== "seal" && signing !== "entry") {
    throw new TypeError(`audit chain: signing "${signing}" must be "seal" or "entry"`);
  }
  const max = opts.segmentMaxBytes ?? 64 * 2 ** 20;
  if (!Number.isInteger(max) || max < 1024) {
    throw new TypeError(`audit chain: segmentMaxBytes ${max} must be an integer >= 1024`);
  }
  const n = opts.groupCommit?.maxEntries ?? 1000;
  if (!Number.isInteger(n) || n < 1) {
    throw new TypeError(`audit chain: groupCommit.maxEntries ${n} must be an integer >= 1`);
  }
  const sync = opts.sync ?? "always";
  if (!AUDIT_SYNC_MODES.includes(sync)) {
    throw new TypeError(`audit chain: sync "${sync}" must be "always" or "interval"`);
  }
  const every = opts.syncIntervalMs ?? 10;
  if (!Number.isFinite(every) || every <= 0) {
    throw new TypeError(`audit chain: syncIntervalMs ${every} must be a number > 0`);
  }
  const d = opts.groupCommit?.maxDelayMs ?? 0;
  if (!Number.isFinite(d) || d < 0) {
    throw new TypeError(`audit chain: groupCommit.maxDelayMs ${d} must be a number >= 0`);
  }
}

async function writeAll(handle: FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await handle.write(buf, off, buf.length - off, null);
    off += bytesWritten;
  }
}

async function syncDir(dir: string): Promise<void> {
  const h = await open(dir, "r");
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

/** Finds where the chain on disk ends, repairing only a torn tail of the last segment. */
async function resume(dir: string): Promise<Resumed> {
  const segments = await listSegments(dir);
  const notes: string[] = [];
  for (;;) {
    const last = segments.at(-1);
    if (!last) {
      return { index: 0, size: 0, nextSeq: 0, lastHash: GENESIS_HASH, coveredSeq: -1, notes };
    }
    const file = path.join(dir, last.name);
    const st = await lstat(file);
    if (!st.isFile()) {
      throw new AuditCorruptError(
        `cannot continue the audit chain in ${dir}: ${last.name} is not a regular file; refusing to open`,
      );
    }
    const buf = await readFile(file);
    const end = buf.lastIndexOf(0x0a) + 1;
    if (end < buf.length) {
      const h = await open(file, "r+");
      try {
        await h.truncate(end);
        await h.datasync();
      } finally {
        await h.close();
      }
      notes.push(
        `truncated ${buf.length - end} bytes of a record cut short at the end of ${last.name} (a crash during a write)`,
      );
    }
    if (end === 0) {
      await unlink(file);
      await syncDir(dir);
      notes.push(`removed ${last.name}, which held no complete record`);
      segments.pop();
      continue;
    }
    const lines = buf.toString("utf8", 0, end - 1).split("\n");
    const corrupt = (line: number, why: string) =>
      new AuditCorruptError(
        `cannot continue the audit chain in ${dir}: ${last.name} line ${line}: ${why}; refusing to open (continuing would fork the chain or bury the damage) — run verifyChain to locate it`,
      );
    let header: unknown;
    try {
      header = JSON.parse(lines[0]!);
    } catch (err) {
      throw corrupt(1, `not JSON (${(err as Error).message})`);
    }
    const parsed = SegmentHeaderSchema.safeParse(header);
    if (!parsed.success) throw corrupt(1, `not a segment header: ${describeIssues(parsed.error)}`);
    const verifier = new ChainVerifier(null, {
      seq: parsed.data.firstSeq,
      prevHash: parsed.data.previousHash,
    });
    verifier.beginSegment(last.name, parsed.data.previous);
    for (let i = 0; i < lines.length; i++) {
      const err = verifier.pushLine(lines[i]!, i + 1);
      if (err)
        throw corrupt(err.line, `${err.kind}: ${err.message.replace(/^.*? line \d+: /, "")}`);
    }
    if (verifier.uncovered > 0) {
      notes.push(
        `entries seq ${verifier.coveredSeq + 1}..${verifier.nextSeq - 1} of ${last.name} were written but never signed before a crash; the next signature covers them`,
      );
    }
    return {
      index: last.index,
      size: end,
      nextSeq: verifier.nextSeq,
      lastHash: verifier.lastHash,
      coveredSeq: verifier.coveredSeq,
      notes,
    };
  }
}
