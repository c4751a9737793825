/**
 * The capsule dependency graph: which exporter serves each import, and the order to start
 * capsules in so that every exporter is up before its importers. A session wires
 * orchestrator → cache → router → provider purely by `bindings`, so an explicit binding always
 * wins and every ambiguity without one is an error rather than a guess.
 *
 * Edges point from importer to exporter; a cycle is printed in that direction
 * ("a → b" = a imports from b).
 */

import semver from "semver";

export interface GraphImport {
  readonly version: string;
  readonly optional: boolean;
}

/** The part of a manifest the graph needs (a parsed Manifest fits). */
export interface GraphCapsule {
  readonly package: { readonly name: string; readonly version: string };
  readonly imports: Readonly<Record<string, Readonly<Record<string, GraphImport>>>>;
  readonly exports: Readonly<Record<string, Readonly<Record<string, string>>>>;
}

/** `{ [importer]: { "<ns>.<iface>": "<exporter name>" } }` */
export type Bindings = Readonly<Record<string, Readonly<Record<string, string>>>>;

export interface ResolvedBinding {
  readonly importer: string;
  /** "<ns>.<iface>" */
  readonly interface: string;
  readonly range: string;
  readonly exporter: string;
  readonly version: string;
}

export interface StartPlan {
  /** Exporters before importers; ties broken by name. */
  readonly order: readonly string[];
  /** Sorted by importer, then interface. */
  readonly bindings: readonly ResolvedBinding[];
}

export type GraphErrorKind =
  | "duplicate-capsule"
  | "missing-exporter"
  | "version-mismatch"
  | "ambiguous-exporter"
  | "invalid-binding"
  | "cycle";

export class GraphError extends Error {
  override readonly name = "GraphError";
  constructor(
    readonly kind: GraphErrorKind,
    message: string,
    /** For "cycle": the capsules in order, first repeated at the end. */
    readonly cycle: readonly string[] = [],
  ) {
    super(message);
  }
}

interface Exporter {
  readonly name: string;
  readonly version: string;
}

const byName = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function satisfies(version: string, range: string): boolean {
  return semver.satisfies(version, range, { includePrerelease: false });
}

/**
 * Interfaces a capsule imports from every exporter at once unless a binding picks one: an
 * orchestrator's toolbox is all the tool capsules of the session, not one of them.
 */
export const COLLECTING_INTERFACES: ReadonlySet<string> = new Set(["astrid.tool"]);

