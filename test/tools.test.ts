/**
 * The shipped tool capsules (shell, http, github) and the static context capsule, each under a
 * real sidecar on a real nats-server, called over the bus with a capability token: what their
 * manifests allow runs, what they do not is denied by the host and audited, and the capsules'
 * own caps, timeouts and error messages hold.
 */
import { generateKeyPairSync } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import type { AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AuditKeyring, verifyChain } from "../core/audit/index.js";
import type { Bus } from "../core/bus/bus.js";
import { connectNatsBus } from "../core/bus/nats.js";
import { loadManifest, type Manifest, parseManifest } from "../core/manifest/index.js";
import { decode, encode } from "../core/protocol/envelope.js";
import { subjects } from "../core/protocol/topics.js";
import { generateIssuerKey, TrustedKeys } from "../core/security/tokens/keys.js";
import { mintToken } from "../core/security/tokens/mint.js";
import { MemoryRevocationSet } from "../core/security/tokens/revocation/memory-revocation-set.js";
import { TokenVerifier } from "../core/security/tokens/verifier.js";
import { type AssembledSidecar, assembleSidecar } from "../sidecar/assemble.js";
import { TOKEN_HEADER } from "../sidecar/sidecar.js";
import {
  type FakeGitHub,
  RATE_LIMIT_RESET,
  startFakeGitHub,
} from "./fixtures/tools/fake-github.js";
import { type NatsServerHandle, startNatsServer } from "./harness/nats-server.js";

const CAPSULES = path.resolve("capsules");
const issuer = generateIssuerKey();
const identity = generateKeyPairSync("ed25519").privateKey;
const tokens = new TokenVerifier({
  keys: new TrustedKeys([issuer.publicKey]),
  revocations: new MemoryRevocationSet(),
});

let nats: NatsServerHandle;
let caller: Bus;
let root: string;
let workspace: string;
const buses: Bus[] = [];

function tokenFor(res: string[]) {
  return mintToken(
    {
      sub: "user:alice",
      res,
      perm: ["execute", "publish"],
      exp: Math.floor(Date.now() / 1000) + 600,
    },
    issuer,
  );
}

interface Running {
  readonly sidecar: AssembledSidecar;
  readonly auditDir: string;
}

/** One capsule under its own sidecar (autonomous: no person to ask), as the daemon runs it. */
async function start(
  dir: string,
  manifest: Manifest,
  env: Record<string, string> = {},
  label = manifest.package.name,
): Promise<Running> {
  const bus = await connectNatsBus({
    servers: nats.url,
    name: label,
    inboxPrefix: `_INBOX.${label}`,
    onError: () => {},
  });
  buses.push(bus);
  const auditDir = path.join(root, "audit", label);
  const sidecar = await assembleSidecar({
    packageDir: dir,
    manifest,
    bus,
    auditDir,
    identity: { key: identity, keyId: "tools-test" },
    tokens,
    requireCallerToken: true,
    grantIssuer: issuer,
    mode: "autonomous",
    workspace,
    home: root,
    stateDir: path.join(root, "state", label),
    env,
    logger: () => {},
  });
  // The sidecar's subscriptions reach the server with its next round trip; a call sent before
  // then would find no responder.
  await bus.flush();
  return { sidecar, auditDir };
}

/** The shipped manifest with its `net` line replaced: the test grants what a user would add. */
function withNet(capsule: string, net: string[]): Manifest {
  const file = path.join(CAPSULES, capsule, "Capsule.toml");
  const text = readFileSync(file, "utf8");
  const widened = text.replace(/^net = \[.*\]$/m, `net = ${JSON.stringify(net)}`);
  if (widened === text) throw new Error(`${file} has no single-line net = [...] to replace`);
  return parseManifest(widened, file);
}

async function call(tool: string, args: Record<string, unknown>, timeoutMs = 10_000) {
  const wire = encode(
    "tool.execute.request",
    {
      callId: `c-${Math.random().toString(36).slice(2)}`,
      tool,
      arguments: args,
      token: tokenFor([`tool:${tool}`]),
    },
    { session: "s1", principal: "user:alice", capsule: "caller" },
    { timeoutMs },
  );
  const reply = await caller.request(subjects.toolExecute(tool), wire, { timeoutMs });
  return decode(reply.data, { checkDeadline: false });
}

