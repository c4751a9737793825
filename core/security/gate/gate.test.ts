import * as fs from "node:fs";
import * as os from "node:os";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RuleSyntaxError } from "../../manifest/capability-rules.js";
import { ManifestGate } from "./gate.js";

let base: string;
let gate: ManifestGate;

beforeAll(() => {
  base = fs.realpathSync(fs.mkdtempSync(`${os.tmpdir()}/astrid-gate-`));
  fs.mkdirSync(`${base}/ws/src`, { recursive: true });
  fs.mkdirSync(`${base}/home`);
  fs.writeFileSync(`${base}/ws/src/a.ts`, "a");
  fs.symlinkSync("/etc", `${base}/ws/etc`);
  gate = ManifestGate.fromEntries(
    {
      fs_read: ["cwd://**"],
      fs_write: ["cwd://out/**"],
      net: ["api.example.com"],
      host_process: ["git status"],
    },
    { workspace: `${base}/ws`, home: `${base}/home`, env: [{ name: "TOKEN", type: "secret" }] },
  );
});

afterAll(() => fs.rmSync(base, { recursive: true, force: true }));

describe("ManifestGate", () => {
  it("answers every kind of request in one place", async () => {
    const ok = (rule: string) => ({ allowed: true, layer: "gate", rule });
    expect(await gate.check({ kind: "read", path: "src/a.ts" })).toEqual(ok("cwd://**"));
    expect(await gate.check({ kind: "write", path: "out/b.txt" })).toEqual(ok("cwd://out/**"));
    expect(await gate.check({ kind: "url", url: "https://api.example.com/x" })).toEqual(
      ok("api.example.com"),
    );
    expect(
      await gate.check({
        kind: "connect",
        request: {
          scheme: "https",
          host: "api.example.com",
          port: 443,
          resolved: ["93.184.216.34"],
        },
      }),
    ).toEqual(ok("api.example.com"));
    expect(await gate.check({ kind: "spawn", command: "git", args: ["status"] })).toEqual(
      ok("git status"),
    );
    expect(await gate.check({ kind: "env", name: "TOKEN" })).toEqual(ok("env TOKEN (secret)"));
    expect(gate.isSecret("TOKEN")).toBe(true);
  });

  it("denies what no entry grants, with each layer's reason", async () => {
    const no = (reason: string) => ({ allowed: false, layer: "gate", reason });
    expect(await gate.check({ kind: "read", path: "etc/passwd" })).toEqual(
      no(
        `"${base}/ws/etc/passwd" resolves to "/etc/passwd" outside the workspace root "${base}/ws"`,
      ),
    );
    expect(await gate.check({ kind: "write", path: "src/a.ts" })).toEqual(
      no(
        `"${base}/ws/src/a.ts" is inside the workspace root "${base}/ws" but matches no fs_write rule`,
      ),
    );
    expect(
      await gate.check({ kind: "url", url: "https://169.254.169.254/latest/meta-data" }),
    ).toEqual(
      no(
        "https://169.254.169.254:443: 169.254.169.254 is in a link-local range (169.254.0.0/16) and no rule lists it",
      ),
    );
    expect(await gate.check({ kind: "spawn", command: "sh", args: ["-c", "id"] })).toEqual(
      no(`command "sh" matches no host_process rule`),
    );
    expect(await gate.check({ kind: "env", name: "AWS_SECRET_ACCESS_KEY" })).toEqual(
      no(`environment variable "AWS_SECRET_ACCESS_KEY" is not declared in the manifest`),
    );
  });

  it("with an empty manifest denies everything", async () => {
    const empty = new ManifestGate({ workspace: `${base}/ws`, home: `${base}/home` });
    for (const r of [
      { kind: "read", path: "src/a.ts" },
      { kind: "write", path: "out/x" },
      { kind: "url", url: "https://api.example.com/" },
      { kind: "spawn", command: "git", args: ["status"] },
      { kind: "env", name: "HOME" },
    ] as const) {
      expect((await empty.check(r)).allowed).toBe(false);
    }
  });

  it("refuses a manifest entry outside the grammar", () => {
    const build = () =>
      ManifestGate.fromEntries(
        { fs_read: ["cwd://../**"] },
        { workspace: `${base}/ws`, home: `${base}/home` },
      );
    expect(build).toThrow(RuleSyntaxError);
    expect(build).toThrow(`fs path "cwd://../**" contains a ".." segment`);
  });
});
