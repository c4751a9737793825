/**
 * Maps a key path of a parsed TOML document back to the line that wrote it. smol-toml returns
 * plain objects without positions, and a manifest error without a line sends the author hunting
 * through the file; this scanner walks the (already valid) source once and records where every
 * table, array-of-tables entry, key and array element starts.
 *
 * It runs only on text smol-toml accepted, so it can be lenient: it needs to find structure,
 * not to validate it.
 */

export type KeyPath = readonly (string | number)[];

export interface SourcePosition {
  /** 1-based. */
  readonly line: number;
  /** 1-based. */
  readonly column: number;
}

const pathKey = (path: KeyPath): string => JSON.stringify(path);

const BARE_KEY = /[A-Za-z0-9_-]/;

class Scanner {
  pos = 0;
  line = 1;
  lineStart = 0;
  readonly positions = new Map<string, SourcePosition>();
  /** Number of entries seen so far per array-of-tables path (resolved). */
  readonly arrayTables = new Map<string, number>();

  constructor(private readonly src: string) {}

  peek(offset = 0): string {
    return this.src[this.pos + offset] ?? "";
  }

  here(): SourcePosition {
    return { line: this.line, column: this.pos - this.lineStart + 1 };
  }

  advance(n = 1): void {
    for (let i = 0; i < n && this.pos < this.src.length; i++) {
      if (this.src[this.pos] === "\n") {
        this.line++;
        this.lineStart = this.pos + 1;
      }
      this.pos++;
    }
  }

  record(path: KeyPath, at: SourcePosition): void {
    const k = pathKey(path);
    if (!this.positions.has(k)) this.positions.set(k, at);
  }

  /** Spaces and tabs only; comments too when `comments`. */
  skipInline(): void {
    while (this.peek() === " " || this.peek() === "\t") this.advance();
    if (this.peek() === "#")
      while (this.pos < this.src.length && this.peek() !== "\n") this.advance();
  }

  /** Whitespace, newlines and comments. */
  skipAll(): void {
    for (;;) {
      const c = this.peek();
      if (c === " " || c === "\t" || c === "\r" || c === "\n") this.advance();
      else if (c === "#") while (this.pos < this.src.length && this.peek() !== "\n") this.advance();
      else return;
    }
  }

  readString(): string {
    const quote = this.peek();
    const triple = this.src.startsWith(quote.repeat(3), this.pos);
    if (triple) {
      this.advance(3);
      while (this.pos < this.src.length) {
        if (quote === '"' && this.peek() === "\\") {
          this.advance(2);
          continue;
        }
        // A closing delimiter may be followed by up to two more quotes that belong to the content.
        if (this.src.startsWith(quote.repeat(3), this.pos)) {
          let n = 3;
          while (n < 5 && this.peek(n) === quote) n++;
          this.advance(n);
          return "";
        }
        this.advance();
      }
      return "";
    }
    const start = this.pos;
    this.advance();
    while (this.pos < this.src.length && this.peek() !== quote && this.peek() !== "\n") {
      if (quote === '"' && this.peek() === "\\") this.advance();
      this.advance();
    }
    this.advance();
    const raw = this.src.slice(start, this.pos);
    if (quote === "'") return raw.slice(1, -1);
    try {
      return JSON.parse(raw) as string;
    } catch {
      return raw.slice(1, -1);
    }
  }

  readKey(): string[] {
    const parts: string[] = [];
    for (;;) {
      this.skipInline();
      const c = this.peek();
      if (c === '"' || c === "'") {
        parts.push(this.readString());
      } else {
        const start = this.pos;
        while (BARE_KEY.test(this.peek()) && this.pos < this.src.length) this.advance();
        parts.push(this.src.slice(start, this.pos));
      }
      this.skipInline();
      if (this.peek() !== ".") return parts;
      this.advance();
    }
  }

  /** Resolves a header's key segments through any array-of-tables prefixes to their last entry. */
  resolve(segments: readonly string[]): (string | number)[] {
    const out: (string | number)[] = [];
    for (const s of segments) {
      out.push(s);
      const count = this.arrayTables.get(pathKey(out));
      if (count !== undefined) out.push(count - 1);
    }
    return out;
  }

  recordPrefixes(path: KeyPath, at: SourcePosition): void {
    for (let i = 1; i <= path.length; i++) this.record(path.slice(0, i), at);
  }

  value(path: KeyPath): void {
    const c = this.peek();
    if (c === '"' || c === "'") {
      this.readString();
    } else if (c === "[") {
      this.advance();
      let index = 0;
      for (;;) {
        this.skipAll();
        if (this.peek() === "]" || this.pos >= this.src.length) {
          this.advance();
          return;
        }
        const elementPath = [...path, index];
        this.record(elementPath, this.here());
        this.value(elementPath);
        this.skipAll();
        if (this.peek() === ",") {
          this.advance();
          index++;
        }
      }
    } else if (c === "{") {
      this.advance();
      for (;;) {
        this.skipAll();
        if (this.peek() === "}" || this.pos >= this.src.length) {
          this.advance();
          return;
        }
        if (this.peek() === ",") {
          this.advance();
          continue;
        }
        this.keyValue(path);
      }
    } else {
      while (this.pos < this.src.length && !",]}\n#".includes(this.peek())) this.advance();
    }
  }

  keyValue(table: KeyPath): void {
    const at = this.here();
    const key = [...table, ...this.readKey()];
    this.recordPrefixes(key, at);
    this.skipInline();
    if (this.peek() === "=") this.advance();
    this.skipInline();
    this.value(key);
  }

  document(): void {
    let table: KeyPath = [];
    for (;;) {
      this.skipAll();
      if (this.pos >= this.src.length) return;
      if (this.peek() === "[") {
        const at = this.here();
        const isArray = this.peek(1) === "[";
        this.advance(isArray ? 2 : 1);
        const segments = this.readKey();
        this.advance(isArray ? 2 : 1);
        if (isArray) {
          const parent = this.resolve(segments.slice(0, -1));
          const base = [...parent, segments[segments.length - 1] ?? ""];
          const count = (this.arrayTables.get(pathKey(base)) ?? 0) + 1;
          this.arrayTables.set(pathKey(base), count);
          table = [...base, count - 1];
        } else {
          table = this.resolve(segments);
        }
        this.recordPrefixes(table, at);
        continue;
      }
      this.keyValue(table);
    }
  }
}

/** Every key path of a TOML document with the position where it is first written. */
export function indexPositions(source: string): Map<string, SourcePosition> {
  const scanner = new Scanner(source);
  scanner.document();
  return scanner.positions;
}

/** Position of `path`, or of its nearest written ancestor (line 1 when none is written). */
export function locate(
  positions: Map<string, SourcePosition>,
  path: KeyPath,
): SourcePosition & { readonly exact: boolean } {
  for (let n = path.length; n > 0; n--) {
    const at = positions.get(pathKey(path.slice(0, n)));
    if (at) return { ...at, exact: n === path.length };
  }
  return { line: 1, column: 1, exact: path.length === 0 };
}

/** Convenience: locate one path in a source text. */
export function locateKey(
  source: string,
  path: KeyPath,
): SourcePosition & { readonly exact: boolean } {
  return locate(indexPositions(source), path);
}
