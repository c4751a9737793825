/**
 * Append-only JSON Lines journal of one session's budget: every reserve, settle and refund is
 * a line, fsync'd before the ledger call returns, and replayed on open — so a restarted sidecar
 * continues from what was really spent instead of from zero (otherwise killing the process
 * would be a way to reset the budget).
 *
 * Torn writes: a crash can leave the last line half-written. Such a line is dropped, reported
 * and cut from the file so the next append does not glue onto garbage. Dropping it is safe
 * because a record only counts once its fsync returned: a torn reserve was never granted, and a
 * torn settle/refund leaves its reservation pending, which replay counts as spent (fail closed).
 * A bad line anywhere else is not a torn write but tampering or a bug, and opening fails.
 */
import { constants, type FileHandle, open, readFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";

const amount = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const id = z.string().min(1).max(128);
const at = z.number().int().min(0);

export const journalRecordSchema = z.discriminatedUnion("t", [
  z.strictObject({
    t: z.literal("reserve"),
    id,
    op: z.string().min(1).max(512),
    tokens: amount,
    microUsd: amount,
    at,
    /** Set when a yolo ledger let a breaching call through: the breach stays on record. */
    breach: z.string().optional(),
  }),
  z.strictObject({ t: z.literal("settle"), id, tokens: amount, microUsd: amount, at }),
  z.strictObject({ t: z.literal("refund"), id, at }),
]);

export type JournalRecord = z.output<typeof journalRecordSchema>;

/**
 * "each": one write + fsync per record. "group": records queued during a flush share one.
 * "interval" (the sidecar's opt-in `audit.sync = interval`): a record counts once written —
 * it survives the process being killed, only a host crash can lose it — and one fsync follows
 * within INTERVAL_SYNC_MS; a failed fsync refuses every later record, as a failed write does.
 */
export type JournalSync = "each" | "group" | "interval";

/** How long a written record may wait for its fsync in "interval" mode. */
export const INTERVAL_SYNC_MS = 10;

export interface TornTail {
  /** 1-based line number of the dropped line. */
  readonly line: number;
  /** Bytes cut from the end of the file. */
  readonly bytes: number;
}

export class BudgetJournalError extends Error {
  override readonly name = "BudgetJournalError";
}

/** Session ids become file names: refuse anything that could climb out of the journal dir. */
const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function journalPath(dir: string, session: string): string {
  if (!SESSION_ID.test(session)) {
    throw new BudgetJournalError(
      `session id ${JSON.stringify(session)} cannot name a journal file: expected 1–128 characters of [A-Za-z0-9._-], not starting with "." "_" or "-"`,
    );
  }
  return path.join(dir, `${session}.budget.jsonl`);
}

interface Pending {
  readonly bytes: Buffer;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

export class BudgetJournal {
  private readonly queue: Pending[] = [];
  private flushing = false;
  /** "interval" mode: the pending background fsync, if one is due. */
  private syncTimer: NodeJS.Timeout | null = null;
  private syncing: Promise<void> | null = null;
  private closed = false;
  /** After a failed write the file's tail is unknown; every later append is refused. */
  private failure: Error | null = null;

  private constructor(
    readonly file: string,
    private readonly fh: FileHandle,
    private readonly sync: JournalSync,
  ) {}

  /** Opens (creating if absent) and reads the journal; a torn last line is cut off. */
  static async open(
    file: string,
    sync: JournalSync = "each",
  ): Promise<{ journal: BudgetJournal; records: JournalRecord[]; tornTail: TornTail | null }> {
    let raw: Buffer;
    let created = false;
    try {
      raw = await readFile(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
      raw = Buffer.alloc(0);
      created = true;
    }
    const { records, keepBytes, tornTail } = parseJournal(file, raw);
    // O_APPEND: every write lands at the end even if something else touched the file.
    const fh = await open(file, constants.O_RDWR | constants.O_CREAT | constants.O_APPEND, 0o600);
    try {
      if (tornTail) {
        await fh.truncate(keepBytes);
        await fh.sync();
      }
      if (created) await syncDir(path.dirname(file));
    } catch (e) {
      await fh.close();
      throw e;
    }
    return { journal: new BudgetJournal(file, fh, sync), records, tornTail };
  }

  /** Resolves once the record is on disk (fsync returned; written, in "interval" mode). */
  append(record: JournalRecord): Promise<void> {
    if (this.closed)
      return Promise.reject(new BudgetJournalError(`budget journal ${this.file} is closed`));
    if (this.failure) return Promise.reject(this.poisoned());
    const bytes = Buffer.from(`${JSON.stringify(record)}\n`, "utf8");
    return new Promise((resolve, reject) => {
      this.queue.push({ bytes, resolve, reject });
      if (!this.flushing) void this.flush();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    while (this.flushing) await new Promise((r) => setImmediate(r));
    // Whatever was acknowledged without its fsync goes to disk before the file is let go.
    if (this.syncTimer) {
      clearTimeout(this.syncTimer);
      this.syncTimer = null;
      this.syncing = this.backgroundSync();
    }
    await this.syncing;
    await this.fh.close();
  }

  /** "interval" mode: one fsync for everything written since the last. */
  private scheduleSync(): void {
    if (this.syncTimer || this.closed) return;
    this.syncTimer = setTimeout(() => {
      this.syncTimer = null;
      this.syncing = this.backgroundSync();
    }, INTERVAL_SYNC_MS);
  }

  private async backgroundSync(): Promise<void> {
    try {
      await this.fh.sync();
    } catch (e) {
      // Records were acknowledged on the strength of this fsync: from now on nothing more is
      // accepted (and never retried: a second fsync can report success after data was lost).
      this.failure ??= e instanceof Error ? e : new Error(String(e));
    }
  }

  private async flush(): Promise<void> {
    this.flushing = true;
    while (this.queue.length > 0) {
      const batch = this.sync === "each" ? this.queue.splice(0, 1) : this.queue.splice(0);
      try {
        const buf = batch.length === 1 ? batch[0]!.bytes : Buffer.concat(batch.map((p) => p.bytes));
        let off = 0;
        while (off < buf.length) {
          const { bytesWritten } = await this.fh.write(buf, off, buf.length - off);
          off += bytesWritten;
        }
        if (this.sync === "interval") this.scheduleSync();
        else await this.fh.sync();
        for (const p of batch) p.resolve();
      } catch (e) {
        this.failure = e instanceof Error ? e : new Error(String(e));
        const err = this.poisoned();
        for (const p of batch.concat(this.queue.splice(0))) p.reject(err);
      }
    }
    this.flushing = false;
  }

  private poisoned(): BudgetJournalError {
    return new BudgetJournalError(
      `budget journal ${this.file} failed a write (${this.failure?.message}); refusing further records`,
    );
  }
}

function parseJournal(
  file: string,
  raw: Buffer,
): { records: JournalRecord[]; keepBytes: number; tornTail: TornTail | null } {
  const records: JournalRecord[] = [];
  let start = 0;
  let line = 0;
  while (start < raw.length) {
    line++;
    const nl = raw.indexOf(0x0a, start);
    const end = nl === -1 ? raw.length : nl;
    const isLast = nl === -1 || nl === raw.length - 1;
    // A line without its newline was cut mid-write, even if the part that landed parses:
    // the record and its "\n" go down in one write, so its fsync never returned.
    const problem = nl === -1 ? "no newline" : parseLine(raw.subarray(start, end).toString("utf8"));
    if (typeof problem === "string") {
      if (isLast) {
        return { records, keepBytes: start, tornTail: { line, bytes: raw.length - start } };
      }
      throw new BudgetJournalError(
        `budget journal ${file} line ${line} is corrupt (${problem}); only a torn last line is tolerated`,
      );
    }
    records.push(problem);
    start = end + 1;
  }
  return { records, keepBytes: raw.length, tornTail: null };
}

/** The record, or why the line is not one. */
function parseLine(text: string): JournalRecord | string {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return "not JSON";
  }
  const r = journalRecordSchema.safeParse(value);
  if (r.success) return r.data;
  const first = r.error.issues[0]!;
  return `${first.path.join(".") || "record"}: ${first.message}`;
}

/** A new file's directory entry must be durable too, or a crash can lose the whole journal. */
async function syncDir(dir: string): Promise<void> {
  const dh = await open(dir, constants.O_RDONLY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
