/**
 * `astrid-operator` (see operator/operator.ts for its configuration).
 * Exit codes: 0 stopped on SIGTERM; 1 failed to start; 2 bad configuration.
 */
import { KubeConfig } from "@kubernetes/client-node";
import { OperatorConfigError, type OperatorEnv, operatorEnv, startOperator } from "./operator.js";

async function main(): Promise<void> {
  let cfg: OperatorEnv;
  try {
    cfg = operatorEnv(process.env);
  } catch (err) {
    if (!(err instanceof OperatorConfigError)) throw err;
    process.stderr.write(`astrid-operator: ${err.message}\n`);
    process.exit(2);
  }
  const kc = new KubeConfig();
  kc.loadFromDefault();
  let running: Awaited<ReturnType<typeof startOperator>>;
  try {
    running = await startOperator(cfg, kc);
  } catch (err) {
    process.stderr.write(`astrid-operator: ${(err as Error).message}\n`);
    process.exit(1);
  }
  const stop = () =>
    void running.manager
      .stop()
      .then(() => running.close())
      .then(() => process.exit(0))
      .catch(() => process.exit(1));
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

await main();
