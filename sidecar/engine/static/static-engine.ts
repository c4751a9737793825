/**
 * The static engine: a capsule that is only context. It loads the prompts and context files its
 * manifest declares, once, at start (the package is immutable once installed), and answers
 * context.v1 requests with a ContextBundle of all of them or of the names asked for.
 */
import type { z } from "zod";
import type { Manifest } from "../../../core/manifest/schema.js";
import type { ContextBundle as ContextBundleSchema } from "../../../core/protocol/messages.js";
import { StaticEngineError } from "./errors.js";
import { readPackageText } from "./package-file.js";

export type StaticSection = Omit<Extract<Manifest["engine"], { type: "static" }>, "type">;
export type ContextBundle = z.infer<typeof ContextBundleSchema>;

export interface StaticEngineLimits {
  /** Largest prompt or context file. */
  readonly maxFileBytes: number;
  /** All prompts and files together: what one bundle can put in front of a model. */
  readonly maxTotalBytes: number;
}

export const DEFAULT_STATIC_LIMITS: StaticEngineLimits = {
  maxFileBytes: 1024 * 1024,
  maxTotalBytes: 4 * 1024 * 1024,
};

type Prompt = ContextBundle["prompts"][number];
type File = ContextBundle["files"][number];

export class StaticEngine {
  private constructor(
    private readonly prompts: ReadonlyMap<string, Prompt>,
    private readonly files: ReadonlyMap<string, File>,
  ) {}

  static async load(
    packageDir: string,
    section: StaticSection,
    limits: StaticEngineLimits = DEFAULT_STATIC_LIMITS,
  ): Promise<StaticEngine> {
    const prompts = new Map<string, Prompt>();
    const files = new Map<string, File>();
    let total = 0;
    const count = (text: string, what: string) => {
      total += Buffer.byteLength(text);
      if (total > limits.maxTotalBytes) {
        throw new StaticEngineError(
          "too_large",
          `static context passes ${limits.maxTotalBytes} bytes at ${what}; expected prompts and files of at most ${limits.maxTotalBytes} bytes together`,
        );
      }
    };

    for (const p of section.prompts) {
      const what = `prompt ${JSON.stringify(p.name)}`;
      if (prompts.has(p.name)) {
        throw new StaticEngineError("invalid", `${what} is declared twice; expected unique names`);
      }
      let text: string;
      if (p.file !== undefined) {
        text = await readPackageText(packageDir, p.file, limits.maxFileBytes, what);
      } else {
        text = p.text ?? "";
        if (Buffer.byteLength(text) > limits.maxFileBytes) {
          throw new StaticEngineError(
            "too_large",
            `${what} has ${Buffer.byteLength(text)} bytes; the limit is ${limits.maxFileBytes} bytes`,
          );
        }
      }
      count(text, what);
      prompts.set(p.name, { name: p.name, text });
    }

    for (const f of section.context_files) {
      const what = `context file ${JSON.stringify(f.path)}`;
      if (files.has(f.path)) {
        throw new StaticEngineError("invalid", `${what} is declared twice; expected unique paths`);
      }
      const content = await readPackageText(packageDir, f.path, limits.maxFileBytes, what);
      count(content, what);
      files.set(f.path, { path: f.path, description: f.description, content });
    }
    return new StaticEngine(prompts, files);
  }

  /** Prompt names and file paths a request may ask for. */
  names(): { prompts: string[]; files: string[] } {
    return { prompts: [...this.prompts.keys()], files: [...this.files.keys()] };
  }

  /** Everything when `names` is absent; otherwise each name is a prompt name or a file path. */
  bundle(names?: readonly string[]): ContextBundle {
    if (names === undefined) {
      return {
        prompts: [...this.prompts.values()].map((p) => ({ ...p })),
        files: [...this.files.values()].map((f) => ({ ...f })),
      };
    }
    const unknown = names.filter((n) => !this.prompts.has(n) && !this.files.has(n));
    if (unknown.length > 0) {
      const known = this.names();
      const list = (xs: string[]) =>
        xs.length === 0 ? "none" : xs.map((x) => JSON.stringify(x)).join(", ");
      throw new StaticEngineError(
        "not_found",
        `unknown context name${unknown.length > 1 ? "s" : ""} ${list(unknown)}; known prompts: ${list(known.prompts)}; known files: ${list(known.files)}`,
      );
    }
    const wanted = new Set(names);
    return {
      prompts: [...this.prompts.values()].filter((p) => wanted.has(p.name)).map((p) => ({ ...p })),
      files: [...this.files.values()].filter((f) => wanted.has(f.path)).map((f) => ({ ...f })),
    };
  }
}
