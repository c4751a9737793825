/**
 * Sessions on disk (`~/.astrid/sessions/<id>/`): who and where (meta.json), the conversation
 * (transcript.jsonl, appended and fsync'd turn by turn), and the usage so far (usage.json). The
 * audit chains, budget journals and grants of the session's capsules live beside them, so a
 * session continues exactly where it left off after a daemon restart.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import type { ChatMessage } from "../../core/protocol/messages.js";
import type { SecurityMode } from "../../core/security/modes/policy-table.js";

export interface SessionMeta {
  readonly id: string;
  readonly createdAt: string;
  readonly principal: string;
  readonly workspace: string;
  readonly mode: SecurityMode;
}

export interface Usage {
  inputTokens: number;
  outputTokens: number;
  costMicroUsd: number;
  turns: number;
}

export interface TranscriptEntry {
  readonly at: string;
  readonly role: "user" | "assistant";
  readonly text: string;
  readonly stdin?: string;
  readonly stopReason?: string;
}

const ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/** Sortable and unguessable: time first (so `session list` is in order), then randomness. */
export function newSessionId(now = Date.now()): string {
  return `${now.toString(36)}-${randomBytes(6).toString("base64url").replace(/[-_]/g, "x")}`;
}

export class SessionFiles {
  constructor(readonly root: string) {}

  dir(id: string): string {
    if (!ID.test(id)) throw new Error(`"${id}" is not a session id`);
    return path.join(this.root, id);
  }

  async create(meta: SessionMeta): Promise<void> {
    const dir = this.dir(meta.id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await atomicWrite(path.join(dir, "meta.json"), meta);
    await atomicWrite(path.join(dir, "usage.json"), {
      inputTokens: 0,
      outputTokens: 0,
      costMicroUsd: 0,
      turns: 0,
    } satisfies Usage);
  }

  async meta(id: string): Promise<SessionMeta> {
    try {
      return JSON.parse(await readFile(path.join(this.dir(id), "meta.json"), "utf8"));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new Error(`no session "${id}" (see astrid session list)`);
      }
      throw err;
    }
  }

  async exists(id: string): Promise<boolean> {
    return this.meta(id).then(
      () => true,
      () => false,
    );
  }

  /** Appends one turn durably: a turn that was answered is never lost to a crash. */
  async append(id: string, entry: TranscriptEntry): Promise<void> {
    const fh = await open(path.join(this.dir(id), "transcript.jsonl"), "a", 0o600);
    try {
      await fh.write(`${JSON.stringify(entry)}\n`);
      await fh.datasync();
    } finally {
      await fh.close();
    }
  }

  async transcript(id: string): Promise<TranscriptEntry[]> {
    let text: string;
    try {
      text = await readFile(path.join(this.dir(id), "transcript.jsonl"), "utf8");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
    const out: TranscriptEntry[] = [];
    for (const line of text.split("\n")) {
      if (!line) continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        // A torn last line (crash mid-append) was never acknowledged; everything before it was.
      }
    }
    return out;
  }

  /** The conversation so far as chat messages, for the orchestrator. */
  async history(id: string): Promise<ChatMessage[]> {
    return (await this.transcript(id)).map((e) => ({ role: e.role, content: e.text }));
  }

  async usage(id: string): Promise<Usage> {
    return JSON.parse(await readFile(path.join(this.dir(id), "usage.json"), "utf8"));
  }

  async addUsage(
    id: string,
    u: { inputTokens: number; outputTokens: number; costMicroUsd?: number },
  ) {
    const now = await this.usage(id);
    now.inputTokens += u.inputTokens;
    now.outputTokens += u.outputTokens;
    now.costMicroUsd += u.costMicroUsd ?? 0;
    now.turns += 1;
    await atomicWrite(path.join(this.dir(id), "usage.json"), now);
    return now;
  }

  async list(): Promise<(SessionMeta & { usage: Usage })[]> {
    let names: string[];
    try {
      names = await readdir(this.root);
    } catch {
      return [];
    }
    const out: (SessionMeta & { usage: Usage })[] = [];
    for (const n of names.sort()) {
      if (!ID.test(n)) continue;
      try {
        out.push({ ...(await this.meta(n)), usage: await this.usage(n) });
      } catch {
        // a half-created folder is not a session
      }
    }
    return out;
  }

  async remove(id: string): Promise<void> {
    await this.meta(id);
    await rm(this.dir(id), { recursive: true, force: true });
  }
}

async function atomicWrite(file: string, value: unknown): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, file);
}
