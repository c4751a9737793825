/**
 * The file holding lasting grants (workspace and always). Written atomically — temp file,
 * fsync, rename, fsync of the directory — so a crash leaves the old or the new set, never half
 * a file; mode 0600 because it holds capability tokens. A file that does not parse is an error,
 * not an empty set: silently dropping grants is harmless, but silently keeping a half-read file
 * could resurrect revoked ones, and the person should know either way.
 */
import { constants, open, readFile, rename, rm } from "node:fs/promises";
import path from "node:path";
import { z } from "zod";
import { approvalActionSchema } from "./action.js";

const base = {
  principal: z.string().min(1),
  capsule: z.string().min(1),
  action: approvalActionSchema,
  grantedBy: z.string().min(1),
  grantedAt: z.number().int().min(0),
  /** The approval request that created the grant (links the grant to its audit entry). */
  requestId: z.string().min(1),
};

export const workspaceGrantSchema = z.strictObject({
  scope: z.literal("workspace"),
  workspace: z.string().startsWith("/"),
  ...base,
});

export const alwaysGrantSchema = z.strictObject({
  scope: z.literal("always"),
  token: z.string().min(1),
  ...base,
});

export const grantFileSchema = z.strictObject({
  version: z.literal(1),
  workspace: z.array(workspaceGrantSchema),
  always: z.array(alwaysGrantSchema),
});

export type WorkspaceGrant = z.output<typeof workspaceGrantSchema>;
export type AlwaysGrant = z.output<typeof alwaysGrantSchema>;
export type GrantFile = z.output<typeof grantFileSchema>;

export class GrantFileError extends Error {
  override readonly name = "GrantFileError";
}

export async function readGrantFile(file: string): Promise<GrantFile> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT")
      return { version: 1, workspace: [], always: [] };
    throw e;
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new GrantFileError(`approval grant file ${file} is not JSON`);
  }
  const r = grantFileSchema.safeParse(json);
  if (r.success) return r.data;
  const first = r.error.issues[0]!;
  throw new GrantFileError(
    `approval grant file ${file} is invalid at ${first.path.join(".") || "(root)"}: ${first.message}`,
  );
}

export async function writeGrantFile(file: string, content: GrantFile): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(content, null, 2)}\n`, "utf8");
    await fh.sync();
  } catch (e) {
    await fh.close();
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  await rename(tmp, file);
  const dh = await open(path.dirname(file), constants.O_RDONLY);
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
