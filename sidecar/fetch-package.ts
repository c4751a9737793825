/**
 * `astrid-sidecar fetch-package`: the init container of a capsule pod whose Capsule names its
 * package by URL (`spec.package.wasmRef`). Downloads the `.capsule` archive, checks it is the
 * one the Capsule resource pinned, and extracts it where the sidecar will load it.
 *
 * Three checks, each refusing before anything is visible in the destination:
 * - the archive passes core/package's reader (only plain files and directories, no path
 *   outside the destination, size and file-count limits);
 * - the package digest of what it holds equals `spec.package.digest` (a compromised or
 *   replaced artefact server cannot change what runs);
 * - its Capsule.toml is byte-identical to the manifest mounted from the Capsule resource: the
 *   operator derived the NetworkPolicy, NATS permissions and the graph from that manifest, so
 *   a package declaring other capabilities must not be the one that runs.
 *
 * The package is staged in a hidden directory on the destination's filesystem and moved in
 * only after every check passed, so a failure leaves the destination as it was. A destination
 * that exists (an emptyDir mount point, which cannot be replaced by a rename) gets the staged
 * entries moved into it one by one; an absent one is created by a single rename.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { digestPackage, PackageError, unpackArchive } from "../core/package/index.js";

export const DEFAULT_FETCH_TIMEOUT_MS = 120_000;
/** The largest archive accepted: core/package's limit on a whole package. */
export const DEFAULT_FETCH_MAX_BYTES = 64 * 1024 * 1024;
const STAGING_PREFIX = ".astrid-fetch-";

const FetchPackageSchema = z.strictObject({
  url: z
    .string()
    .regex(/^https?:\/\/\S+$/, "expected an http:// or https:// URL of a .capsule archive")
    .describe("URL of the `.capsule` archive (the Capsule's `spec.package.wasmRef`)."),
  digest: z
    .string()
    .regex(/^sha256:[0-9a-f]{64}$/, "expected sha256:<64 lowercase hex digits>")
    .describe(
      "`sha256:<hex>` package digest as astrid-build prints it (the Capsule's `spec.package.digest`).",
    ),
  dest: z
    .string()
    .min(1)
    .describe("Directory to extract into; must be absent or empty (the `package` volume)."),
  manifest: z
    .string()
    .min(1)
    .describe("The Capsule resource's manifest; the package's Capsule.toml must equal it."),
  timeoutMs: z
    .number()
    .int()
    .min(1)
    .default(DEFAULT_FETCH_TIMEOUT_MS)
    .describe("How long the download may take."),
  maxBytes: z
    .number()
    .int()
    .min(1)
    .max(DEFAULT_FETCH_MAX_BYTES)
    .default(DEFAULT_FETCH_MAX_BYTES)
    .describe("Largest archive accepted, in bytes."),
});

export type FetchPackageOptions = z.output<typeof FetchPackageSchema>;
type FieldName = keyof FetchPackageOptions;

const kebab = (s: string): string => s.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
/** `--timeout-ms` / `ASTRID_FETCH_TIMEOUT_MS`, from the field name. */
const FIELDS = (Object.keys(FetchPackageSchema.shape) as FieldName[]).map((key) => ({
  key,
  flag: `--${kebab(key)}`,
  env: `ASTRID_FETCH_${kebab(key).replace(/-/g, "_").toUpperCase()}`,
  integer: key === "timeoutMs" || key === "maxBytes",
  description: FetchPackageSchema.shape[key].description ?? "",
}));

export class FetchPackageConfigError extends Error {
  override readonly name = "FetchPackageConfigError";
  constructor(readonly issues: readonly string[]) {
    super(issues.join("\n"));
  }
}

export function fetchPackageHelp(): string {
  const lines = [
    "Usage: astrid-sidecar fetch-package [--FLAG VALUE ...]",
    "",
    "Downloads a .capsule archive, checks its sha256 digest, extracts it into DEST and checks",
    "its Capsule.toml is byte-identical to MANIFEST. Exit 0 when done, 1 when a check or the",
    "download fails (nothing is left in DEST), 2 on bad configuration.",
    "",
    "Flags (each also an environment variable; a flag wins):",
  ];
  for (const f of FIELDS) {
    const unset = FetchPackageSchema.shape[f.key].safeParse(undefined);
    const d = unset.success ? ` Default ${String(unset.data)}.` : " Required.";
    lines.push(
      `  ${f.flag} ${f.integer ? "INTEGER" : "VALUE"}`,
      `      ${f.description} Env ${f.env}.${d}`,
    );
  }
  lines.push("  --help", "      Print this text.");
  return `${lines.join("\n")}\n`;
}

