/** Shared by the audit tests: a key pair, a temp directory and a sample decision. */
import { generateKeyPairSync, type KeyObject } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { AuditEntryInput } from "./entry.js";
import { AuditKeyring } from "./signature.js";

export interface TestKeys {
  privateKey: KeyObject;
  publicKey: KeyObject;
  keyring: AuditKeyring;
}

export function testKeys(keyId = "sidecar-1"): TestKeys {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  return { privateKey, publicKey, keyring: new AuditKeyring([[keyId, publicKey]]) };
}

export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(path.join(tmpdir(), "astrid-audit-"));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export function decision(i: number, over: Partial<AuditEntryInput> = {}): AuditEntryInput {
  return {
    session: "sess-1",
    principal: "alice",
    capsule: "github-tools",
    layer: "gate",
    action: "fs.read",
    target: `/workspace/file-${i}.txt`,
    decision: "allow",
    reason: "fs_read rule 1 (cwd://**)",
    args: { path: `/workspace/file-${i}.txt`, n: i },
    ...over,
  };
}

/** The lines of a segment file (without the final empty string). */
export async function readLines(file: string): Promise<string[]> {
  const text = await readFile(file, "utf8");
  return text.split("\n").filter((l, i, all) => !(l === "" && i === all.length - 1));
}
