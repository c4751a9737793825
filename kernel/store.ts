/**
 * The installed capsules of one Astrid home (`~/.astrid/capsules/<name>/<version>/`): install
 * from a built package folder or `.capsule` archive (or a source folder, built first), list,
 * remove and the dependency tree. Packages are read-only once installed and verified against
 * their digest when loaded, so what runs is byte for byte what was installed.
 */
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import path from "node:path";
import semver from "semver";
import {
  type Bindings,
  loadManifest,
  type Manifest,
  resolveGraph,
  type StartPlan,
} from "../core/manifest/index.js";
import { installPackage, uninstallPackage, verifyInstalled } from "../core/package/index.js";
import { buildCapsule } from "./build/build.js";

export interface InstalledEntry {
  readonly name: string;
  readonly version: string;
  readonly digest: string;
  readonly dir: string;
  readonly manifest: Manifest;
}

/** Digests are remembered beside the store so a load can verify nothing changed. */
const DIGESTS = "digests.json";

export class CapsuleStore {
  constructor(readonly dir: string) {}

  private async digests(): Promise<Record<string, string>> {
    try {
      return JSON.parse(await readFile(path.join(this.dir, DIGESTS), "utf8"));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return {};
      throw new Error(`${path.join(this.dir, DIGESTS)} is unreadable: ${(err as Error).message}`);
    }
  }

  private async saveDigests(d: Record<string, string>): Promise<void> {
    await writeFile(path.join(this.dir, DIGESTS), `${JSON.stringify(d, null, 2)}\n`, {
      mode: 0o600,
    });
  }

  /**
   * Installs a package folder or archive; a source folder (one with `src/`, or a QuickJS module
   * not built yet) is built with astrid-build first. The same name and version with different
   * bytes is refused (installPackage says which digests differ).
   */
  async install(source: string, buildDir: string): Promise<InstalledEntry> {
    let from = source;
    const isDir = (await stat(source)).isDirectory();
    if (isDir && (await needsBuild(source))) {
      from = (await buildCapsule(source, { outDir: buildDir })).dir;
    }
    const done = await installPackage(from, this.dir);
    const digests = await this.digests();
    digests[`${done.name}@${done.version}`] = done.digest;
    await this.saveDigests(digests);
    return this.load(done.name, done.version);
  }

  async load(name: string, version: string): Promise<InstalledEntry> {
    const dir = path.join(this.dir, name, version);
    const digest = (await this.digests())[`${name}@${version}`];
    if (!digest) throw new Error(`capsule ${name}@${version} is not installed`);
    await verifyInstalled(dir, digest);
    return { name, version, digest, dir, manifest: await loadManifest(dir) };
  }

  /** Every installed version, newest first per name. */
  async list(): Promise<InstalledEntry[]> {
    const digests = await this.digests();
    const out: InstalledEntry[] = [];
    for (const key of Object.keys(digests).sort()) {
      const at = key.lastIndexOf("@");
      out.push(await this.load(key.slice(0, at), key.slice(at + 1)));
    }
    return out.sort((a, b) =>
      a.name === b.name ? semver.rcompare(a.version, b.version) : a.name.localeCompare(b.name),
    );
  }

  /**
   * The newest version of each installed capsule (only those in `names`, when given), with its
   * digest, from the store's record alone — nothing is read or verified. What a session would
   * run; the daemon compares it to tell whether a prepared session is still current.
   */
  async newest(
    names?: readonly string[],
  ): Promise<{ name: string; version: string; digest: string }[]> {
    const byName = new Map<string, { name: string; version: string; digest: string }>();
    for (const [key, digest] of Object.entries(await this.digests())) {
      const at = key.lastIndexOf("@");
      const e = { name: key.slice(0, at), version: key.slice(at + 1), digest };
      if (names && !names.includes(e.name)) continue;
      const have = byName.get(e.name);
      if (!have || semver.gt(e.version, have.version)) byName.set(e.name, e);
    }
    return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * The newest version of each installed capsule, verified and parsed: what a session runs.
   * `names` limits it to those capsules, so a session does not hash the files of every
   * installed package it will not start.
   */
  async latest(names?: readonly string[]): Promise<InstalledEntry[]> {
    return Promise.all((await this.newest(names)).map((e) => this.load(e.name, e.version)));
  }

  async remove(name: string, version?: string): Promise<string[]> {
    const digests = await this.digests();
    const victims = Object.keys(digests).filter((k) =>
      version ? k === `${name}@${version}` : k.startsWith(`${name}@`),
    );
    if (victims.length === 0) {
      throw new Error(`capsule ${version ? `${name}@${version}` : name} is not installed`);
    }
    for (const k of victims) {
      await uninstallPackage(this.dir, name, k.slice(k.lastIndexOf("@") + 1));
      delete digests[k];
    }
    await this.saveDigests(digests);
    return victims;
  }

  /** Start order and wiring of the newest versions, as a session would run them. */
  async tree(bindings: Bindings = {}): Promise<StartPlan> {
    return resolveGraph(
      (await this.latest()).map((e) => e.manifest),
      bindings,
    );
  }
}

async function needsBuild(dir: string): Promise<boolean> {
  const entries = await readdir(dir);
  return entries.includes("src");
}
