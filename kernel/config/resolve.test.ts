import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { homeLayout, initHome } from "./home.js";
import { loadEffectiveConfig, workspaceConfigPath } from "./resolve.js";

describe("loadEffectiveConfig", () => {
  let root: string;
  let home: string;
  let workspace: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "astrid-resolve-"));
    home = join(root, ".astrid");
    workspace = join(root, "repo");
    await initHome(home);
    await mkdir(join(workspace, ".astrid"), { recursive: true });
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("merges the user's and the workspace's files from disk", async () => {
    await writeFile(homeLayout(home).config, `[defaults]\nmode = "autonomous"\n`);
    await writeFile(workspaceConfigPath(workspace), `[defaults]\nmode = "guided"\n`);
    const r = await loadEffectiveConfig(home, workspace);
    expect(r.config.defaults.mode).toBe("guided");
    expect(r.user.file).toBe(homeLayout(home).config);
    expect(r.workspace?.file).toBe(join(workspace, ".astrid", "config.toml"));
  });

  it("works without any file: the defaults", async () => {
    await rm(homeLayout(home).config);
    const r = await loadEffectiveConfig(home, workspace);
    expect(r.config.defaults.mode).toBe("guided");
    expect(r.workspace?.exists).toBe(false);
    expect(r.notices).toEqual([]);
  });

  it("refuses a user config others can write", async () => {
    const path = homeLayout(home).config;
    await chmod(path, 0o666);
    await expect(loadEffectiveConfig(home)).rejects.toThrow(
      `${path}: writable by others (mode 0666): anyone who can edit it can redirect your API key; run chmod 600 ${path}`,
    );
  });
});
