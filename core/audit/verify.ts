/**
 * The chain verifier. It names the FIRST record it cannot vouch for, with file, line and seq, so
 * an investigator knows from which point on the log is not evidence.
 *
 * What it proves: every entry hashes to its `hash`; every `prev` is the hash before it; seqs run
 * 0, 1, 2… without gap or reordering across all segments; every segment header names the segment
 * before it and that segment's last hash (a deleted or swapped segment is named); and the last
 * entry is covered by a valid signature of a trusted key (per-entry signature or batch seal). The
 * signature is what stops an attacker who edits an entry and recomputes every hash after it: the
 * hashes alone would then be consistent again.
 * What it cannot prove alone: that entries were not cut off the END of the chain. Compare the
 * returned `lastHash`/`entries` with a head published elsewhere (audit.v1 topic, operator status).
 */
import { lstat, readFile } from "node:fs/promises";
import path from "node:path";
import {
  type AuditEntry,
  AuditEntrySchema,
  AuditRecordSchema,
  computeEntryHash,
  describeIssues,
  GENESIS_HASH,
  type SealRecord,
  type SegmentHeader,
} from "./entry.js";
import { listSegments, segmentFileName, splitLines } from "./segment-files.js";
import { type AuditKeyring, verifyChainHash } from "./signature.js";

export type ChainErrorKind =
  | "hash-mismatch"
  | "bad-link"
  | "bad-signature"
  | "unknown-key"
  | "seq-gap"
  | "seq-reorder"
  | "truncated"
  | "malformed"
  | "missing-segment"
  /** Entries at the end of the chain that no signature or seal covers. */
  | "unsigned";

export interface ChainError {
  kind: ChainErrorKind;
  /** Segment file name, or "<stream>" for verifyEntries. */
  file: string;
  /** 1-based line within the file (or position within the stream). */
  line: number;
  /** seq of the first entry the chain can no longer vouch for; null when it is not known. */
  seq: number | null;
  message: string;
}

export type VerifyResult =
  | {
      ok: true;
      entries: number;
      segments: number;
      lastHash: string;
      lastSeq: number | null;
      /** With `{ principal }`: that principal's entries, returned only when the whole chain verified. */
      principalEntries?: AuditEntry[];
    }
  | { ok: false; error: ChainError };

export interface VerifyOptions {
  /** Collect the entries of this principal (per-principal review of a verified chain). */
  principal?: string;
}

export interface ChainPosition {
  /** seq the next entry must carry. */
  seq: number;
  /** hash the next entry's `prev` must equal. */
  prevHash: string;
}

export const CHAIN_START: ChainPosition = { seq: 0, prevHash: GENESIS_HASH };

/**
 * Incremental verifier: feed records in order with `push`, then `finish`. Used by verifyChain,
 * verifyEntries and the writer's resume (which skips signatures: it only needs the links).
 */
export class ChainVerifier {
  entries = 0;
  nextSeq: number;
  lastHash: string;
  /** Highest seq covered by a verified signature or seal, -1 when none. */
  coveredSeq: number;
  #uncoveredAt: { file: string; line: number } | null = null;
  #file = "<stream>";
  #inFiles = false;
  #previousFile: string | null = null;
  #expectHeader = false;

  constructor(
    private readonly keyring: AuditKeyring | null,
    start: ChainPosition = CHAIN_START,
    /** Called with each entry once its hash and link are checked. */
    private readonly onEntry?: (e: AuditEntry) => void,
  ) {
    this.nextSeq = start.seq;
    this.lastHash = start.prevHash;
    this.coveredSeq = start.seq - 1;
  }

  /** Marks the start of a segment file: its first record must be that file's header. */
  beginSegment(file: string, previous: string | null = this.#inFiles ? this.#file : null): void {
    this.#previousFile = previous;
    this.#inFiles = true;
    this.#file = file;
    this.#expectHeader = true;
  }

  /** Number of entries at the tail not yet covered by a signature or seal. */
  get uncovered(): number {
    return this.nextSeq - 1 - this.coveredSeq;
  }

