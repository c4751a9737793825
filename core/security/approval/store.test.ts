import { generateKeyPairSync, sign, verify } from "node:crypto";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { canonicalJson } from "../../canonical-json.js";
import { type ApprovalAction, argsHash } from "./action.js";
import { GrantFileError } from "./grant-file.js";
import { type ApprovalAnswer, type ApprovalRequest, newApprovalRequest } from "./request.js";
import {
  type AlwaysGrantClaims,
  ApprovalStore,
  ApprovalStoreError,
  type CheckToken,
} from "./store.js";

/** A real signed token (Ed25519 over the canonical claims) standing in for layer 4. */
function tokenAuthority() {
  const { privateKey, publicKey } = generateKeyPairSync("ed25519");
  const revoked = new Set<string>();
  const minted: AlwaysGrantClaims[] = [];
  const mintToken = async (claims: AlwaysGrantClaims) => {
    minted.push(claims);
    const body = Buffer.from(canonicalJson(claims)).toString("base64url");
    return `${body}.${sign(null, Buffer.from(body), privateKey).toString("base64url")}`;
  };
  const checkToken: CheckToken = async (token, claims) => {
    const [body, sig] = token.split(".");
    if (!body || !sig || revoked.has(token)) return false;
    if (!verify(null, Buffer.from(body), publicKey, Buffer.from(sig, "base64url"))) return false;
    return Buffer.from(body, "base64url").toString() === canonicalJson(claims);
  };
  return { mintToken, checkToken, revoked, minted };
}

let dir: string;
let file: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "astrid-approval-"));
  file = path.join(dir, "grants.json");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const write = (target: string, content = "x"): ApprovalAction => ({
  kind: "fs_write",
  target,
  argsHash: argsHash({ content }),
});
const tool = (name: string, args: unknown): ApprovalAction => ({
  kind: "tool",
  target: name,
  argsHash: argsHash(args),
});

function request(
  action: ApprovalAction,
  over: { session?: string; workspace?: string } = {},
): ApprovalRequest {
  return newApprovalRequest({
    session: over.session ?? "s1",
    principal: "alice",
    capsule: "coder",
    action,
    reason: "test",
    timeoutMs: 1000,
    ...(over.workspace !== undefined ? { workspace: over.workspace } : {}),
  });
}
const answer = (decision: ApprovalAnswer["decision"]): ApprovalAnswer => ({
  decision,
  decidedBy: "alice",
  decidedAt: 42,
});
const ctx = { session: "s1", principal: "alice", capsule: "coder" };

