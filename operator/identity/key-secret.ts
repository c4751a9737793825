/**
 * A Secret holding one Ed25519 private key (`data["key.pem"]`, PKCS#8 PEM), created once and
 * then only ever read. Both the namespace's token issuer and each capsule's audit identity are
 * such Secrets: a key that changed under them would invalidate every token it minted or break
 * the verification of the audit chain it signed, so an existing key is never replaced — not
 * even a malformed one, which is reported for a human to fix instead.
 */
import { createPrivateKey, generateKeyPairSync, type KeyObject } from "node:crypto";
import {
  ConflictError,
  type KubeRest,
  type ObjectMeta,
  type OwnerReference,
  resourcePath,
  Secrets,
} from "../runtime/rest.js";

export const KEY_PEM = "key.pem";

export interface KeySecretSpec {
  namespace: string;
  name: string;
  labels?: Record<string, string>;
  ownerReferences?: OwnerReference[];
}

interface SecretBody {
  metadata?: ObjectMeta;
  data?: Record<string, string>;
}

export interface KeySecret {
  readonly key: KeyObject;
  /** The Secret's owners as the API server holds them. */
  readonly ownerReferences: readonly OwnerReference[];
}

/** A fresh Ed25519 private key as PKCS#8 PEM (what the sidecar's identityKeyFile reads). */
export function newEd25519Pem(): string {
  const { privateKey } = generateKeyPairSync("ed25519");
  return privateKey.export({ type: "pkcs8", format: "pem" }).toString();
}

/**
 * The private key in `pem`, refused unless it is an unencrypted PKCS#8 PEM Ed25519 key: the
 * sidecar loads exactly this format, so anything else would only fail later, inside a pod.
 */
export function parseEd25519Pem(pem: string, where: string): KeyObject {
  const expected = "expected a PKCS#8 PEM Ed25519 private key (-----BEGIN PRIVATE KEY-----)";
  if (!pem.includes("-----BEGIN PRIVATE KEY-----"))
    throw new Error(`${where}: ${expected}, got no PKCS#8 PEM block`);
  let key: KeyObject;
  try {
    key = createPrivateKey({ key: pem, format: "pem" });
  } catch (err) {
    throw new Error(`${where}: ${expected}: ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== "ed25519")
    throw new Error(`${where}: ${expected}, got a ${key.asymmetricKeyType} key`);
  return key;
}

/**
 * Creates the Secret with a new key if absent (POST; 409 AlreadyExists → GET the existing one)
 * and returns the key it holds. POST first, not GET first: two writers racing both GET 404,
 * and the slower one's PUT would replace the faster one's key; a POST cannot overwrite.
 */
export async function ensureKeySecret(rest: KubeRest, spec: KeySecretSpec): Promise<KeySecret> {
  const where = `Secret ${spec.namespace}/${spec.name}: data["${KEY_PEM}"]`;
  const pem = newEd25519Pem();
  try {
    await rest.request("POST", resourcePath(Secrets, spec.namespace), {
      body: {
        apiVersion: "v1",
        kind: "Secret",
        type: "Opaque",
        metadata: {
          name: spec.name,
          namespace: spec.namespace,
          ...(spec.labels ? { labels: spec.labels } : {}),
          ...(spec.ownerReferences ? { ownerReferences: spec.ownerReferences } : {}),
        },
        data: { [KEY_PEM]: Buffer.from(pem).toString("base64") },
      },
    });
    return {
      key: parseEd25519Pem(pem, where),
      ownerReferences: spec.ownerReferences ?? [],
    };
  } catch (err) {
    if (!(err instanceof ConflictError && err.reason === "AlreadyExists")) throw err;
  }
  const existing = await rest.request<SecretBody>(
    "GET",
    resourcePath(Secrets, spec.namespace, spec.name),
  );
  const b64 = existing.data?.[KEY_PEM];
  if (b64 === undefined)
    throw new Error(`${where}: expected a PKCS#8 PEM Ed25519 private key, got no such key`);
  return {
    key: parseEd25519Pem(Buffer.from(b64, "base64").toString("utf8"), where),
    ownerReferences: existing.metadata?.ownerReferences ?? [],
  };
}