  pushLine(text: string, line: number): ChainError | null {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      return this.#fail("malformed", line, this.nextSeq, `not JSON (${(err as Error).message})`);
    }
    return this.push(value, line);
  }

  push(value: unknown, line: number): ChainError | null {
    // Entries are nearly every record: parse them with their own schema, skipping the union.
    const parsed =
      (value as { type?: unknown } | null)?.type === "entry"
        ? AuditEntrySchema.safeParse(value)
        : AuditRecordSchema.safeParse(value);
    if (!parsed.success) {
      return this.#fail(
        "malformed",
        line,
        this.nextSeq,
        `not an audit record: ${describeIssues(parsed.error)}`,
      );
    }
    const record = parsed.data;
    if (this.#expectHeader && record.type !== "segment") {
      return this.#fail(
        "malformed",
        line,
        this.nextSeq,
        `expected the segment header as the first record, found a ${record.type} record`,
      );
    }
    switch (record.type) {
      case "segment":
        return this.#header(record, line);
      case "entry":
        return this.#entry(record, line);
      case "seal":
        return this.#seal(record, line);
    }
  }

  /** Call after the last record: fails if the end of the chain is not signed. */
  finish(): ChainError | null {
    if (this.#uncoveredAt === null || this.uncovered === 0) return null;
    const first = this.coveredSeq + 1;
    return {
      kind: "unsigned",
      file: this.#uncoveredAt.file,
      line: this.#uncoveredAt.line,
      seq: first,
      message: `entries seq ${first}..${this.nextSeq - 1} are not covered by any signature or seal: they could have been appended or rewritten by anyone who can write the files`,
    };
  }

  #header(h: SegmentHeader, line: number): ChainError | null {
    if (!this.#expectHeader && this.#inFiles) {
      return this.#fail("malformed", line, this.nextSeq, "segment header in the middle of a file");
    }
    const inFiles = this.#inFiles;
    if (inFiles && h.segment !== this.#file) {
      return this.#fail(
        "bad-link",
        line,
        this.nextSeq,
        `header names itself ${h.segment}, expected ${this.#file}`,
      );
    }
    if (inFiles && h.previous !== this.#previousFile) {
      return this.#fail(
        "bad-link",
        line,
        this.nextSeq,
        `header names previous segment ${h.previous ?? "none"}, expected ${this.#previousFile ?? "none"}`,
      );
    }
    if (h.previousHash !== this.lastHash) {
      return this.#fail(
        "bad-link",
        line,
        this.nextSeq,
        `header links to previous hash ${h.previousHash}, but the chain so far ends in ${this.lastHash}`,
      );
    }
    if (h.firstSeq !== this.nextSeq) {
      return this.#fail(
        h.firstSeq > this.nextSeq ? "seq-gap" : "seq-reorder",
        line,
        this.nextSeq,
        `header says the segment starts at seq ${h.firstSeq}, expected ${this.nextSeq}`,
      );
    }
    this.#expectHeader = false;
    return null;
  }

  #entry(e: AuditEntry, line: number): ChainError | null {
    if (e.seq !== this.nextSeq) {
      return this.#fail(
        e.seq > this.nextSeq ? "seq-gap" : "seq-reorder",
        line,
        this.nextSeq,
        e.seq > this.nextSeq
          ? `found seq ${e.seq} where seq ${this.nextSeq} was expected: entries ${this.nextSeq}..${e.seq - 1} are missing`
          : `found seq ${e.seq} where seq ${this.nextSeq} was expected: entries are out of order`,
      );
    }
    if (e.prev !== this.lastHash) {
      return this.#fail(
        "bad-link",
        line,
        e.seq,
        `prev is ${e.prev}, but the entry before it hashes to ${this.lastHash}`,
      );
    }
    const actual = computeEntryHash(e);
    if (actual !== e.hash) {
      return this.#fail(
        "hash-mismatch",
        line,
        e.seq,
        `content hashes to ${actual}, but the entry records ${e.hash}: it was changed after it was written`,
      );
    }
    if (e.signature) {
      const err = this.#checkSignature(e.signature.keyId, e.hash, e.signature.sig, line, e.seq);
      if (err) return err;
      this.coveredSeq = e.seq;
    }
    if (this.coveredSeq === e.seq - 1) {
      this.#uncoveredAt = { file: this.#file, line };
    }
    this.lastHash = e.hash;
    this.nextSeq = e.seq + 1;
    this.entries++;
    this.onEntry?.(e);
    return null;
  }

  #seal(s: SealRecord, line: number): ChainError | null {
    const lastSeq = this.nextSeq - 1;
    const first = this.coveredSeq + 1;
    if (s.seq !== lastSeq || s.hash !== this.lastHash) {
      return this.#fail(
        "bad-signature",
        line,
        first,
        `seal attests seq ${s.seq} with hash ${s.hash}, but the chain at this point is seq ${lastSeq} with hash ${this.lastHash}: an entry of seq ${first}..${lastSeq} was changed (and hashes recomputed) after it was sealed`,
      );
    }
    const err = this.#checkSignature(s.keyId, s.hash, s.sig, line, first);
    if (err) return err;
    this.coveredSeq = s.seq;
    return null;
  }

  #checkSignature(
    keyId: string,
    hash: string,
    sig: string,
    line: number,
    seq: number,
  ): ChainError | null {
    // Without a keyring (the writer resuming its own chain) only presence is tracked.
    if (!this.keyring) return null;
    const key = this.keyring.get(keyId);
    if (!key) {
      return this.#fail("unknown-key", line, seq, `signed by key "${keyId}", which is not trusted`);
    }
    if (!verifyChainHash(key, hash, sig)) {
      return this.#fail(
        "bad-signature",
        line,
        seq,
        `signature by key "${keyId}" does not verify over hash ${hash}`,
      );
    }
    return null;
  }

  #fail(kind: ChainErrorKind, line: number, seq: number | null, message: string): ChainError {
    return { kind, file: this.#file, line, seq, message: `${this.#file} line ${line}: ${message}` };
  }
}

/**
 * A seq-gap where the expected seq turns up later is really a reordering (two entries swapped):
 * say so, since the remedy differs (nothing is missing, the order was forged).
 */
