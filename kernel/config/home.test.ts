import { createPrivateKey } from "node:crypto";
import {
  chmod,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  AstridHomeError,
  astridHome,
  homeLayout,
  initHome,
  readHomeKey,
  sessionLayout,
} from "./home.js";
import { parseConfigText } from "./load.js";

const mode = async (p: string): Promise<number> => (await lstat(p)).mode & 0o777;

describe("astridHome", () => {
  it("is $ASTRID_HOME when set, else ~/.astrid", () => {
    expect(astridHome({ ASTRID_HOME: "/srv/astrid", HOME: "/home/u" })).toBe("/srv/astrid");
    expect(astridHome({ HOME: "/home/u" })).toBe("/home/u/.astrid");
    expect(astridHome({ ASTRID_HOME: "", HOME: "/home/u" })).toBe("/home/u/.astrid");
  });

  it("refuses a relative ASTRID_HOME", () => {
    expect(() => astridHome({ ASTRID_HOME: "astrid" })).toThrow(
      new AstridHomeError(
        'ASTRID_HOME must be an absolute path, got "astrid": a relative one would move with the working directory',
      ),
    );
  });
});

describe("homeLayout and sessionLayout", () => {
  it("names every path under the home", () => {
    const l = homeLayout("/h");
    expect(l).toEqual({
      home: "/h",
      config: "/h/config.toml",
      grants: "/h/grants.json",
      keys: "/h/keys",
      kernelKey: "/h/keys/kernel.pem",
      issuerKey: "/h/keys/issuer.pem",
      capsules: "/h/capsules",
      sessions: "/h/sessions",
      run: "/h/run",
      logs: "/h/logs",
      kv: "/h/state/kv",
    });
    expect(sessionLayout(l, "s-1")).toEqual({
      id: "s-1",
      dir: "/h/sessions/s-1",
      transcript: "/h/sessions/s-1/transcript.jsonl",
      usage: "/h/sessions/s-1/usage.json",
      budgetJournal: "/h/sessions/s-1/s-1.budget.jsonl",
      audit: "/h/sessions/s-1/audit",
    });
  });

  it("refuses session ids that could leave the sessions folder", () => {
    for (const id of ["..", "../x", "a/b", ".hidden", "", "x".repeat(129)]) {
      expect(() => sessionLayout(homeLayout("/h"), id)).toThrow(
        `session id ${JSON.stringify(id)} cannot name a session folder: expected 1–128 characters of [A-Za-z0-9._-], starting with a letter or digit`,
      );
    }
  });
});

