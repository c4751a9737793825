/**
 * One call for the CLI and the daemon: the user's config from `~/.astrid`, the workspace's from
 * `<workspace>/.astrid/config.toml`, merged tighten-only.
 */
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { ConfigError } from "./errors.js";
import { homeLayout } from "./home.js";
import { type ConfigFile, loadConfigFile } from "./load.js";
import { type EffectiveConfig, effectiveConfig } from "./tighten.js";

export function workspaceConfigPath(workspace: string): string {
  return join(workspace, ".astrid", "config.toml");
}

export interface ResolvedConfig extends EffectiveConfig {
  readonly user: ConfigFile;
  readonly workspace?: ConfigFile;
}

/**
 * Refuses a user config others may write: whoever can edit it can point `base_url` at their own
 * server and receive the user's API key with the next request.
 */
async function assertNotWritableByOthers(path: string): Promise<void> {
  let mode: number;
  try {
    mode = (await stat(path)).mode;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  if ((mode & 0o022) !== 0) {
    throw new ConfigError([
      {
        source: path,
        field: "",
        message: `writable by others (mode 0${(mode & 0o777).toString(8)}): anyone who can edit it can redirect your API key; run chmod 600 ${path}`,
      },
    ]);
  }
}

export async function loadEffectiveConfig(
  home: string,
  workspace?: string,
): Promise<ResolvedConfig> {
  const path = homeLayout(home).config;
  await assertNotWritableByOthers(path);
  const user = await loadConfigFile(path);
  const ws =
    workspace !== undefined ? await loadConfigFile(workspaceConfigPath(workspace)) : undefined;
  return { ...effectiveConfig(user, ws), user, ...(ws ? { workspace: ws } : {}) };
}
