/**
 * Per-capsule NATS users end to end: the Capsule reconciler on a real etcd + kube-apiserver,
 * issuing users against a real nats-server in operator mode. The user in the Secret can use
 * exactly its manifest's ACL; the Secret is made once and kept across reconciles; an ACL
 * change issues a new user and revokes the old; deleting the Capsule revokes its user.
 */
import { connect, credsAuthenticator, type NatsConnection } from "@nats-io/transport-node";
import { Registry } from "prom-client";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type ControlPlaneHandle,
  controlPlaneToolsBuilt,
  startControlPlane,
} from "../../test/harness/control-plane.js";
import { CapsuleIdentities } from "../capsule/identity-secret.js";
import { capsuleReconciler, watchCapsules } from "../capsule/reconciler.js";
import { Capsules, NetworkPolicies, StatefulSets } from "../capsule/resources.js";
import { secretKeysFrom } from "../capsule/secret-refs.js";
import { IssuerStore } from "../identity/issuer.js";
import { Controller } from "../runtime/controller.js";
import { Manager } from "../runtime/manager.js";
import { ConfigMaps, type KubeObject, KubeRest, resourcePath, Secrets } from "../runtime/rest.js";
import { createNamespace, installCrds, kubeConfigFor, waitFor } from "../runtime/test-support.js";
import { WorkQueue } from "../runtime/workqueue.js";
import { NatsAccountRevoker } from "./account-revoker.js";
import { NATS_CREDS_KEY, NATS_PERMISSIONS_ANNOTATION, NATS_USER_ANNOTATION } from "./names.js";
import { type OperatorModeNats, startOperatorModeNats } from "./test-support.js";
import { accountSigner, issueNatsUser } from "./user-jwt.js";
import { NatsUsers } from "./user-secret.js";

const built = controlPlaneToolsBuilt();
const NS = "nats-users";
const DIGEST = `sha256:${"a".repeat(64)}`;

// biome-ignore lint/suspicious/noExplicitAny: the tests read deep into API objects
type Obj = KubeObject & Record<string, any>;

const manifest = (publish: string) => `[package]
name = "echo"
version = "1.0.0"
description = "test capsule"

[capabilities]
ipc_publish = ["${publish}"]
ipc_subscribe = ["tool.v1.call.echo"]

[wasm]
module = "main.js"
`;

