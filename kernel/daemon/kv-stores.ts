/**
 * The kv stores of one home's capsules: `state/kv/<capsule>/`, opened once and shared by every
 * session of the daemon, so what the cache capsule stored in one session answers the next.
 *
 * One folder per capsule, whatever buckets it declares: the host already scopes a guest's
 * buckets to its capsule, and a folder per capsule keeps them apart even if that scoping were
 * wrong, and bounds each capsule's share of the disk on its own (FileKvStore's limits).
 */
import path from "node:path";
import { PACKAGE_NAME } from "../../core/manifest/schema.js";
import type { KvStore } from "../../sidecar/enforce/kv.js";
import { FileKvStore } from "../../sidecar/enforce/kv-file.js";

export class HomeKvStores {
  private readonly stores = new Map<string, Promise<FileKvStore>>();

  constructor(readonly root: string) {}

  /** The store of `capsule`: one object per folder, so its size accounting sees every write. */
  of(capsule: string): Promise<KvStore> {
    // The name becomes a folder: a name that is not a package name could be `..`.
    if (!PACKAGE_NAME.test(capsule)) {
      return Promise.reject(
        new Error(`kv store: expected a capsule name, got ${JSON.stringify(capsule)}`),
      );
    }
    let store = this.stores.get(capsule);
    if (!store) {
      store = FileKvStore.open({ dir: path.join(this.root, capsule) });
      // A store that failed to open is tried again by the next session, not cached as failed.
      store.catch(() => this.stores.delete(capsule));
      this.stores.set(capsule, store);
    }
    return store;
  }
}
