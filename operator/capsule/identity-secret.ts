/**
 * Each capsule's audit identity: the Secret `<capsule>-identity` with the Ed25519 key its
 * sidecars sign the audit chain with. Created once, owned by the Capsule (so it goes with it)
 * and never regenerated: entries signed with a replaced key would no longer verify against the
 * key the chain started with.
 */
import type { Capsule } from "../api/capsule.js";
import { ensureKeySecret } from "../identity/key-secret.js";
import type { KubeRest } from "../runtime/rest.js";
import { capsuleOwnerRef, identitySecretName, podLabels } from "./desired.js";

/** One per operator process, like IssuerStore; remembers which Capsules already have theirs. */
export class CapsuleIdentities {
  /** Capsule UIDs whose Secret exists: the reconciles after the first make no API call. */
  private readonly ensured = new Set<string>();

  constructor(private readonly rest: KubeRest) {}

  /**
   * Creates the Secret if absent (POST; 409 → GET). An existing one is kept as it is — also one
   * an admin provisioned without an owner reference (their key, their lifecycle).
   */
  async ensure(capsule: Capsule): Promise<void> {
    const owner = capsuleOwnerRef(capsule);
    if (this.ensured.has(owner.uid)) return;
    const namespace = capsule.metadata.namespace;
    if (!namespace)
      throw new Error(`Capsule ${capsule.metadata.name} must have metadata.namespace`);
    const name = identitySecretName(capsule.metadata.name);
    const secret = await ensureKeySecret(this.rest, {
      namespace,
      name,
      labels: podLabels(capsule.metadata.name),
      ownerReferences: [owner],
    });
    // A Capsule deleted and re-created under the same name finds its predecessor's Secret
    // until the garbage collector removes it; pods mounting it would lose it moments later.
    const previous = secret.ownerReferences.find(
      (o) => o.kind === "Capsule" && o.uid !== owner.uid,
    );
    if (previous) {
      throw new Error(
        `Secret ${namespace}/${name} belongs to an earlier Capsule ${previous.name} (uid ${previous.uid}) and goes with it; waiting for the garbage collector before creating this Capsule's key`,
      );
    }
    this.ensured.add(owner.uid);
  }

  /** Called when the Capsule is gone: its Secret goes with the owner reference. */
  forget(capsule: Capsule): void {
    const uid = capsule.metadata.uid;
    if (typeof uid === "string") this.ensured.delete(uid);
  }
}