/** Reads the subcommand's settings from flags over ASTRID_FETCH_* variables; all errors at once. */
export function fetchPackageConfig(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): FetchPackageOptions | "help" {
  const issues: string[] = [];
  const raw: Record<string, unknown> = {};
  const source = new Map<string, string>();
  const put = (f: (typeof FIELDS)[number], text: string, where: string): void => {
    if (f.integer && !/^[0-9]+$/.test(text)) {
      issues.push(`${where}: ${f.key}: expected an integer, got ${JSON.stringify(text)}`);
      return;
    }
    raw[f.key] = f.integer ? Number(text) : text;
    source.set(f.key, where);
  };
  for (const f of FIELDS) {
    const text = env[f.env];
    if (text !== undefined && text !== "") put(f, text, `env ${f.env}`);
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--help" || arg === "-h") return "help";
    const eq = arg.indexOf("=");
    const name = eq >= 0 ? arg.slice(0, eq) : arg;
    const f = FIELDS.find((x) => x.flag === name);
    if (!f) {
      issues.push(
        name.startsWith("--")
          ? `flag ${name}: unknown flag; see astrid-sidecar fetch-package --help`
          : `argument ${JSON.stringify(arg)}: unexpected argument; every setting is a --flag`,
      );
      // The unknown flag's value is not reported again as a stray argument.
      if (
        name.startsWith("--") &&
        eq < 0 &&
        argv[i + 1] !== undefined &&
        !argv[i + 1]!.startsWith("--")
      )
        i++;
      continue;
    }
    const text = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (text === undefined) issues.push(`flag ${name}: expected a value after ${name}`);
    else put(f, text, `flag ${name}`);
  }
  const r = FetchPackageSchema.safeParse(raw);
  if (!r.success) {
    for (const iss of r.error.issues) {
      const key = String(iss.path[0] ?? "");
      if (issues.some((i) => i.includes(`: ${key}: `))) continue;
      const f = FIELDS.find((x) => x.key === key);
      const where = source.get(key);
      const message =
        raw[key] === undefined ? `required (set ${f?.env} or ${f?.flag})` : iss.message;
      issues.push([where, key, message].filter((x) => x).join(": "));
    }
  }
  if (issues.length > 0 || !r.success) throw new FetchPackageConfigError(issues);
  return r.data;
}

/** A refusal of the fetch: its message is the one stderr line the init container writes. */
export class FetchPackageError extends Error {
  override readonly name = "FetchPackageError";
  constructor(
    readonly code: "download" | "too-large" | "digest" | "archive" | "manifest" | "dest",
    message: string,
  ) {
    super(message);
  }
}

async function download(o: FetchPackageOptions): Promise<Buffer> {
  const tooLarge = (): FetchPackageError =>
    new FetchPackageError(
      "too-large",
      `download ${o.url}: the archive is larger than ${o.maxBytes} bytes; expected at most ${o.maxBytes}`,
    );
  let res: Response;
  try {
    res = await fetch(o.url, { signal: AbortSignal.timeout(o.timeoutMs), redirect: "follow" });
  } catch (err) {
    const e = err as Error & { cause?: Error };
    const why =
      e.name === "TimeoutError"
        ? `no answer within ${o.timeoutMs} ms`
        : (e.cause?.message ?? e.message);
    throw new FetchPackageError("download", `download ${o.url}: ${why}`);
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new FetchPackageError(
      "download",
      `download ${o.url}: HTTP ${res.status} ${res.statusText}; expected 200`,
    );
  }
  const declared = Number(res.headers.get("content-length") ?? Number.NaN);
  if (declared > o.maxBytes) {
    await res.body?.cancel();
    throw tooLarge();
  }
  // Counted while reading: a server may omit or understate Content-Length.
  const chunks: Uint8Array[] = [];
  let total = 0;
  try {
    for await (const chunk of res.body ?? []) {
      total += chunk.byteLength;
      if (total > o.maxBytes) throw tooLarge();
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof FetchPackageError) throw err;
    const e = err as Error;
    const why =
      e.name === "TimeoutError" ? `no complete answer within ${o.timeoutMs} ms` : e.message;
    throw new FetchPackageError("download", `download ${o.url}: ${why}`);
  }
  return Buffer.concat(chunks);
}

/** The destination: absent, or an empty directory. */
async function destState(dest: string): Promise<"absent" | "empty"> {
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(dest);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "absent";
    throw new FetchPackageError("dest", `destination ${dest}: ${(err as Error).message}`);
  }
  if (!st.isDirectory()) {
    throw new FetchPackageError("dest", `destination ${dest} is not a directory`);
  }
  const entries = await readdir(dest);
  // A staging directory left by a run that was killed holds nothing that was moved in.
  for (const e of entries.filter((n) => n.startsWith(STAGING_PREFIX))) {
    await rm(path.join(dest, e), { recursive: true, force: true });
  }
  const rest = entries.filter((n) => !n.startsWith(STAGING_PREFIX));
  if (rest.length > 0) {
    throw new FetchPackageError(
      "dest",
      `destination ${dest} is not empty (holds ${rest.slice(0, 3).join(", ")}${rest.length > 3 ? ", …" : ""}); expected an empty or absent directory`,
    );
  }
  return "empty";
}

