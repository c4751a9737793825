/**
 * Key-value storage behind the host ABI's kv functions. Buckets are scoped to the capsule (the
 * store prefixes every bucket with the capsule id), so two capsules that both declare
 * `kv = ["cache"]` never see each other's keys. Local shape: memory or a directory; cluster
 * shape: a JetStream KV bucket (added with the operator).
 */
export interface KvStore {
  get(bucket: string, key: string): Promise<Uint8Array | null>;
  set(bucket: string, key: string, value: Uint8Array): Promise<void>;
  delete(bucket: string, key: string): Promise<void>;
  list(bucket: string, prefix: string): Promise<string[]>;
}

export class MemoryKvStore implements KvStore {
  private readonly buckets = new Map<string, Map<string, Uint8Array>>();

  private bucket(name: string): Map<string, Uint8Array> {
    let b = this.buckets.get(name);
    if (!b) {
      b = new Map();
      this.buckets.set(name, b);
    }
    return b;
  }

  async get(bucket: string, key: string) {
    const v = this.bucket(bucket).get(key);
    return v ? v.slice() : null;
  }

  async set(bucket: string, key: string, value: Uint8Array) {
    this.bucket(bucket).set(key, value.slice());
  }

  async delete(bucket: string, key: string) {
    this.bucket(bucket).delete(key);
  }

  async list(bucket: string, prefix: string) {
    return [...this.bucket(bucket).keys()].filter((k) => k.startsWith(prefix)).sort();
  }
}