describe("ApprovalStore", () => {
  it("allow_once and deny store nothing", async () => {
    const store = await ApprovalStore.open({ file, ...tokenAuthority() });
    for (const d of ["allow_once", "deny"] as const) {
      expect(await store.record(request(write("/w/a")), answer(d))).toBeNull();
    }
    expect(await store.lookup(write("/w/a"), ctx)).toBeNull();
    expect(store.grants()).toEqual([]);
  });

  it("a session grant matches the exact action, principal, capsule and session only", async () => {
    const store = await ApprovalStore.open({ file, ...tokenAuthority() });
    const r = request(write("/a/b"));
    const g = await store.record(r, answer("allow_session"));
    expect(g).toMatchObject({
      scope: "session",
      session: "s1",
      requestId: r.id,
      grantedBy: "alice",
    });
    expect(await store.lookup(write("/a/b"), ctx)).toEqual(g);
    // fs grants are about the path; other bytes to the same path are the same action.
    expect(await store.lookup(write("/a/b", "other content"), ctx)).toEqual(g);
    for (const other of ["/a/b/c", "/a/bc", "/a/b/../b", "/a"]) {
      expect(await store.lookup(write(other), ctx)).toBeNull();
    }
    expect(await store.lookup({ ...write("/a/b"), kind: "fs_read" }, ctx)).toBeNull();
    expect(await store.lookup(write("/a/b"), { ...ctx, session: "s2" })).toBeNull();
    expect(await store.lookup(write("/a/b"), { ...ctx, capsule: "other" })).toBeNull();
    expect(await store.lookup(write("/a/b"), { ...ctx, principal: "mallory" })).toBeNull();
    expect(store.endSession("s1")).toBe(1);
    expect(await store.lookup(write("/a/b"), ctx)).toBeNull();
  });

  it("tool grants are bound to the arguments' hash", async () => {
    const store = await ApprovalStore.open({ file, ...tokenAuthority() });
    await store.record(
      request(tool("github.create_issue", { repo: "a/b", title: "t" })),
      answer("allow_session"),
    );
    expect(
      await store.lookup(tool("github.create_issue", { title: "t", repo: "a/b" }), ctx),
    ).not.toBeNull();
    expect(
      await store.lookup(tool("github.create_issue", { repo: "a/c", title: "t" }), ctx),
    ).toBeNull();
  });

  it("a workspace grant is persisted and keyed by the workspace path", async () => {
    const auth = tokenAuthority();
    const store = await ApprovalStore.open({ file, ...auth });
    const g = await store.record(
      request(write("/w/a"), { workspace: "/w/" }),
      answer("allow_workspace"),
    );
    expect(g).toMatchObject({ scope: "workspace", workspace: "/w" });
    const reopened = await ApprovalStore.open({ file, ...auth });
    expect(
      await reopened.lookup(write("/w/a"), { ...ctx, session: "later", workspace: "/w" }),
    ).toEqual(g);
    expect(await reopened.lookup(write("/w/a"), { ...ctx, workspace: "/other" })).toBeNull();
    expect(await reopened.lookup(write("/w/a"), ctx)).toBeNull();
    expect((await stat(file)).mode & 0o777).toBe(0o600);
  });

  it("allow_workspace without a workspace is an error", async () => {
    const store = await ApprovalStore.open({ file, ...tokenAuthority() });
    const r = request(write("/w/a"));
    await expect(store.record(r, answer("allow_workspace"))).rejects.toThrow(
      new ApprovalStoreError(
        `allow_workspace needs a workspace, but approval request "${r.id}" has none`,
      ),
    );
    await expect(store.lookup({ ...write("/w/a"), target: "" }, ctx)).rejects.toThrow(
      new ApprovalStoreError(
        "invalid action at target: Too small: expected string to have >=1 characters",
      ),
    );
    await expect(store.lookup(write("/w/a"), { ...ctx, workspace: "rel" })).rejects.toThrow(
      'workspace must be an absolute path, got "rel"',
    );
  });

  it("allow_always mints a token for exactly that action; revoking the token ends the grant", async () => {
    const auth = tokenAuthority();
    const store = await ApprovalStore.open({ file, ...auth });
    const action = tool("github.create_issue", { repo: "a/b" });
    const g = await store.record(request(action), answer("allow_always"));
    expect(auth.minted).toEqual([
      {
        principal: "alice",
        capsule: "coder",
        kind: "tool",
        resource: "tool:github.create_issue",
        argsHash: action.argsHash,
      },
    ]);
    const reopened = await ApprovalStore.open({ file, ...auth });
    expect(await reopened.lookup(action, { ...ctx, session: "s9" })).toEqual(g);
    if (g?.scope !== "always") throw new Error("expected an always grant");
    auth.revoked.add(g.token);
    expect(await reopened.lookup(action, ctx)).toBeNull();
    expect(JSON.parse(await readFile(file, "utf8")).always).toEqual([]);
  });

  it("an fs always grant leaves the arguments out of the token claims", async () => {
    const auth = tokenAuthority();
    const store = await ApprovalStore.open({ file, ...auth });
    await store.record(request(write("/etc/hosts")), answer("allow_always"));
    expect(auth.minted[0]).toMatchObject({
      kind: "fs_write",
      resource: "fs:/etc/hosts",
      argsHash: null,
    });
  });

  it("a token that cannot be checked does not grant, but is kept", async () => {
    const auth = tokenAuthority();
    const store = await ApprovalStore.open({ file, ...auth });
    await store.record(request(write("/x")), answer("allow_always"));
    const unreachable = await ApprovalStore.open({
      file,
      mintToken: auth.mintToken,
      checkToken: async () => {
        throw new Error("revocation list unreachable");
      },
    });
    expect(await unreachable.lookup(write("/x"), ctx)).toBeNull();
    expect(JSON.parse(await readFile(file, "utf8")).always).toHaveLength(1);
  });

  it("refuses a grant file that does not parse", async () => {
    await writeFile(file, "{");
    await expect(ApprovalStore.open({ file, ...tokenAuthority() })).rejects.toThrow(
      new GrantFileError(`approval grant file ${file} is not JSON`),
    );
    await writeFile(
      file,
      JSON.stringify({ version: 1, workspace: [{ scope: "workspace" }], always: [] }),
    );
    await expect(ApprovalStore.open({ file, ...tokenAuthority() })).rejects.toThrow(
      `approval grant file ${file} is invalid at workspace.0.workspace: Invalid input: expected string, received undefined`,
    );
  });
});
