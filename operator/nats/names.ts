/** Where a pod finds its NATS user: names shared by the Secret writer and the pod builders. */

/** The key of the `.creds` file in the Secret. */
export const NATS_CREDS_KEY = "nats.creds";
/** Where the sidecar mounts the Secret. */
export const NATS_DIR = "/etc/astrid/nats";
/** sha256 of the permissions the user was issued with: a change means a new user. */
export const NATS_PERMISSIONS_ANNOTATION = "astrid.dev/nats-permissions";
/** The user's public key, on its Secret (what revocation names) and on the pod template. */
export const NATS_USER_ANNOTATION = "astrid.dev/nats-user";

/** `<owner>-nats`: the Capsule's, or `<session>-session-nats` for a session pod. */
export function natsSecretName(owner: string): string {
  return `${owner}-nats`;
}

/** What a pod builder needs to mount a NATS user. */
export interface NatsPodUser {
  /** The Secret holding `nats.creds`. */
  readonly secretName: string;
  /** The user's public key (rolls the pods when a new user is issued). */
  readonly user: string;
}