/** A tool result as "ok <text>" / "fail <text>", an error reply as "error <code> <message>". */
async function run(tool: string, args: Record<string, unknown>) {
  const env = await call(tool, args);
  if (env.kind === "error") {
    const b = env.body as { code: string; message: string };
    return `error ${b.code} ${b.message}`;
  }
  if (env.kind !== "tool.result") return `unexpected ${env.kind}`;
  const body = env.body as { content: { text?: string }[]; isError: boolean };
  return `${body.isError ? "fail" : "ok"} ${body.content.map((c) => c.text ?? "").join("")}`;
}

interface AuditLine {
  decision: string;
  layer: string;
  action: string;
  target: string;
}

function auditOf(dir: string): AuditLine[] {
  const lines: AuditLine[] = [];
  for (const f of readdirSync(dir)
    .filter((f) => f.endsWith(".jsonl"))
    .sort()) {
    for (const l of readFileSync(path.join(dir, f), "utf8").split("\n")) {
      if (!l) continue;
      const r = JSON.parse(l);
      if (r.type === "entry") lines.push(r);
    }
  }
  return lines;
}

async function closeAndVerify(r: Running) {
  await r.sidecar.close();
  const v = await verifyChain(r.auditDir, new AuditKeyring([["tools-test", identity]]));
  expect(v.ok, v.ok ? "" : v.error.message).toBe(true);
}

beforeAll(async () => {
  root = mkdtempSync(path.join(os.tmpdir(), "astrid-tools-"));
  workspace = path.join(root, "ws");
  mkdirSync(workspace);
  writeFileSync(path.join(workspace, "a.txt"), "alpha\n");
  writeFileSync(path.join(workspace, "b.txt"), "beta\n");
  // Over the host's 1 MiB cap per stream, so both caps show.
  writeFileSync(path.join(workspace, "big.txt"), "x".repeat(1024 * 1024 + 4096));
  nats = await startNatsServer();
  caller = await connectNatsBus({
    servers: nats.url,
    name: "caller",
    inboxPrefix: "_INBOX.caller",
    onError: () => {},
  });
  buses.push(caller);
}, 60_000);

afterAll(async () => {
  for (const b of buses) await b.close();
  await nats?.dispose();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe("shell capsule", () => {
  let shell: Running;
  beforeAll(async () => {
    const dir = path.join(CAPSULES, "shell");
    // Short enough that the timeout test is quick, long enough for ls on a busy machine.
    shell = await start(dir, await loadManifest(dir), { SHELL_TIMEOUT_MS: "2000" });
  });

  it("describes its one tool", async () => {
    const wire = encode(
      "tool.describe.request",
      {},
      { session: "s1", principal: "user:alice", capsule: "caller" },
      { timeoutMs: 5000 },
    );
    const reply = await caller.request(subjects.toolDescribe("shell"), wire, {
      timeoutMs: 5000,
      headers: { [TOKEN_HEADER]: tokenFor(["topic:tool.v1.describe.shell"]) },
    });
    const env = decode(reply.data, { checkDeadline: false });
    expect(env.kind).toBe("tool.describe.response");
    expect((env.body as { tools: { name: string }[] }).tools.map((t) => t.name)).toEqual(["run"]);
  });

  it("runs an allow-listed command in the workspace", async () => {
    expect(await run("run", { command: "ls", args: ["a.txt", "b.txt"] })).toBe(
      "ok exit code 0\n--- stdout ---\na.txt\nb.txt",
    );
  });

  it("reports a non-zero exit with its stderr as a failed result", async () => {
    // The host runs the resolved path, so ls names itself by it (/usr/bin/ls or /bin/ls).
    expect(await run("run", { command: "ls", args: ["missing.txt"] })).toMatch(
      /^fail exit code 2\n--- stderr ---\n(\/usr)?\/bin\/ls: cannot access 'missing\.txt': No such file or directory$/,
    );
  });

  it("is refused an unlisted command by the host, and the refusal is audited", async () => {
    const r = await run("run", { command: "rm", args: ["-rf", "a.txt"] });
    expect(r).toMatch(
      /^error denied shell\.run: HostError: gate: command "rm" matches no host_process rule/,
    );
    expect(readFileSync(path.join(workspace, "a.txt"), "utf8")).toBe("alpha\n");
    // A listed command with an argument shape the list does not name is refused the same way.
    expect(await run("run", { command: "git", args: ["status", "--short"] })).toMatch(
      /^error denied shell\.run: HostError: gate: /,
    );
    const denied = auditOf(shell.auditDir).filter((e) => e.decision === "deny");
    expect(denied).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ layer: "gate", action: "process.spawn", target: "rm" }),
      ]),
    );
  });

  it("refuses find -exec and git --output before asking the host", async () => {
    expect(await run("run", { command: "find", args: [".", "-exec", "rm", "{}", ";"] })).toBe(
      'fail refused: "find -exec" would write files or run commands the allow-list does not name; use a listed command directly',
    );
    expect(await run("run", { command: "git", args: ["diff", "--output=/tmp/x"] })).toBe(
      'fail refused: "git --output=/tmp/x" would write files or run commands the allow-list does not name; use a listed command directly',
    );
  });

  it("caps the output it returns and says what was cut", async () => {
    const r = await run("run", { command: "cat", args: ["big.txt"] });
    const shown = 64 * 1024;
    // The host kept 1 MiB of the file; the capsule shows 64 KiB of that and counts the rest.
    expect(r).toBe(
      `ok exit code 0\n--- stdout ---\n${"x".repeat(shown)}` +
        "\n[output truncated: the host keeps at most 1 MiB of each stream]" +
        `\n[stdout truncated: ${1024 * 1024 - shown} more bytes not shown]`,
    );
  });

  it("kills a command that outlives SHELL_TIMEOUT_MS", async () => {
    expect(await run("run", { command: "tail", args: ["-f", "a.txt"] })).toBe(
      "fail killed (SIGKILL): the command ran past its 2000 ms timeout or the call's deadline\n--- stdout ---\nalpha",
    );
  });

  afterAll(async () => closeAndVerify(shell));
});