describe.skipIf(!built)(
  "per-capsule NATS users (API server + nats-server in operator mode)",
  () => {
    let cp: ControlPlaneHandle;
    let rest: KubeRest;
    let manager: Manager;
    let queue: WorkQueue;
    let nats: OperatorModeNats;
    let revoker: NatsAccountRevoker;
    const conns: NatsConnection[] = [];
    const reconciles = new Map<string, number>();
    let natsUsers: NatsUsers;

    const get = (type: typeof Capsules, name: string) =>
      rest.request<Obj>("GET", resourcePath(type, NS, name)).catch(() => undefined);
    const putCapsule = (publish: string) =>
      rest.request<Obj>("PATCH", resourcePath(Capsules, NS, "echo"), {
        contentType: "application/apply-patch+yaml",
        query: { fieldManager: "test-user", force: true },
        body: {
          apiVersion: "astrid.dev/v1alpha1",
          kind: "Capsule",
          metadata: { name: "echo", namespace: NS },
          spec: {
            manifest: manifest(publish),
            package: { digest: DIGEST, wasmRef: "https://pkg.example/echo-1.0.0.capsule" },
            replicas: 1,
          },
        },
      });
    const credsOf = (secret: Obj) =>
      Buffer.from(secret.data?.[NATS_CREDS_KEY] ?? "", "base64").toString("utf8");
    const connectAs = async (creds: string) => {
      const nc = await connect({
        servers: nats.server.url,
        authenticator: credsAuthenticator(new TextEncoder().encode(creds)),
        inboxPrefix: "_INBOX.echo",
        maxReconnectAttempts: 0,
      });
      conns.push(nc);
      return nc;
    };
    /** The next error the server reports on `nc`, or "no error" after 3 s. */
    const nextError = (nc: NatsConnection) =>
      new Promise<string>((resolve) => {
        const timer = setTimeout(() => resolve("no error"), 3000);
        (async () => {
          for await (const s of nc.status()) {
            if (s.type === "error") {
              clearTimeout(timer);
              resolve(String((s as { error?: unknown }).error));
              return;
            }
          }
        })();
      });

    beforeAll(async () => {
      nats = await startOperatorModeNats();
      revoker = await NatsAccountRevoker.connect({
        servers: nats.server.url,
        systemCreds: nats.systemCreds,
        operatorSeed: nats.seedOf(nats.operatorSigningKey),
        account: nats.account.getPublicKey(),
      });
      cp = await startControlPlane();
      rest = new KubeRest(kubeConfigFor(cp));
      await createNamespace(rest, NS);
      await installCrds(rest, NS);
      manager = new Manager({ kubeConfig: kubeConfigFor(cp), informerDefaults: { namespace: NS } });
      natsUsers = new NatsUsers(
        manager.rest,
        accountSigner(nats.account.getPublicKey(), nats.seedOf(nats.accountSigningKey)),
        revoker,
      );
      queue = new WorkQueue({ name: "capsule" });
      watchCapsules(
        {
          capsules: manager.informer(Capsules),
          children: [
            manager.informer(ConfigMaps),
            manager.informer(StatefulSets),
            manager.informer(NetworkPolicies),
          ],
        },
        queue,
      );
      const reconcile = capsuleReconciler(manager.client, {
        sidecarImage: "registry.example.com/astrid/astrid:1.0.0",
        busUrl: nats.server.url,
        issuers: new IssuerStore(manager.rest),
        identities: new CapsuleIdentities(manager.rest),
        secretKeys: secretKeysFrom(manager.rest),
        natsUsers,
      });
      manager.addController(
        new Controller({
          name: "capsule",
          queue,
          registry: new Registry(),
          reconcile: async (key) => {
            try {
              return await reconcile(key);
            } finally {
              reconciles.set(key, (reconciles.get(key) ?? 0) + 1);
            }
          },
        }),
      );
      await manager.start();
    }, 120_000);

    afterAll(async () => {
      for (const c of conns) await c.close().catch(() => {});
      await manager?.stop();
      await cp?.stop();
      await revoker?.close();
      await nats?.server.dispose();
    }, 30_000);

    let firstUser = "";
    let firstCreds = "";

    it("issues the capsule a user in <capsule>-nats, mounts it in the sidecar and reports it", async () => {
      await putCapsule("llm.v1.chat.*");
      const capsule = await waitFor("status.natsUser", async () => {
        const c = await get(Capsules, "echo");
        return c?.status?.natsUser ? c : undefined;
      });
      const secret = (await get(Secrets, "echo-nats")) as Obj;
      firstUser = secret.metadata?.annotations?.[NATS_USER_ANNOTATION] ?? "";
      firstCreds = credsOf(secret);
      expect(capsule.status.natsUser).toBe(firstUser);
      expect(firstUser).toMatch(/^U[A-Z2-7]{55}$/);
      expect(secret.metadata?.annotations?.[NATS_PERMISSIONS_ANNOTATION]).toMatch(/^[0-9a-f]{64}$/);
      expect(secret.metadata?.ownerReferences?.[0]?.uid).toBe(capsule.metadata?.uid);
      expect(firstCreds).toContain("-----BEGIN NATS USER JWT-----");

      const sts = (await waitFor("StatefulSet", () => get(StatefulSets, "echo"))) as Obj;
      const pod = sts.spec.template;
      const sidecar = pod.spec.containers.find((c: Obj) => c.name === "sidecar");
      expect(sidecar.env).toContainEqual({
        name: "ASTRID_BUS_CREDS_FILE",
        value: "/etc/astrid/nats/nats.creds",
      });
      expect(sidecar.volumeMounts).toContainEqual({
        name: "nats",
        mountPath: "/etc/astrid/nats",
        readOnly: true,
      });
      expect(pod.spec.volumes).toContainEqual({
        name: "nats",
        secret: { secretName: "echo-nats", defaultMode: 0o440 },
      });
      expect(pod.metadata.annotations[NATS_USER_ANNOTATION]).toBe(firstUser);
    });

    it("lets the user use exactly its manifest's ACL; the server refuses the rest", async () => {
      // An unrestricted user of the account plays the capsule's neighbours.
      const signer = accountSigner(
        nats.account.getPublicKey(),
        nats.seedOf(nats.accountSigningKey),
      );
      const peer = await connectAs(
        (
          await issueNatsUser(signer, "peer", {
            publish: { allow: [">"] },
            subscribe: { allow: [">"] },
          })
        ).creds,
      );
      const nc = await connectAs(firstCreds);
      const seen: string[] = [];
      const record = {
        callback: (_e: unknown, m: { subject: string }) => void seen.push(m.subject),
      };
      nc.subscribe("tool.v1.call.echo", record);
      peer.subscribe("llm.v1.chat.*", record);
      await nc.flush();
      await peer.flush();
      peer.publish("tool.v1.call.echo", "a call");
      nc.publish("llm.v1.chat.claude", "allowed");
      await waitFor("both messages", () => (seen.length === 2 ? true : undefined));
      expect(seen.sort()).toEqual(["llm.v1.chat.claude", "tool.v1.call.echo"]);
      const denied = nextError(nc);
      nc.publish("tool.v1.call.shell", "not in the manifest");
      expect(await denied).toMatch(/Permissions Violation for Publish to "tool.v1.call.shell"/);
      const subDenied = nextError(nc);
      nc.subscribe("llm.v1.chat.*");
      expect(await subDenied).toMatch(/Permissions Violation for Subscription to "llm.v1.chat.\*"/);
      await nc.close();
    });

    it("keeps the Secret across reconciles", async () => {
      const before = (await get(Secrets, "echo-nats")) as Obj;
      const done = reconciles.get(`${NS}/echo`) ?? 0;
      queue.add(`${NS}/echo`);
      await waitFor("reconciled again", () =>
        (reconciles.get(`${NS}/echo`) ?? 0) > done ? true : undefined,
      );
      const after = (await get(Secrets, "echo-nats")) as Obj;
      expect(after.metadata?.resourceVersion).toBe(before.metadata?.resourceVersion);
      expect(after.metadata?.annotations?.[NATS_USER_ANNOTATION]).toBe(firstUser);
    });

    it("issues a new user when the ACL changes and revokes the old one", async () => {
      await putCapsule("tool.v1.call.shell");
      const capsule = await waitFor("a new status.natsUser", async () => {
        const c = await get(Capsules, "echo");
        return c?.status?.natsUser && c.status.natsUser !== firstUser ? c : undefined;
      });
      const secret = (await get(Secrets, "echo-nats")) as Obj;
      expect(secret.metadata?.annotations?.[NATS_USER_ANNOTATION]).toBe(capsule.status.natsUser);
      await expect(connectAs(firstCreds)).rejects.toThrow(/Authorization Violation/i);
      const nc = await connectAs(credsOf(secret));
      const denied = nextError(nc);
      nc.publish("tool.v1.call.shell", "now allowed");
      nc.publish("llm.v1.chat.claude", "no longer allowed");
      expect(await denied).toMatch(/Permissions Violation for Publish to "llm.v1.chat.claude"/);
      await nc.close();
      const sts = (await get(StatefulSets, "echo")) as Obj;
      expect(sts.spec.template.metadata.annotations[NATS_USER_ANNOTATION]).toBe(
        capsule.status.natsUser,
      );
    });

    it("revokes the user when the Capsule is deleted", async () => {
      const secret = (await get(Secrets, "echo-nats")) as Obj;
      const creds = credsOf(secret);
      const open = await connectAs(creds);
      await rest.request("DELETE", resourcePath(Capsules, NS, "echo"));
      await waitFor("Capsule gone (finalizer removed)", async () =>
        (await get(Capsules, "echo")) === undefined ? true : undefined,
      );
      await open.closed();
      await expect(connectAs(creds)).rejects.toThrow(/Authorization Violation/i);
    });

    it("refuses to take over a Secret it does not own", async () => {
      await rest.request("POST", resourcePath(Secrets, NS), {
        body: { apiVersion: "v1", kind: "Secret", metadata: { name: "admin-nats" }, data: {} },
      });
      await expect(
        natsUsers.ensure({
          namespace: NS,
          secretName: "admin-nats",
          userName: "admin",
          permissions: { publish: { deny: [">"] }, subscribe: { deny: [">"] } },
          owner: { apiVersion: "astrid.dev/v1alpha1", kind: "Capsule", name: "admin", uid: "u-9" },
        }),
      ).rejects.toThrow(
        `Secret ${NS}/admin-nats is not owned by Capsule admin (uid u-9); waiting for it to go (an earlier owner's) or for an admin to remove it`,
      );
    });
  },
);