export function resolveGraph(
  capsules: readonly GraphCapsule[],
  bindings: Bindings = {},
  collecting: ReadonlySet<string> = COLLECTING_INTERFACES,
): StartPlan {
  const names = new Set<string>();
  for (const c of capsules) {
    if (names.has(c.package.name)) {
      throw new GraphError("duplicate-capsule", `two capsules are named "${c.package.name}"`);
    }
    names.add(c.package.name);
  }

  // "<ns>.<iface>" → every exporter, sorted by name for stable messages.
  const exporters = new Map<string, Exporter[]>();
  for (const c of capsules) {
    for (const [ns, ifaces] of Object.entries(c.exports)) {
      for (const [iface, version] of Object.entries(ifaces)) {
        const key = `${ns}.${iface}`;
        const list = exporters.get(key) ?? [];
        list.push({ name: c.package.name, version });
        exporters.set(key, list);
      }
    }
  }
  for (const list of exporters.values()) list.sort((a, b) => byName(a.name, b.name));
  const list = (es: readonly Exporter[]): string =>
    es.map((e) => `${e.name} ${e.version}`).join(", ");

  for (const importer of Object.keys(bindings).sort(byName)) {
    if (!names.has(importer)) {
      throw new GraphError(
        "invalid-binding",
        `bindings name importer "${importer}" but no capsule has that name`,
      );
    }
  }

  const sorted = [...capsules].sort((a, b) => byName(a.package.name, b.package.name));
  const resolved: ResolvedBinding[] = [];
  for (const c of sorted) {
    const importer = c.package.name;
    const own = bindings[importer] ?? {};
    const wanted = new Set<string>();
    const imports = Object.entries(c.imports).flatMap(([ns, ifaces]) =>
      Object.entries(ifaces).map(([iface, spec]) => ({ key: `${ns}.${iface}`, spec })),
    );
    imports.sort((a, b) => byName(a.key, b.key));
    for (const { key, spec } of imports) {
      wanted.add(key);
      const head = `${importer} imports ${key} ${spec.version}`;
      const all = exporters.get(key) ?? [];
      const bound = own[key];
      if (bound !== undefined) {
        const prefix = `binding ${importer} → ${key} = "${bound}"`;
        if (!names.has(bound)) {
          throw new GraphError("invalid-binding", `${prefix}: no capsule is named "${bound}"`);
        }
        const e = all.find((x) => x.name === bound);
        if (!e)
          throw new GraphError("invalid-binding", `${prefix}: ${bound} does not export ${key}`);
        if (!satisfies(e.version, spec.version)) {
          throw new GraphError(
            "invalid-binding",
            `${prefix}: ${bound} exports ${key} ${e.version}, which does not satisfy ${spec.version}`,
          );
        }
        resolved.push({
          importer,
          interface: key,
          range: spec.version,
          exporter: e.name,
          version: e.version,
        });
        continue;
      }
      if (all.length === 0) {
        if (spec.optional) continue;
        throw new GraphError("missing-exporter", `${head} but no capsule exports it`);
      }
      const fitting = all.filter((e) => satisfies(e.version, spec.version));
      if (fitting.length === 0) {
        throw new GraphError(
          "version-mismatch",
          `${head} but no exporter satisfies it; found ${list(all)}`,
        );
      }
      // A capsule that re-exports what it imports (a cache in front of a provider) is served by
      // another capsule; it only binds to itself when it is the sole exporter — a self-cycle.
      const others = fitting.filter((e) => e.name !== importer);
      const candidates = others.length > 0 ? others : fitting;
      if (collecting.has(key) && others.length > 0) {
        for (const e of others) {
          resolved.push({
            importer,
            interface: key,
            range: spec.version,
            exporter: e.name,
            version: e.version,
          });
        }
        continue;
      }
      if (candidates.length > 1) {
        throw new GraphError(
          "ambiguous-exporter",
          `${head} and several capsules export it: ${list(candidates)}; bind one with bindings["${importer}"]["${key}"] = "<name>"`,
        );
      }
      const e = candidates[0] as Exporter;
      resolved.push({
        importer,
        interface: key,
        range: spec.version,
        exporter: e.name,
        version: e.version,
      });
    }
    for (const key of Object.keys(own).sort(byName)) {
      if (!wanted.has(key)) {
        throw new GraphError(
          "invalid-binding",
          `binding ${importer} → ${key}: ${importer} does not import ${key}`,
        );
      }
    }
  }

  return { order: startOrder([...names].sort(byName), resolved), bindings: resolved };
}

/** Kahn's algorithm with the smallest ready name first, so the order is reproducible. */
function startOrder(names: readonly string[], edges: readonly ResolvedBinding[]): string[] {
  const dependsOn = new Map<string, Set<string>>(names.map((n) => [n, new Set<string>()]));
  const dependents = new Map<string, Set<string>>(names.map((n) => [n, new Set<string>()]));
  for (const b of edges) {
    dependsOn.get(b.importer)?.add(b.exporter);
    dependents.get(b.exporter)?.add(b.importer);
  }
  const remaining = new Map(names.map((n) => [n, dependsOn.get(n)?.size ?? 0]));
  const ready = names.filter((n) => remaining.get(n) === 0);
  const order: string[] = [];
  while (ready.length > 0) {
    ready.sort(byName);
    const n = ready.shift() as string;
    order.push(n);
    for (const d of dependents.get(n) ?? []) {
      const left = (remaining.get(d) ?? 0) - 1;
      remaining.set(d, left);
      if (left === 0) ready.push(d);
    }
  }
  if (order.length < names.length) {
    const cycle = findCycle(
      names.filter((n) => !order.includes(n)),
      dependsOn,
    );
    throw new GraphError("cycle", `dependency cycle: ${cycle.join(" → ")}`, cycle);
  }
  return order;
}

/** Walks importer → exporter edges among the stuck capsules until a name repeats. */
function findCycle(stuck: readonly string[], dependsOn: Map<string, Set<string>>): string[] {
  const inStuck = new Set(stuck);
  const path: string[] = [];
  let at = stuck[0] as string;
  while (!path.includes(at)) {
    path.push(at);
    // Every stuck capsule waits on at least one other stuck capsule, so a next step exists.
    const next = [...(dependsOn.get(at) ?? [])].filter((n) => inStuck.has(n)).sort(byName)[0];
    at = next as string;
  }
  return [...path.slice(path.indexOf(at)), at];
}