describe("http capsule", () => {
  let server: http.Server;
  let base: string;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      if (req.url === "/big") {
        res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
        res.end("é".repeat(60 * 1024));
      } else if (req.url === "/echo") {
        const chunks: Buffer[] = [];
        req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          res.writeHead(201, { "content-type": "application/json", "x-noise": "1" });
          res.end(JSON.stringify({ method: req.method, got: Buffer.concat(chunks).toString() }));
        });
      } else if (req.url === "/logo.png") {
        res.writeHead(200, { "content-type": "image/png" });
        res.end(Buffer.from([0x89, 0x50, 0x4e, 0x47]));
      } else {
        res.writeHead(404, { "content-type": "text/plain" });
        res.end("no such page");
      }
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  });

  describe("with a manifest that lists the local server", () => {
    let h: Running;
    beforeAll(async () => {
      h = await start(path.join(CAPSULES, "http"), withNet("http", ["http://127.0.0.1:*"]));
    });
    afterAll(async () => closeAndVerify(h));

    it("fetches, showing the status, the useful headers and the body", async () => {
      expect(
        await run("fetch", {
          url: `${base}/echo`,
          method: "post",
          body: "hi",
          headers: { "x-a": "1" },
        }),
      ).toBe(`ok HTTP 201\ncontent-type: application/json\n\n{"method":"POST","got":"hi"}`);
    });

    it("marks a 4xx as a failed result and summarises a binary body", async () => {
      expect(await run("fetch", { url: `${base}/nope` })).toBe(
        "fail HTTP 404\ncontent-type: text/plain\n\nno such page",
      );
      expect(await run("fetch", { url: `${base}/logo.png` })).toBe(
        "ok HTTP 200\ncontent-type: image/png\n\n[binary body of 4 bytes not shown]",
      );
    });

    it("cuts a long body at 100 KiB on a character boundary, with a note", async () => {
      const r = await run("fetch", { url: `${base}/big` });
      // 2-byte characters: 51200 fit in 100 KiB exactly, 60 KiB of them is 122880 bytes.
      expect(r).toBe(
        `ok HTTP 200\ncontent-type: text/plain; charset=utf-8\n\n${"é".repeat(51200)}\n[body truncated at 102400 bytes: 20480 more bytes not shown]`,
      );
    });

    it("refuses a bad method with the methods it takes", async () => {
      expect(await run("fetch", { url: base, method: "TRACE" })).toBe(
        'fail invalid: method must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, got "TRACE"',
      );
    });
  });

  describe("with the shipped manifest", () => {
    let h: Running;
    beforeAll(async () => {
      const dir = path.join(CAPSULES, "http");
      h = await start(dir, await loadManifest(dir), {}, "http-shipped");
    });

    it("is refused loopback and private addresses, and the refusals are audited", async () => {
      expect(await run("fetch", { url: `${base}/echo` })).toMatch(
        /^error denied http\.fetch: HostError: gate: .*127\.0\.0\.1 is in a loopback range \(127\.0\.0\.0\/8\) and no rule lists it/,
      );
      expect(await run("fetch", { url: "http://169.254.169.254/latest/meta-data/" })).toMatch(
        /^error denied http\.fetch: HostError: gate: .*169\.254\.169\.254 is in a /,
      );
      const denied = auditOf(h.auditDir).filter((e) => e.decision === "deny");
      expect(denied.map((e) => [e.layer, e.action])).toEqual([
        ["gate", "net.http"],
        ["gate", "net.http"],
      ]);
    });

    afterAll(async () => closeAndVerify(h));
  });
});

