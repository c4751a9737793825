import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["{core,sidecar,operator,kernel,capsules,test}/**/*.test.ts"],
    // Tests start real servers (nats-server, later kube-apiserver); two cores is the budget.
    pool: "forks",
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
  },
});