describe("initHome", () => {
  let root: string;
  let home: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "astrid-home-"));
    home = join(root, "nested", ".astrid");
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("creates the layout with private modes, two distinct ed25519 keys and a starter config", async () => {
    const l = homeLayout(home);
    const r = await initHome(home);
    expect(r).toEqual({
      created: [
        l.home,
        l.keys,
        l.capsules,
        l.sessions,
        l.run,
        l.logs,
        l.kernelKey,
        l.issuerKey,
        l.config,
      ],
      tightened: [],
    });
    for (const d of [l.home, l.keys, l.capsules, l.sessions, l.run, l.logs]) {
      expect(await mode(d)).toBe(0o700);
    }
    for (const f of [l.kernelKey, l.issuerKey, l.config]) expect(await mode(f)).toBe(0o600);
    const kernel = await readHomeKey(l.kernelKey);
    const issuer = await readHomeKey(l.issuerKey);
    expect(kernel.asymmetricKeyType).toBe("ed25519");
    expect(issuer.asymmetricKeyType).toBe("ed25519");
    expect(kernel.equals(issuer)).toBe(false);
    const config = parseConfigText(await readFile(l.config, "utf8"), l.config);
    expect(config.config).toEqual(parseConfigText("", "x").config);
  });

  it("is idempotent and never replaces a key or the config", async () => {
    const l = homeLayout(home);
    await initHome(home);
    const before = await readFile(l.kernelKey, "utf8");
    await writeFile(l.config, '[defaults]\nmode = "safe"\n');
    expect(await initHome(home)).toEqual({ created: [], tightened: [] });
    expect(await readFile(l.kernelKey, "utf8")).toBe(before);
    expect(await readFile(l.config, "utf8")).toBe('[defaults]\nmode = "safe"\n');
  });

  it("creates only what is missing", async () => {
    const l = homeLayout(home);
    await initHome(home);
    await rm(l.issuerKey);
    await rm(l.logs, { recursive: true });
    expect(await initHome(home)).toEqual({ created: [l.logs, l.issuerKey], tightened: [] });
  });

  it("narrows loose permissions on existing folders and keys", async () => {
    const l = homeLayout(home);
    await initHome(home);
    await chmod(l.keys, 0o755);
    await chmod(l.kernelKey, 0o644);
    expect(await initHome(home)).toEqual({ created: [], tightened: [l.keys, l.kernelKey] });
    expect(await mode(l.keys)).toBe(0o700);
    expect(await mode(l.kernelKey)).toBe(0o600);
  });

  it("keeps an unusable key and says how to replace it", async () => {
    const l = homeLayout(home);
    await initHome(home);
    await writeFile(l.issuerKey, "not a key");
    await expect(initHome(home)).rejects.toThrow(
      `${l.issuerKey} is not a PEM private key; it is kept as it is: move it away to have a new one generated`,
    );
    expect(await readFile(l.issuerKey, "utf8")).toBe("not a key");
  });

  it("refuses a key of another type", async () => {
    const l = homeLayout(home);
    await initHome(home);
    const { generateKeyPairSync } = await import("node:crypto");
    const ec = generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey;
    await writeFile(l.kernelKey, ec.export({ type: "pkcs8", format: "pem" }) as string);
    await expect(initHome(home)).rejects.toThrow(
      `${l.kernelKey} is a ec key, expected ed25519; it is kept as it is: move it away to have a new one generated`,
    );
  });

  it("refuses a symlink where a key or a private folder belongs", async () => {
    const l = homeLayout(home);
    await mkdir(home, { recursive: true });
    const elsewhere = join(root, "shared-keys");
    await mkdir(elsewhere);
    await symlink(elsewhere, l.keys);
    await expect(initHome(home)).rejects.toThrow(
      `${l.keys} exists and is not a directory (a symlink): Astrid keeps private state there, so it must be a real folder`,
    );
    await rm(l.keys);
    await mkdir(l.keys, { mode: 0o700 });
    await symlink(join(elsewhere, "planted.pem"), l.kernelKey);
    await expect(initHome(home)).rejects.toThrow(
      `${l.kernelKey} exists and is not a regular file (a symlink); it is kept as it is: move it away to have a new key generated`,
    );
    // O_EXCL did not follow the link: nothing was written where it points.
    await expect(stat(join(elsewhere, "planted.pem"))).rejects.toThrow(/ENOENT/);
  });

  it("accepts a home that is itself a symlink", async () => {
    const real = join(root, "real-home");
    await mkdir(real, { mode: 0o700 });
    const link = join(root, "link-home");
    await symlink(real, link);
    const r = await initHome(link);
    expect(r.created).not.toContain(link);
    expect(r.created).toContain(homeLayout(link).kernelKey);
  });
});

describe("readHomeKey", () => {
  it("refuses a key others can read", async () => {
    const root = await mkdtemp(join(tmpdir(), "astrid-key-"));
    try {
      await initHome(root);
      const { kernelKey } = homeLayout(root);
      await chmod(kernelKey, 0o640);
      await expect(readHomeKey(kernelKey)).rejects.toThrow(
        `${kernelKey} is readable by others (mode 0640); run chmod 600 ${kernelKey}`,
      );
      await chmod(kernelKey, 0o600);
      const key = await readHomeKey(kernelKey);
      expect(key.equals(createPrivateKey(await readFile(kernelKey, "utf8")))).toBe(true);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