function reclassifyGap(err: ChainError, rest: Iterable<unknown>, restStart: number): ChainError {
  if (err.kind !== "seq-gap" || err.seq === null) return err;
  const needle = `"seq":${err.seq},`;
  let line = restStart;
  for (const item of rest) {
    const found =
      typeof item === "string"
        ? item.includes(needle) && item.includes('"type":"entry"')
        : (item as { type?: unknown; seq?: unknown } | null)?.type === "entry" &&
          (item as { seq?: unknown }).seq === err.seq;
    if (found) {
      return {
        ...err,
        kind: "seq-reorder",
        message: `${err.message.replace(/: entries \d+\.\.\d+ are missing$/, "")}; seq ${err.seq} appears later, at line ${line}: entries were reordered`,
      };
    }
    line++;
  }
  return err;
}

/** Verifies every segment of a chain directory, in order. */
export async function verifyChain(
  dir: string,
  keyring: AuditKeyring,
  opts: VerifyOptions = {},
): Promise<VerifyResult> {
  const segments = await listSegments(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [];
    throw err;
  });
  if (segments.length === 0) {
    // Fail closed: "no chain" must not read as "a valid chain of nothing" to a caller who
    // expected entries (an attacker's simplest edit is deleting everything).
    return {
      ok: false,
      error: {
        kind: "missing-segment",
        file: segmentFileName(1),
        line: 0,
        seq: 0,
        message: `${dir} holds no segment files (expected ${segmentFileName(1)})`,
      },
    };
  }
  const principalEntries: AuditEntry[] = [];
  const who = opts.principal;
  const verifier = new ChainVerifier(
    keyring,
    CHAIN_START,
    who === undefined ? undefined : (e) => e.principal === who && principalEntries.push(e),
  );
  let expectedIndex = 1;
  for (const seg of segments) {
    if (seg.index !== expectedIndex) {
      const missing = segmentFileName(expectedIndex);
      return {
        ok: false,
        error: {
          kind: "missing-segment",
          file: missing,
          line: 0,
          seq: verifier.nextSeq,
          message: `${missing} is missing (found ${seg.name} next): the entries from seq ${verifier.nextSeq} on cannot be vouched for`,
        },
      };
    }
    expectedIndex++;
    verifier.beginSegment(seg.name);
    const file = path.join(dir, seg.name);
    // A symlink or device in place of a segment (e.g. /dev/zero) is not evidence, and reading
    // one could never end.
    if (!(await lstat(file)).isFile()) {
      return {
        ok: false,
        error: {
          kind: "malformed",
          file: seg.name,
          line: 0,
          seq: verifier.nextSeq,
          message: `${seg.name} is not a regular file`,
        },
      };
    }
    const text = await readFile(file, "utf8");
    const { lines, tail } = splitLines(text);
    for (let i = 0; i < lines.length; i++) {
      const err = verifier.pushLine(lines[i]!, i + 1);
      if (err) return { ok: false, error: reclassifyGap(err, lines.slice(i + 1), i + 2) };
    }
    if (tail.length > 0) {
      const line = lines.length + 1;
      return {
        ok: false,
        error: {
          kind: "truncated",
          file: seg.name,
          line,
          seq: verifier.nextSeq,
          message: `${seg.name} line ${line}: the file ends in the middle of a record (${tail.length} bytes after the last newline)`,
        },
      };
    }
    if (lines.length === 0) {
      return {
        ok: false,
        error: {
          kind: "truncated",
          file: seg.name,
          line: 1,
          seq: verifier.nextSeq,
          message: `${seg.name} line 1: the segment is empty, expected at least its header`,
        },
      };
    }
  }
  const unsigned = verifier.finish();
  if (unsigned) return { ok: false, error: unsigned };
  return {
    ok: true,
    entries: verifier.entries,
    segments: segments.length,
    lastHash: verifier.lastHash,
    lastSeq: verifier.entries > 0 ? verifier.nextSeq - 1 : null,
    ...(who === undefined ? {} : { principalEntries }),
  };
}

/**
 * Verifies a stream of records (parsed objects or JSON lines), e.g. received from a remote
 * sidecar. `start` is where the stream picks up the chain (default: its beginning).
 */
export async function verifyEntries(
  records: Iterable<unknown> | AsyncIterable<unknown>,
  keyring: AuditKeyring,
  start: ChainPosition = CHAIN_START,
): Promise<VerifyResult> {
  const verifier = new ChainVerifier(keyring, start);
  const all = Array.isArray(records) ? (records as unknown[]) : null;
  let line = 0;
  for await (const record of records) {
    line++;
    const err =
      typeof record === "string" ? verifier.pushLine(record, line) : verifier.push(record, line);
    if (err) {
      return { ok: false, error: all ? reclassifyGap(err, all.slice(line), line + 1) : err };
    }
  }
  const unsigned = verifier.finish();
  if (unsigned) return { ok: false, error: unsigned };
  return {
    ok: true,
    entries: verifier.entries,
    segments: 0,
    lastHash: verifier.lastHash,
    lastSeq: verifier.entries > 0 ? verifier.nextSeq - 1 : null,
  };
}
