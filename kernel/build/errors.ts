/** One error type for every refusal of `astrid-build`, with a code tests and the CLI can match. */

export type BuildErrorCode =
  /** A file the manifest or the build convention names is absent from the source folder. */
  | "missing-file"
  /** A source file is a link, device or escapes the source folder. */
  | "unsafe-source"
  /** esbuild could not produce one self-contained bundle. */
  | "bundle-failed"
  /** The bundle would reach for ambient authority (a Node built-in). */
  | "ambient-authority"
  /** The artefact does not provide what the manifest promises (a handler, memory, alloc). */
  | "missing-export"
  /** A prebuilt core module is not WebAssembly or would be refused by the engine. */
  | "bad-module"
  /** The output location would overwrite or contain the source. */
  | "bad-output";

export class BuildError extends Error {
  override readonly name = "BuildError";
  constructor(
    readonly code: BuildErrorCode,
    message: string,
  ) {
    super(message);
  }
}
