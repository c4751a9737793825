/**
 * Which folder is the Astrid home. Apart from home.ts (which creates and checks its contents) so
 * that `astrid -p`, which only needs the path, does not load key and budget code to learn it.
 */
import { homedir } from "node:os";
import { isAbsolute, join } from "node:path";

export type Env = Readonly<Record<string, string | undefined>>;

export class AstridHomeError extends Error {
  override readonly name = "AstridHomeError";
}

/**
 * `$ASTRID_HOME`, else `~/.astrid`. A relative ASTRID_HOME is refused: it would follow the
 * working directory, i.e. land inside whatever repository the user is in.
 */
export function astridHome(env: Env): string {
  const set = env.ASTRID_HOME;
  if (set !== undefined && set !== "") {
    if (!isAbsolute(set)) {
      throw new AstridHomeError(
        `ASTRID_HOME must be an absolute path, got ${JSON.stringify(set)}: a relative one would move with the working directory`,
      );
    }
    return set;
  }
  const home = env.HOME !== undefined && env.HOME !== "" ? env.HOME : homedir();
  return join(home, ".astrid");
}
