import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ControlPlaneHandle,
  controllerManagerBuilt,
  controlPlaneToolsBuilt,
  kubeRequest,
  startControlPlane,
  toolsCacheDir,
} from "./control-plane.js";
import { type Kubelet, startKubelet } from "./kubelet.js";

const toolsBuilt = controlPlaneToolsBuilt() && controllerManagerBuilt();
if (!toolsBuilt) {
  console.warn(
    `kubelet harness tests SKIPPED: etcd/kube-apiserver/kube-controller-manager are not built in ${toolsCacheDir()}; run \`make tools\``,
  );
}

const NS = "kubelet-harness";

interface PodView {
  metadata: { name: string; uid: string };
  spec: { nodeName?: string };
  status: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    initContainerStatuses?: ContainerStatusView[];
    containerStatuses?: ContainerStatusView[];
  };
}

interface ContainerStatusView {
  name: string;
  ready: boolean;
  restartCount: number;
  containerID?: string;
  state: {
    waiting?: { reason: string; message?: string };
    running?: { startedAt: string };
    terminated?: { exitCode: number; reason: string; message?: string };
  };
  lastState: { terminated?: { exitCode: number; reason: string } };
}

/** A `node -e` container of the test image: the script is the container's args. */
const script = (name: string, code: string, extra: Record<string, unknown> = {}) => ({
  name,
  image: "test/node:1",
  args: ["-e", code],
  ...extra,
});

