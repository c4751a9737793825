/**
 * Revocation list in a local file, for the local shape: JSON lines `{"jti":…,"exp":…}` appended
 * by whoever revokes and watched live by every verifier (fs.watch on the directory, plus a
 * periodic stat because fs.watch misses events on some filesystems).
 *
 * Each record is written as "\n" + JSON + "\n": if a writer crashed mid-line, the next record
 * still starts on a fresh line, and the torn fragment (never acknowledged to its writer) is
 * skipped. A last line without its newline is kept back until the rest arrives.
 *
 * Single-use tokens are recorded as one marker file per jti in `<file>.used/`, created with
 * O_EXCL: exactly one process wins, even when several share the directory.
 */
import { type FSWatcher, watch } from "node:fs";
import {
  appendFile,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  stat,
  unlink,
  writeFile,
} from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { Availability } from "./availability.js";
import { ChangeListeners, PRUNE_MARGIN_SECONDS, type RevocationSet } from "./revocation-set.js";

export interface FileRevocationOptions {
  /** How long the file may be unreadable before verifiers deny. Default 5 s. */
  graceMs?: number;
  /** Stat fallback interval. Default 1 s. */
  pollMs?: number;
  clock?: () => number;
}

const record = z.object({ jti: z.string().min(1).max(64), exp: z.number() });

export class FileRevocationSet implements RevocationSet {
  private readonly revoked = new Map<string, number>();
  private readonly listeners = new ChangeListeners();
  private readonly availability: Availability;
  private readonly usedDir: string;
  private offset = 0;
  private inode = -1;
  private pending = "";
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private reading: Promise<void> | undefined;
  private again = false;

  private constructor(
    readonly file: string,
    opts: FileRevocationOptions,
  ) {
    this.availability = new Availability(opts.graceMs ?? 5000, opts.clock);
    this.usedDir = `${file}.used`;
  }

  /** Opens (creating if needed) the list and starts watching it. The directory must exist. */
  static async open(file: string, opts: FileRevocationOptions = {}): Promise<FileRevocationSet> {
    const set = new FileRevocationSet(path.resolve(file), opts);
    await (await open(set.file, "a")).close();
    await mkdir(set.usedDir, { recursive: true });
    await set.refresh();
    const unreadable = set.availability.failing;
    if (unreadable) throw new Error(`revocation file ${set.file} is not readable`);
    set.watcher = watch(path.dirname(set.file), () => void set.refresh());
    set.watcher.on("error", (err) => set.availability.fail(`watch failed: ${err.message}`));
    set.timer = setInterval(() => void set.refresh(), opts.pollMs ?? 1000);
    set.timer.unref();
    return set;
  }

  has(jti: string): boolean {
    return this.revoked.has(jti);
  }

  unavailable(): string | undefined {
    return this.availability.unavailable();
  }

  onChange(listener: (jti: string) => void): () => void {
    return this.listeners.add(listener);
  }

  async revoke(jti: string, exp: number): Promise<void> {
    await appendFile(this.file, `\n${JSON.stringify({ jti, exp })}\n`);
    this.apply(jti, exp);
  }

  async markUsed(jti: string, exp: number): Promise<boolean> {
    if (!/^[A-Za-z0-9_-]{1,64}$/.test(jti)) throw new Error(`jti "${jti}" is not a safe file name`);
    try {
      const fh = await open(path.join(this.usedDir, jti), "wx");
      await fh.writeFile(String(exp));
      await fh.close();
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
      throw err;
    }
  }

  /** Re-reads the file now (the watcher and the timer call this too). */
  refresh(): Promise<void> {
    if (this.reading) {
      this.again = true;
      return this.reading;
    }
    this.reading = (async () => {
      do {
        this.again = false;
        await this.readNew();
      } while (this.again);
    })().finally(() => {
      this.reading = undefined;
    });
    return this.reading;
  }

  /**
   * Rewrites the file without entries past their exp (plus a margin) and deletes stale used
   * markers. Run by one owner: a revoke appended by another process during the rewrite is lost.
   */
  async compact(nowSeconds = Date.now() / 1000): Promise<void> {
    await this.refresh();
    const keep = [...this.revoked].filter(([, exp]) => exp + PRUNE_MARGIN_SECONDS >= nowSeconds);
    const tmp = `${this.file}.tmp-${process.pid}`;
    await writeFile(tmp, keep.map(([jti, exp]) => `${JSON.stringify({ jti, exp })}\n`).join(""));
    await rename(tmp, this.file);
    for (const name of await readdir(this.usedDir)) {
      const p = path.join(this.usedDir, name);
      const exp = Number(await readFile(p, "utf8").catch(() => "NaN"));
      if (exp + PRUNE_MARGIN_SECONDS < nowSeconds) await unlink(p).catch(() => {});
    }
    await this.refresh();
  }

  async close(): Promise<void> {
    this.watcher?.close();
    clearInterval(this.timer);
    await this.reading;
  }

  private async readNew(): Promise<void> {
    try {
      const st = await stat(this.file);
      if (st.ino !== this.inode || st.size < this.offset) {
        // Replaced (compaction) or truncated: start over from a clean mirror.
        this.inode = st.ino;
        this.offset = 0;
        this.pending = "";
        const before = new Set(this.revoked.keys());
        this.revoked.clear();
        await this.readFrom(st.size);
        for (const jti of before) if (!this.revoked.has(jti)) this.listeners.emit(jti);
      } else if (st.size > this.offset) {
        await this.readFrom(st.size);
      }
      this.availability.ok();
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      this.availability.fail(`cannot read ${this.file} (${e.code ?? e.message})`);
    }
  }

  private async readFrom(size: number): Promise<void> {
    const fh = await open(this.file, "r");
    try {
      const buf = Buffer.alloc(size - this.offset);
      const { bytesRead } = await fh.read(buf, 0, buf.length, this.offset);
      this.offset += bytesRead;
      const text = this.pending + buf.subarray(0, bytesRead).toString("utf8");
      const lines = text.split("\n");
      this.pending = lines.pop() ?? "";
      for (const line of lines) this.parseLine(line);
    } finally {
      await fh.close();
    }
  }

  private parseLine(line: string): void {
    if (line.trim() === "") return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      return; // a torn record: see the header comment
    }
    const r = record.safeParse(value);
    if (r.success) this.apply(r.data.jti, r.data.exp);
  }

  private apply(jti: string, exp: number): void {
    const had = this.revoked.has(jti);
    this.revoked.set(jti, Math.max(exp, this.revoked.get(jti) ?? 0));
    if (!had) this.listeners.emit(jti);
  }
}