describe("github capsule against a fake GitHub", () => {
  let gh: FakeGitHub;
  let g: Running;
  beforeAll(async () => {
    gh = await startFakeGitHub();
    g = await start(path.join(CAPSULES, "github"), withNet("github", ["http://127.0.0.1:*"]), {
      GITHUB_TOKEN: gh.token,
      GITHUB_API: gh.url,
    });
  });
  afterAll(async () => {
    await closeAndVerify(g);
    await gh.close();
  });

  it("lists issues without pull requests, sending the token as a Bearer header", async () => {
    expect(await run("list_issues", { repo: "acme/widgets" })).toBe(
      "ok #2 [open] Crash on empty config — @ada (labels: bug, p1)\n#1 [open] Document the CLI — @grace",
    );
    const sent = gh.requests.at(-1);
    expect(sent).toMatchObject({
      method: "GET",
      url: "/repos/acme/widgets/issues?state=open&per_page=30",
      authorization: `Bearer ${gh.token}`,
      accept: "application/vnd.github+json",
    });
    expect(await run("list_issues", { repo: "acme/widgets", state: "closed" })).toBe(
      "ok no closed issues in acme/widgets",
    );
  });

  it("creates an issue and returns its number and address", async () => {
    expect(
      await run("create_issue", {
        repo: "acme/widgets",
        title: "Flaky test",
        body: "It fails on Tuesdays.",
      }),
    ).toBe("ok created #5: https://github.com/acme/widgets/issues/5");
    const sent = gh.requests.at(-1);
    expect(sent?.method).toBe("POST");
    expect(sent?.authorization).toBe(`Bearer ${gh.token}`);
    expect(JSON.parse(sent?.body ?? "")).toEqual({
      title: "Flaky test",
      body: "It fails on Tuesdays.",
    });
  });

  it("reads an issue and maps a 404 to a clear message", async () => {
    expect(await run("get_issue", { repo: "acme/widgets", number: 2 })).toBe(
      "ok #2 [open] Crash on empty config (labels: bug, p1)\nby @ada on 2026-11-01T10:00:00Z, 3 comment(s)\nhttps://github.com/acme/widgets/issues/2\n\nStarting with an empty file panics.",
    );
    expect(await run("get_issue", { repo: "acme/widgets", number: 999 })).toBe(
      "fail not found: issue #999 of acme/widgets (GitHub also answers 404 for a private repository the token cannot see)",
    );
  });

  it("maps an exhausted rate limit to its reset time", async () => {
    const reset = new Date(RATE_LIMIT_RESET * 1000).toISOString();
    expect(await run("list_pulls", { repo: "acme/limited" })).toBe(
      `fail GitHub rate limit reached (5000 requests per hour used up); it resets at ${reset}`,
    );
  });

  it("lists pull requests and reads a file or a directory", async () => {
    expect(await run("list_pulls", { repo: "acme/widgets" })).toBe(
      "ok #4 [open] Add retries — retries → main by @linus\n#3 [open, draft] Try a new parser — parser → main by @ada",
    );
    expect(await run("get_file", { repo: "acme/widgets", path: "docs/README.md", ref: "v1" })).toBe(
      "ok # Widgets v1\n",
    );
    expect(gh.requests.at(-1)?.url).toBe("/repos/acme/widgets/contents/docs/README.md?ref=v1");
    expect(await run("get_file", { repo: "acme/widgets", path: "docs" })).toBe(
      "ok README.md\nguides/",
    );
  });

  it("keeps the token out of its results and its audit chain", async () => {
    const seen = await run("get_issue", { repo: "acme/widgets", number: 1 });
    expect(seen).not.toContain(gh.token);
    const chain = readdirSync(g.auditDir)
      .map((f) => readFileSync(path.join(g.auditDir, f), "utf8"))
      .join("");
    expect(chain).toContain('"secret.read"');
    expect(chain).not.toContain(gh.token);
  });

  it("refuses a repo or path that would leave the repository's endpoints", async () => {
    expect(await run("get_file", { repo: "acme/widgets", path: "../../../user" })).toBe(
      'fail invalid: path must be a path inside the repository, got "../../../user"',
    );
    expect(await run("list_issues", { repo: "acme/../users" })).toBe(
      'fail invalid: repo must be "owner/name", got "acme/../users"',
    );
  });
});