// Each test waits on real controllers and processes on 2 shared cores: a minute each, and
// until() gives up first so a failure names what it waited for.
describe.skipIf(!toolsBuilt)(
  "kubelet harness (real control plane + controller-manager)",
  {
    timeout: 60_000,
  },
  () => {
    let cp: ControlPlaneHandle | undefined;
    let kubelet: Kubelet | undefined;
    let scratch = "";

    beforeAll(async () => {
      scratch = mkdtempSync(path.join(os.tmpdir(), "kubelet-test-"));
      cp = await startControlPlane({ controllerManager: true });
      kubelet = await startKubelet(cp, {
        images: {
          // The image's ENTRYPOINT is node, its port `http` is passed on in PORT.
          "test/node": { command: ["node"], cwd: scratch, portEnv: { http: "PORT" } },
        },
        restartBackoff: { initialMs: 200, maxMs: 1000 },
      });
      await api("POST", "/api/v1/namespaces", { metadata: { name: NS } }, 201);
    }, 120_000);
    afterAll(async () => {
      await kubelet?.stop();
      await cp?.stop();
      if (scratch) rmSync(scratch, { recursive: true, force: true });
    }, 60_000);

    const k = (): Kubelet => {
      if (!kubelet) throw new Error("kubelet did not start");
      return kubelet;
    };

    async function api(method: string, p: string, body?: unknown, expected?: number) {
      if (!cp) throw new Error("control plane did not start");
      const res = await kubeRequest(cp, method, p, body);
      if (expected !== undefined && res.status !== expected) {
        throw new Error(`${method} ${p}: ${res.status} ${JSON.stringify(res.body)}`);
      }
      return res;
    }

    async function until<T>(what: string, check: () => Promise<T | undefined>): Promise<T> {
      const deadline = Date.now() + 45_000;
      for (;;) {
        const v = await check();
        if (v !== undefined) return v;
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }

    const getPod = async (name: string) => {
      const res = await api("GET", `/api/v1/namespaces/${NS}/pods/${name}`);
      return res.status === 200 ? (res.body as PodView) : undefined;
    };

    /** Waits until the pod satisfies `ok`, returning it. */
    const podWhen = (name: string, what: string, ok: (p: PodView) => boolean) =>
      until(`pod ${name} ${what}`, async () => {
        const p = await getPod(name);
        return p && ok(p) ? p : undefined;
      });

    const createPod = (name: string, spec: Record<string, unknown>) =>
      api("POST", `/api/v1/namespaces/${NS}/pods`, { metadata: { name }, spec }, 201);

    const pidOf = (s: ContainerStatusView | undefined) =>
      Number(/^harness:\/\/(\d+)$/.exec(s?.containerID ?? "")?.[1]);
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };

    it("runs a StatefulSet's pod: Running and Ready through the real StatefulSet controller", async () => {
      const server = `
      const fs = require("node:fs");
      fs.writeFileSync(process.env.DATA_DIR + "/hello", "from " + process.env.POD_NAME);
      require("node:http").createServer((req, res) => res.end(req.url)).listen(Number(process.env.PORT), "127.0.0.1");`;
      await api(
        "POST",
        `/apis/apps/v1/namespaces/${NS}/statefulsets`,
        {
          metadata: { name: "web" },
          spec: {
            serviceName: "web",
            replicas: 1,
            selector: { matchLabels: { app: "web" } },
            template: {
              metadata: { labels: { app: "web" } },
              spec: {
                containers: [
                  script("server", server, {
                    ports: [{ name: "http", containerPort: 8080 }],
                    env: [
                      { name: "DATA_DIR", value: "/var/lib/data" },
                      { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
                    ],
                    volumeMounts: [{ name: "data", mountPath: "/var/lib/data" }],
                    readinessProbe: {
                      httpGet: { path: "/readyz", port: "http" },
                      periodSeconds: 1,
                    },
                  }),
                ],
              },
            },
            volumeClaimTemplates: [
              {
                metadata: { name: "data" },
                spec: {
                  accessModes: ["ReadWriteOnce"],
                  resources: { requests: { storage: "1Mi" } },
                },
              },
            ],
          },
        },
        201,
      );
      const ready = await until("StatefulSet web readyReplicas = 1", async () => {
        const res = await api("GET", `/apis/apps/v1/namespaces/${NS}/statefulsets/web`);
        const sts = res.body as { status?: { readyReplicas?: number } };
        return sts.status?.readyReplicas === 1 ? sts : undefined;
      });
      expect(ready.status?.readyReplicas).toBe(1);

      const pod = (await getPod("web-0")) as PodView;
      expect(pod.spec.nodeName).toBe(k().nodeName);
      expect(pod.status.phase).toBe("Running");
      expect(pod.status.podIP).toBe("127.0.0.1");
      expect(pod.status.conditions?.find((c) => c.type === "Ready")?.status).toBe("True");
      // The declared port 8080 moved to a free loopback port, reachable as the test's scraper would.
      const port = k().hostPort(NS, "web-0", "http");
      expect(port).not.toBe(8080);
      expect(k().hostPort(NS, "web-0", 8080)).toBe(port);
      expect(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()).toBe("/metrics");
      // The claim the StatefulSet controller made is one host directory, outside the pod's.
      expect(readFileSync(path.join(k().claimPath(NS, "data-web-0"), "hello"), "utf8")).toBe(
        "from web-0",
      );
    });

    it("maps Secret and ConfigMap volumes, env sources and paths under mounts to host files", async () => {
      await api(
        "POST",
        `/api/v1/namespaces/${NS}/secrets`,
        {
          metadata: { name: "creds" },
          data: { "key.pem": Buffer.from("PRIVATE\n").toString("base64"), user: "YWxpY2U=" },
        },
        201,
      );
      await api(
        "POST",
        `/api/v1/namespaces/${NS}/configmaps`,
        { metadata: { name: "settings" }, data: { "Capsule.toml": "name = 'x'\n", mode: "safe" } },
        201,
      );
      const reader = `
      const fs = require("node:fs");
      const out = {
        key: fs.readFileSync(process.env.KEY_FILE, "utf8"),
        manifest: fs.readFileSync(process.argv[1], "utf8"),
        user: process.env.USER_NAME, mode: process.env.MODE, ns: process.env.NS,
        ip: process.env.POD_IP, greeting: process.env.GREETING, home: process.env.HOME_DIR,
      };
      fs.writeFileSync(process.env.RESULT_FILE, JSON.stringify(out));`;
      await createPod("reader", {
        restartPolicy: "Never",
        containers: [
          {
            ...script("main", reader),
            args: ["-e", reader, "/etc/astrid/manifest/Capsule.toml"],
            env: [
              { name: "KEY_FILE", value: "/etc/astrid/identity/key.pem" },
              { name: "RESULT_FILE", value: "/dev/termination-log" },
              {
                name: "USER_NAME",
                valueFrom: { secretKeyRef: { name: "creds", key: "user" } },
              },
              { name: "MODE", valueFrom: { configMapKeyRef: { name: "settings", key: "mode" } } },
              { name: "NS", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
              { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
              { name: "GREETING", value: "hello $(USER_NAME)" },
              // Not under any mount: left as it is.
              { name: "HOME_DIR", value: "/etc/astrid-not-mounted" },
            ],
            volumeMounts: [
              { name: "identity", mountPath: "/etc/astrid/identity", readOnly: true },
              { name: "manifest", mountPath: "/etc/astrid/manifest", readOnly: true },
            ],
          },
        ],
        volumes: [
          { name: "identity", secret: { secretName: "creds" } },
          { name: "manifest", configMap: { name: "settings" } },
        ],
      });
      const pod = await podWhen("reader", "Succeeded", (p) => p.status.phase === "Succeeded");
      const terminated = pod.status.containerStatuses?.[0]?.state.terminated;
      expect(terminated?.exitCode).toBe(0);
      expect(terminated?.reason).toBe("Completed");
      expect(JSON.parse(terminated?.message ?? "")).toEqual({
        key: "PRIVATE\n",
        manifest: "name = 'x'\n",
        user: "alice",
        mode: "safe",
        ns: NS,
        ip: "127.0.0.1",
        greeting: "hello alice",
        home: "/etc/astrid-not-mounted",
      });
    });

    it("runs init containers in order before the containers, sharing an emptyDir", async () => {
      const append = (letter: string) =>
        `require("node:fs").appendFileSync(process.env.WORK + "/trail", "${letter}")`;
      await createPod("ordered", {
        restartPolicy: "Never",
        initContainers: [script("first", append("a")), script("second", append("b"))].map((c) => ({
          ...c,
          env: [{ name: "WORK", value: "/work" }],
          volumeMounts: [{ name: "work", mountPath: "/work" }],
        })),
        containers: [
          {
            ...script(
              "main",
              `const fs = require("node:fs"); fs.writeFileSync(process.env.OUT, fs.readFileSync(process.env.WORK + "/trail", "utf8") + "c")`,
            ),
            env: [
              { name: "WORK", value: "/work" },
              { name: "OUT", value: "/dev/termination-log" },
            ],
            volumeMounts: [{ name: "work", mountPath: "/work" }],
          },
        ],
        volumes: [{ name: "work", emptyDir: {} }],
      });
      const pod = await podWhen("ordered", "Succeeded", (p) => p.status.phase === "Succeeded");
      expect(pod.status.initContainerStatuses?.map((s) => s.state.terminated?.reason)).toEqual([
        "Completed",
        "Completed",
      ]);
      expect(pod.status.containerStatuses?.[0]?.state.terminated?.message).toBe("abc");
    });

    it("a Never pod whose process fails is Failed with its exit code and termination message", async () => {
      await createPod("fails", {
        restartPolicy: "Never",
        containers: [
          {
            ...script(
              "main",
              `require("node:fs").writeFileSync(process.env.RESULT, '{"error":"boom"}'); console.error("dying"); process.exit(3)`,
            ),
            env: [{ name: "RESULT", value: "/tmp/result" }],
            terminationMessagePath: "/tmp/result",
          },
        ],
      });
      const pod = await podWhen("fails", "Failed", (p) => p.status.phase === "Failed");
      const s = pod.status.containerStatuses?.[0];
      expect(s?.state.terminated).toMatchObject({
        exitCode: 3,
        reason: "Error",
        message: '{"error":"boom"}',
      });
      expect(s?.restartCount).toBe(0);
      expect(k().logs(NS, "fails", "main")).toBe("dying\n");
    });

    it("restarts a crashing container of an Always pod with back-off", async () => {
      await createPod("crashy", {
        containers: [script("main", `console.log("up"); process.exit(2)`)],
      });
      const pod = await podWhen(
        "crashy",
        "restarted twice",
        (p) => (p.status.containerStatuses?.[0]?.restartCount ?? 0) >= 2,
      );
      expect(pod.status.phase).toBe("Running");
      expect(pod.status.containerStatuses?.[0]?.lastState.terminated).toMatchObject({
        exitCode: 2,
        reason: "Error",
      });
      expect(k().logs(NS, "crashy", "main")).toMatch(/^up\n\n--- restart 1\nup\n/);
    });

    it("kills and restarts a container whose liveness probe keeps failing", async () => {
      const sick = `require("node:http").createServer((req, res) => { res.statusCode = req.url === "/healthz" ? 500 : 200; res.end(); }).listen(Number(process.env.PORT), "127.0.0.1", () => console.log("serving"));`;
      await createPod("sick", {
        terminationGracePeriodSeconds: 1,
        containers: [
          script("main", sick, {
            ports: [{ name: "http", containerPort: 8080 }],
            livenessProbe: {
              httpGet: { path: "/healthz", port: "http" },
              periodSeconds: 1,
              failureThreshold: 2,
            },
          }),
        ],
      });
      const pod = await podWhen(
        "sick",
        "restarted",
        (p) => (p.status.containerStatuses?.[0]?.restartCount ?? 0) >= 1,
      );
      // Node's default SIGTERM handling ends the server: 128 + 15.
      expect(pod.status.containerStatuses?.[0]?.lastState.terminated?.exitCode).toBe(143);
      expect(k().logs(NS, "sick", "main")).toContain(
        "serving\n\n--- kubelet harness: liveness probe failed; restarting\n",
      );
    });

    it("reports an unmapped image as ErrImagePull and a missing Secret until it exists", async () => {
      await createPod("unmapped", { containers: [{ name: "main", image: "nginx:1.27" }] });
      const unmapped = await podWhen(
        "unmapped",
        "waiting on its image",
        (p) => p.status.containerStatuses?.[0]?.state.waiting !== undefined,
      );
      expect(unmapped.status.phase).toBe("Pending");
      expect(unmapped.status.containerStatuses?.[0]?.state.waiting).toEqual({
        reason: "ErrImagePull",
        message:
          'image "nginx:1.27" is not mapped by the kubelet harness (mapped: test/node); it cannot pull images',
      });

      await createPod("needs-secret", {
        restartPolicy: "Never",
        containers: [
          {
            ...script("main", "process.exit(0)"),
            env: [{ name: "T", valueFrom: { secretKeyRef: { name: "later", key: "t" } } }],
          },
        ],
      });
      const waiting = await podWhen(
        "needs-secret",
        "waiting on its Secret",
        (p) =>
          p.status.containerStatuses?.[0]?.state.waiting?.reason === "CreateContainerConfigError",
      );
      expect(waiting.status.containerStatuses?.[0]?.state.waiting?.message).toBe(
        'secret "later" not found',
      );
      await api(
        "POST",
        `/api/v1/namespaces/${NS}/secrets`,
        { metadata: { name: "later" }, data: { t: "eA==" } },
        201,
      );
      await podWhen("needs-secret", "Succeeded", (p) => p.status.phase === "Succeeded");
    });

    it("deletion sends SIGTERM, SIGKILLs after the grace period, then removes the pod", async () => {
      const marker = path.join(scratch, "polite-got-sigterm");
      await createPod("doomed", {
        terminationGracePeriodSeconds: 2,
        containers: [
          script(
            "polite",
            `process.on("SIGTERM", () => { require("node:fs").writeFileSync(${JSON.stringify(marker)}, "term"); process.exit(0); }); console.log("armed"); setInterval(() => {}, 1000);`,
          ),
          script(
            "stubborn",
            `process.on("SIGTERM", () => {}); console.log("armed"); setInterval(() => {}, 1000);`,
          ),
        ],
      });
      const running = await podWhen(
        "doomed",
        "Running with both containers up",
        (p) => p.status.containerStatuses?.every((s) => s.state.running) === true,
      );
      const pids = (running.status.containerStatuses ?? []).map(pidOf);
      expect(pids.every(alive)).toBe(true);
      // Running means started, not that node has installed the handlers yet.
      for (const c of ["polite", "stubborn"]) {
        await until(`${c} armed`, async () =>
          k().logs(NS, "doomed", c).includes("armed") ? true : undefined,
        );
      }

      await api("DELETE", `/api/v1/namespaces/${NS}/pods/doomed`, undefined, 200);
      await until("pod doomed gone", async () =>
        (await getPod("doomed")) === undefined ? true : undefined,
      );
      expect(readFileSync(marker, "utf8")).toBe("term");
      expect(pids.some(alive)).toBe(false);
    });

    it("the garbage collector deletes what a deleted owner owned (a StatefulSet's pod, a ConfigMap)", async () => {
      const owner = await api(
        "POST",
        `/api/v1/namespaces/${NS}/configmaps`,
        { metadata: { name: "owner" } },
        201,
      );
      const uid = (owner.body as { metadata: { uid: string } }).metadata.uid;
      await api(
        "POST",
        `/api/v1/namespaces/${NS}/configmaps`,
        {
          metadata: {
            name: "dependent",
            ownerReferences: [{ apiVersion: "v1", kind: "ConfigMap", name: "owner", uid }],
          },
        },
        201,
      );
      await api("DELETE", `/api/v1/namespaces/${NS}/configmaps/owner`, undefined, 200);
      await until("ConfigMap dependent collected", async () => {
        const res = await api("GET", `/api/v1/namespaces/${NS}/configmaps/dependent`);
        return res.status === 404 ? true : undefined;
      });

      // The StatefulSet of the first test: its pod goes through the collector, then the kubelet.
      const pod = (await getPod("web-0")) as PodView;
      const pid = pidOf(pod.status.containerStatuses?.[0]);
      expect(alive(pid)).toBe(true);
      await api("DELETE", `/apis/apps/v1/namespaces/${NS}/statefulsets/web`, undefined, 200);
      await until("pod web-0 collected", async () =>
        (await getPod("web-0")) === undefined ? true : undefined,
      );
      expect(alive(pid)).toBe(false);
      // The claim's directory outlives the pod, as a PersistentVolume would.
      expect(existsSync(path.join(k().claimPath(NS, "data-web-0"), "hello"))).toBe(true);
    });

    it("keeps a pod with a volume kind it does not emulate waiting, saying so", async () => {
      await createPod("hostpath", {
        containers: [
          {
            ...script("main", "process.exit(0)"),
            volumeMounts: [{ name: "host", mountPath: "/host" }],
          },
        ],
        volumes: [{ name: "host", hostPath: { path: "/etc" } }],
      });
      const pod = await podWhen(
        "hostpath",
        "waiting on its volumes",
        (p) => p.status.containerStatuses?.[0]?.state.waiting?.reason === "ContainerCreating",
      );
      expect(pod.status.phase).toBe("Pending");
      expect(pod.status.containerStatuses?.[0]?.state.waiting?.message).toBe(
        'volume "host" (hostPath): the kubelet harness emulates only configMap, secret, emptyDir and persistentVolumeClaim volumes',
      );
    });

    it("says which ports a pod has when asked for another", () => {
      expect(() => k().hostPort(NS, "crashy", "metrics")).toThrow(
        `pod ${NS}/crashy has no port "metrics" (declared: none)`,
      );
      expect(() => k().hostPort(NS, "nope", "metrics")).toThrow(
        `pod ${NS}/nope is not running on node astrid-harness`,
      );
    });

    // Last on purpose: it stops the kubelet the tests above share (afterAll's stop is then a no-op).
    it("stop() kills every pod process and removes its data directory", async () => {
      await createPod("long", { containers: [script("main", "setInterval(() => {}, 1000)")] });
      const long = await podWhen("long", "Running", (p) => p.status.phase === "Running");
      const pid = pidOf(long.status.containerStatuses?.[0]);
      expect(alive(pid)).toBe(true);
      await k().stop();
      expect(alive(pid)).toBe(false);
      expect(existsSync(k().dataDir)).toBe(false);
    });
  },
);
