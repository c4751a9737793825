/**
 * One session started ahead of its prompt. Starting a session's sidecars (each capsule's QuickJS
 * instance, audit chain, approval store) is most of the time between `astrid -p` and the first
 * model request, so after a turn the daemon starts the next session for the same inputs while
 * nobody waits, and the next prompt with those inputs takes it.
 *
 * What keeps this as strict as a session started on demand:
 * - the prepared session is started under its own fresh id, with its own bus, audit chains,
 *   budgets and caller tokens — it is an ordinary session that has not been announced yet;
 * - `take` hands it out at most once and forgets it in the same step, so no two prompts can
 *   share it and nothing is ever returned to the pool;
 * - it is handed out only when the prompt's fingerprint (workspace, mode, --yes, the effective
 *   config, the installed versions and digests) equals the one it was started with; anything
 *   else — an edited config.toml, a newly installed capsule — discards it and its folder.
 */
import type { SessionRuntime } from "./session-runtime.js";

export interface Prepared {
  readonly session: string;
  readonly fingerprint: string;
  readonly runtime: SessionRuntime;
}

interface Slot {
  readonly fingerprint: string;
  ready: Promise<Prepared | undefined>;
  /** Given up (other inputs came, or the daemon stops): whatever it starts is discarded. */
  dropped: boolean;
}

export class PreparedSession {
  private slot: Slot | undefined;
  private closed = false;
  /** Discards under way, so close() returns only when every prepared session is gone. */
  private readonly discarding = new Set<Promise<void>>();

  constructor(
    /** Closes a prepared session nobody took and removes its folder. */
    private readonly discard: (p: Prepared) => Promise<void>,
    private readonly log: (line: string) => void,
  ) {}

  /**
   * Starts a session for `fingerprint` in the background, unless one for it is already there.
   * A session prepared for other inputs is discarded: one is kept at most.
   */
  prepare(fingerprint: string, start: () => Promise<Prepared>): void {
    if (this.closed || this.slot?.fingerprint === fingerprint) return;
    this.drop();
    const slot: Slot = { fingerprint, ready: Promise.resolve(undefined), dropped: false };
    slot.ready = start().then(
      (p) => {
        // Given up while it started, or started on inputs that changed under it (the store
        // moved on between the fingerprint and the load): nobody may take it.
        if (slot.dropped || p.fingerprint !== fingerprint) {
          this.discardOnce(p);
          return undefined;
        }
        return p;
      },
      (err: Error) => {
        this.log(`preparing the next session failed (it starts on demand): ${err.message}`);
        return undefined;
      },
    );
    this.slot = slot;
  }

  /**
   * The prepared session for exactly this fingerprint, waiting for it if it is still starting;
   * undefined when there is none. Either way the slot is empty afterwards.
   */
  async take(fingerprint: string): Promise<Prepared | undefined> {
    const slot = this.slot;
    if (!slot) return undefined;
    if (slot.fingerprint !== fingerprint) {
      this.drop();
      return undefined;
    }
    this.slot = undefined;
    return slot.ready;
  }

  /** Discards what is prepared or being prepared; nothing is prepared afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    this.drop();
    while (this.discarding.size > 0) await Promise.all(this.discarding);
  }

  private drop(): void {
    const slot = this.slot;
    this.slot = undefined;
    if (!slot) return;
    slot.dropped = true;
    // Resolved before it was dropped, the start callback kept it: discarded here, once.
    this.track(
      slot.ready.then((p) => (p ? this.discard(p) : undefined)),
      "given up",
    );
  }

  private discardOnce(p: Prepared): void {
    this.track(this.discard(p), p.session);
  }

  private track(discarding: Promise<void>, what: string): void {
    const done: Promise<void> = discarding
      .catch((err: Error) => this.log(`discarding a prepared session (${what}): ${err.message}`))
      .finally(() => this.discarding.delete(done));
    this.discarding.add(done);
  }
}