describe("github capsule with the shipped manifest", () => {
  it("may not reach an API base its net list does not name, and a bad token is explained", async () => {
    const gh = await startFakeGitHub();
    const dir = path.join(CAPSULES, "github");
    const g = await start(
      dir,
      await loadManifest(dir),
      { GITHUB_TOKEN: gh.token, GITHUB_API: gh.url },
      "github-shipped",
    );
    try {
      expect(await run("list_issues", { repo: "acme/widgets" })).toMatch(
        /^error denied github\.listIssues: HostError: gate: .*127\.0\.0\.1 is in a loopback range/,
      );
      expect(gh.requests).toEqual([]);
    } finally {
      await closeAndVerify(g);
    }
    const wrong = await start(
      dir,
      withNet("github", ["http://127.0.0.1:*"]),
      { GITHUB_TOKEN: "ghp_revoked", GITHUB_API: gh.url },
      "github-wrong-token",
    );
    try {
      expect(await run("list_issues", { repo: "acme/widgets" })).toBe(
        "fail GitHub refused the token (401 Bad credentials): check GITHUB_TOKEN",
      );
    } finally {
      await closeAndVerify(wrong);
      await gh.close();
    }
  });
});

describe("context capsule", () => {
  it("serves its prompt and files as a context bundle, all or by name", async () => {
    const dir = path.join(CAPSULES, "context");
    const manifest = await loadManifest(dir);
    expect(manifest.exports).toMatchObject({ astrid: { context: "1.0.0" } });
    const c = await start(dir, manifest);
    try {
      const ask = async (body: Record<string, unknown>) => {
        const wire = encode(
          "context.request",
          body,
          { session: "s1", principal: "user:alice", capsule: "caller" },
          { timeoutMs: 5000 },
        );
        const reply = await caller.request(subjects.contextGet("context"), wire, {
          timeoutMs: 5000,
          headers: { [TOKEN_HEADER]: tokenFor(["topic:context.v1.get.context"]) },
        });
        return decode(reply.data, { checkDeadline: false });
      };
      const all = await ask({});
      expect(all.kind).toBe("context.bundle");
      expect(all.body).toEqual({
        prompts: [
          { name: "system", text: readFileSync(path.join(dir, "prompts/system.md"), "utf8") },
        ],
        files: [
          {
            path: "notes/conventions.md",
            description: "How this workspace's code is written and tested",
            content: readFileSync(path.join(dir, "notes/conventions.md"), "utf8"),
          },
        ],
      });
      const one = await ask({ names: ["system"] });
      expect((one.body as { files: unknown[]; prompts: { name: string }[] }).files).toEqual([]);
      expect((one.body as { prompts: { name: string }[] }).prompts.map((p) => p.name)).toEqual([
        "system",
      ]);
    } finally {
      await closeAndVerify(c);
    }
  });
});
