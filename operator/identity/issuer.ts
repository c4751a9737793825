/**
 * The token issuer of a namespace: an Ed25519 key in the Secret `astrid-issuer`, which the
 * operator mints capability tokens with, and its public half in the ConfigMap `astrid-trust`,
 * which every capsule and session pod mounts at TRUST_DIR and trusts. The private key never
 * leaves the operator's namespace-scoped Secret; pods see only the public key.
 */
import { createPublicKey } from "node:crypto";
import type { IssuerKey } from "../../core/security/tokens/keys.js";
import { keyIdOf, rawPublicKey } from "../../core/security/tokens/keys.js";
import { ConfigMaps, ConflictError, type KubeRest, resourcePath } from "../runtime/rest.js";
import { ensureKeySecret } from "./key-secret.js";

export const ISSUER_SECRET = "astrid-issuer";
export const TRUST_CONFIGMAP = "astrid-trust";
export const TRUST_DIR = "/etc/astrid/trust";
export const REVOCATION_BUCKET = "astrid-revocations";
/** Key of the public key in TRUST_CONFIGMAP, and file name under TRUST_DIR. */
export const ISSUER_PEM = "issuer.pem";

const LABELS = {
  "app.kubernetes.io/part-of": "astrid",
  "app.kubernetes.io/managed-by": "astrid-operator",
};

interface ConfigMapBody {
  data?: Record<string, string>;
}

/** One per operator process: the issuer key of each namespace, read or created once. */
export class IssuerStore {
  private readonly keys = new Map<string, Promise<IssuerKey>>();

  constructor(private readonly rest: KubeRest) {}

  /** Creates Secret + ConfigMap in `namespace` if absent (POST; 409 → GET the existing one), caches. */
  ensure(namespace: string): Promise<IssuerKey> {
    let key = this.keys.get(namespace);
    if (!key) {
      key = this.load(namespace);
      this.keys.set(namespace, key);
      // A failure is not cached: the next reconcile asks the API server again.
      key.catch(() => {
        if (this.keys.get(namespace) === key) this.keys.delete(namespace);
      });
    }
    return key;
  }

  private async load(namespace: string): Promise<IssuerKey> {
    const { key: privateKey } = await ensureKeySecret(this.rest, {
      namespace,
      name: ISSUER_SECRET,
      labels: LABELS,
    });
    const publicKey = createPublicKey(privateKey);
    const raw = rawPublicKey(publicKey);
    await this.ensureTrust(namespace, publicKey.export({ type: "spki", format: "pem" }).toString());
    return { kid: keyIdOf(raw), privateKey, publicKey, publicKeyRaw: raw };
  }

  /**
   * The Secret is the truth: a trust ConfigMap naming another key (stale after a manual key
   * change, or swapped to make pods trust someone else's tokens) is set back to the Secret's.
   */
  private async ensureTrust(namespace: string, pem: string): Promise<void> {
    const path = resourcePath(ConfigMaps, namespace, TRUST_CONFIGMAP);
    try {
      await this.rest.request("POST", resourcePath(ConfigMaps, namespace), {
        body: {
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: { name: TRUST_CONFIGMAP, namespace, labels: LABELS },
          data: { [ISSUER_PEM]: pem },
        },
      });
      return;
    } catch (err) {
      if (!(err instanceof ConflictError && err.reason === "AlreadyExists")) throw err;
    }
    const existing = await this.rest.request<ConfigMapBody>("GET", path);
    if (existing.data?.[ISSUER_PEM] === pem) return;
    await this.rest.request("PATCH", path, {
      contentType: "application/merge-patch+json",
      body: { data: { [ISSUER_PEM]: pem } },
    });
  }
}
