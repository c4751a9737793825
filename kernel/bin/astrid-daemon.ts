/**
 * `astrid-daemon [--home DIR]`: the local kernel. Normally started by `astrid` when absent;
 * stops on `astrid stop`, SIGTERM, or when another daemon takes its home over.
 * Exit codes: 0 stopped; 1 failed to start; 3 another daemon already serves this home.
 */
import { parseArgs } from "node:util";
import { astridHome } from "../config/home.js";
import { Kernel } from "../daemon/daemon.js";
import { DaemonAlreadyRunningError } from "../ipc/lock.js";

const { values } = parseArgs({
  options: { home: { type: "string" }, help: { type: "boolean", short: "h" } },
});
if (values.help) {
  process.stdout.write(
    "usage: astrid-daemon [--home DIR]\n\nServes astrid clients on DIR/run/daemon.sock (default $ASTRID_HOME or ~/.astrid).\n",
  );
  process.exit(0);
}
const home = values.home ?? astridHome(process.env);
const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
let kernel: Kernel;
try {
  kernel = await Kernel.start({ home, env: process.env, log });
} catch (err) {
  log(`astrid-daemon: ${(err as Error).message}`);
  process.exit(err instanceof DaemonAlreadyRunningError ? 3 : 1);
}
for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.on(sig, () => void kernel.stop().then(() => process.exit(0)));
}