export interface FetchedPackage {
  readonly digest: string;
  readonly bytes: number;
  readonly entries: number;
}

/** Downloads, verifies and extracts the package. Throws FetchPackageError; DEST is untouched then. */
export async function fetchPackage(o: FetchPackageOptions): Promise<FetchedPackage> {
  const dest = path.resolve(o.dest);
  const state = await destState(dest);
  const data = await download(o);
  let expected: Buffer;
  try {
    expected = await readFile(o.manifest);
  } catch (err) {
    throw new FetchPackageError(
      "manifest",
      `cannot read the Capsule resource's manifest ${o.manifest}: ${(err as Error).message}`,
    );
  }

  const base = state === "absent" ? path.dirname(dest) : dest;
  await mkdir(base, { recursive: true });
  const staging = path.join(base, `${STAGING_PREFIX}${randomBytes(6).toString("hex")}`);
  const staged = path.join(staging, "package");
  const moved: string[] = [];
  try {
    await mkdir(staging, { mode: 0o700 });
    const archive = path.join(staging, "package.capsule");
    await writeFile(archive, data, { flag: "wx" });
    try {
      await unpackArchive(archive, staged);
    } catch (err) {
      if (!(err instanceof PackageError)) throw err;
      throw new FetchPackageError(
        "archive",
        `${o.url}: ${err.message.replace(`${archive}: `, "")}; nothing extracted`,
      );
    }
    // The package digest (what astrid-build prints and `astrid capsule install` checks), not
    // the archive's bytes: one number names a capsule in both shapes, whatever the compression.
    // Checked in staging, so a forged package never reaches DEST.
    const { digest } = await digestPackage(staged);
    if (digest !== o.digest) {
      throw new FetchPackageError(
        "digest",
        `digest mismatch: ${o.url} has ${digest}, expected ${o.digest}; nothing extracted`,
      );
    }
    const got = await readFile(path.join(staged, "Capsule.toml")).catch(() => undefined);
    if (got === undefined) {
      throw new FetchPackageError("manifest", `${o.url}: the package has no Capsule.toml`);
    }
    if (!got.equals(expected)) {
      throw new FetchPackageError(
        "manifest",
        `${o.url}: the package's Capsule.toml differs from the Capsule resource's manifest (${o.manifest}); nothing extracted`,
      );
    }
    const entries = await readdir(staged);
    if (state === "absent") await rename(staged, dest);
    else {
      for (const e of entries) {
        await rename(path.join(staged, e), path.join(dest, e));
        moved.push(e);
      }
    }
    return { digest, bytes: data.byteLength, entries: entries.length };
  } catch (err) {
    // Take back what was moved before the failure: the destination holds all or nothing.
    for (const e of moved) await rm(path.join(dest, e), { recursive: true, force: true });
    throw err instanceof FetchPackageError
      ? err
      : new FetchPackageError("dest", `extracting into ${dest}: ${(err as Error).message}`);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

export const FETCH_EXIT_OK = 0;
export const FETCH_EXIT_FAILED = 1;
export const FETCH_EXIT_USAGE = 2;

/** The subcommand: one stderr line per failure, one stdout line on success; the exit code. */
export async function runFetchPackage(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  out: { stdout: (s: string) => void; stderr: (s: string) => void } = {
    stdout: (s) => process.stdout.write(s),
    stderr: (s) => process.stderr.write(s),
  },
): Promise<number> {
  let o: FetchPackageOptions;
  try {
    const c = fetchPackageConfig(argv, env);
    if (c === "help") {
      out.stdout(fetchPackageHelp());
      return FETCH_EXIT_OK;
    }
    o = c;
  } catch (err) {
    if (!(err instanceof FetchPackageConfigError)) throw err;
    for (const i of err.issues) out.stderr(`astrid-sidecar fetch-package: ${i}\n`);
    return FETCH_EXIT_USAGE;
  }
  try {
    const r = await fetchPackage(o);
    out.stdout(
      `astrid-sidecar fetch-package: ${o.url} (${r.digest}, ${r.bytes} bytes) extracted into ${o.dest}\n`,
    );
    return FETCH_EXIT_OK;
  } catch (err) {
    out.stderr(`astrid-sidecar fetch-package: ${(err as Error).message}\n`);
    return FETCH_EXIT_FAILED;
  }
}
