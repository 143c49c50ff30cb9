/**
 * The one-screen view of a cluster's archives (`classcache stats` / `top`): what the directory
 * knows — every archive, which nodes hold it or are pulling it, how many JVMs map it right now,
 * the hit rate they really get and the memory its sharing saves (both announced by the node
 * agents from /proc and the JVMs' perf counters) — and, given a cluster, each ClassCache's state.
 * Read-only: it never writes to the directory or the cluster.
 */
import { shortKey } from "../archive/key.ts";
import { openEnvelope, peekEnvelope, type TrustStore } from "../archive/signing.ts";
import type { Manifest } from "../archive/manifest.ts";
import { sumClassUsage } from "../directory/common.ts";
import type { Directory, Holder } from "../directory/directory.ts";
import type { KubeClient } from "../kube/client.ts";
import { ClassCaches, type ClassCache } from "../operator/api/v1.ts";
import { ratio, table } from "../util/format.ts";

export interface ArchiveMemory {
  /** Σ over the JVMs mapping the archive of its own mappings' Rss and Pss. */
  rssKb: number;
  pssKb: number;
  /** ΣRss − ΣPss: what sharing the archive saved, over all nodes. */
  savedKb: number;
  /**
   * Pss/Rss of the read-only part, and its ideal: 1/JVMs on each node, weighted by Rss. Absent
   * when no JVM maps a read-only part (the JVM mapped every region writable, e.g. to relocate it).
   */
  roPssRssRatio?: number;
  idealRoRatio?: number;
}

export interface ArchiveStats {
  key: string;
  /** true: signed by a trusted key; false: it is not; undefined: no trust given, not checked. */
  verified: boolean | undefined;
  kind?: string;
  mode?: string;
  jvm?: string;
  app?: string;
  sizeBytes?: number;
  buildHitRate?: number;
  createdAt?: string;
  /** Nodes holding the whole archive, and nodes still pulling it. */
  nodes: number;
  pulling: number;
  /** JVMs mapping the archive now, and the share of their classes that came from it. */
  jvms: number;
  liveHitRate?: number;
  memory?: ArchiveMemory;
  holders: Holder[];
}

export interface ClassCacheRow {
  namespace: string;
  name: string;
  workload: string;
  phase: string;
  ref?: string;
  archiveKey?: string;
  readyPeers?: number;
  /** status.workloadHitRate: the running JVMs' hit rate. */
  hitRate?: number;
  /** The reason of the first condition that is not as it should be, if any. */
  problem?: string;
}

/** One node as the directory sees it: the archives it holds or pulls, and its JVMs using them. */
export interface NodeRow {
  node: string;
  zone: string;
  archives: number;
  pulling: number;
  jvms: number;
  /** Reported only by agents that read smaps. */
  savedKb?: number;
}

export interface Stats {
  at: string;
  archives: ArchiveStats[];
  nodes: NodeRow[];
  classCaches?: ClassCacheRow[];
}

const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}


/** What a manifest says about its archive; an unverified one may be anything, so only well-typed fields. */
function manifestFields(m: Partial<Manifest> | undefined): Partial<ArchiveStats> {
  const vendor = str(m?.jvm?.vendor);
  const version = str(m?.jvm?.runtimeVersion);
  return definedOnly({
    kind: str(m?.archive?.kind),
    mode: str(m?.mode),
    jvm: vendor && version ? `${vendor} ${version}` : undefined,
    app: str(m?.app?.source),
    sizeBytes: num(m?.archive?.size),
    buildHitRate: num(m?.verification?.hitRate),
    createdAt: str(m?.createdAt),
  });
}

/** The holders' usage, summed: JVMs, their hit rate, and the archive's memory when reported. */
function usageTotals(holders: Holder[]): Pick<ArchiveStats, "jvms" | "liveHitRate" | "memory"> {
  const { jvms, sharedClasses, loadedClasses } = sumClassUsage(holders);
  const mem = { rssKb: 0, pssKb: 0, roRssKb: 0, roPssKb: 0, idealRoPssKb: 0, reported: false };
  for (const u of holders.map((h) => h.usage)) {
    if (!u || u.rssKb === undefined || u.pssKb === undefined || u.roRssKb === undefined || u.roPssKb === undefined) continue;
    mem.reported = true;
    mem.rssKb += u.rssKb;
    mem.pssKb += u.pssKb;
    mem.roRssKb += u.roRssKb;
    mem.roPssKb += u.roPssKb;
    if (u.jvms > 0) mem.idealRoPssKb += u.roRssKb / u.jvms;
  }
  const memory: ArchiveMemory | undefined = mem.reported
    ? {
        rssKb: mem.rssKb,
        pssKb: mem.pssKb,
        savedKb: mem.rssKb - mem.pssKb,
        ...(mem.roRssKb > 0 ? { roPssRssRatio: ratio(mem.roPssKb, mem.roRssKb), idealRoRatio: ratio(mem.idealRoPssKb, mem.roRssKb) } : {}),
      }
    : undefined;
  return { jvms, ...(loadedClasses > 0 ? { liveHitRate: ratio(sharedClasses, loadedClasses) } : {}), ...(memory ? { memory } : {}) };
}

/** One archive's row from its manifest envelope and its holders. */
export function archiveStats(key: string, envelope: string | undefined, holders: Holder[], trust?: TrustStore): ArchiveStats {
  let manifest: Partial<Manifest> | undefined;
  let verified: boolean | undefined;
  if (envelope !== undefined && trust) {
    try {
      manifest = openEnvelope(envelope, trust, key);
      verified = true;
    } catch {
      verified = false;
    }
  }
  manifest ??= envelope !== undefined ? peekEnvelope(envelope) : undefined;
  return {
    key,
    verified,
    ...manifestFields(manifest),
    nodes: holders.filter((h) => h.complete !== false).length,
    pulling: holders.filter((h) => h.complete === false).length,
    ...usageTotals(holders),
    holders,
  };
}

/** The archives' holder entries, turned around: per node. */
export function nodeRows(archives: ArchiveStats[]): NodeRow[] {
  const rows = new Map<string, NodeRow>();
  for (const a of archives) {
    for (const h of a.holders) {
      const r = rows.get(h.node) ?? { node: h.node, zone: h.zone, archives: 0, pulling: 0, jvms: 0 };
      if (h.complete === false) r.pulling++;
      else r.archives++;
      r.jvms += h.usage?.jvms ?? 0;
      if (h.usage?.rssKb !== undefined && h.usage.pssKb !== undefined) r.savedKb = (r.savedKb ?? 0) + h.usage.rssKb - h.usage.pssKb;
      rows.set(h.node, r);
    }
  }
  return [...rows.values()].sort((a, b) => a.zone.localeCompare(b.zone) || a.node.localeCompare(b.node));
}

function classCacheRow(cc: ClassCache): ClassCacheRow {
  const s = cc.status;
  const bad = s?.conditions?.find((c) => (c.type === "Degraded" ? c.status === "True" : c.status !== "True"));
  return {
    namespace: cc.metadata.namespace ?? "",
    name: cc.metadata.name ?? "",
    workload: `${cc.spec.workloadRef.kind ?? "Deployment"}/${cc.spec.workloadRef.name}`,
    phase: s?.phase ?? "Pending",
    ...(s?.ref ? { ref: s.ref } : {}),
    ...(s?.archiveKey ? { archiveKey: s.archiveKey } : {}),
    ...(s?.readyPeers !== undefined ? { readyPeers: s.readyPeers } : {}),
    ...(s?.workloadHitRate !== undefined ? { hitRate: s.workloadHitRate } : {}),
    ...(bad ? { problem: `${bad.type}=${bad.status} ${bad.reason}` } : {}),
  };
}

/**
 * `manifests`: envelopes already read, kept across calls (a key's manifest never changes once
 * published), so a redrawing screen fetches only the holders again.
 */
export async function collectStats(opts: { directory: Directory; trust?: TrustStore; client?: KubeClient; namespace?: string; manifests?: Map<string, string> }): Promise<Stats> {
  const { directory } = opts;
  const manifests = opts.manifests ?? new Map<string, string>();
  const keys = (await directory.keys()).sort();
  const manifest = async (k: string): Promise<string | undefined> => {
    const known = manifests.get(k) ?? (await directory.manifest(k));
    if (known !== undefined) manifests.set(k, known);
    return known;
  };
  const archives = await Promise.all(keys.map(async (k) => archiveStats(k, ...(await Promise.all([manifest(k), directory.holders(k)])), opts.trust)));
  // Most used first: the archives a platform team cares about are the ones JVMs map.
  archives.sort((a, b) => b.jvms - a.jvms || b.nodes - a.nodes || a.key.localeCompare(b.key));
  const stats: Stats = { at: new Date().toISOString(), archives, nodes: nodeRows(archives) };
  if (opts.client) {
    const list = await opts.client.list<ClassCache>(ClassCaches, opts.namespace ? { namespace: opts.namespace } : {});
    stats.classCaches = list.items.map(classCacheRow).sort((a, b) => a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  }
  return stats;
}

const pct = (x: number | undefined): string => (x === undefined ? "—" : `${(x * 100).toFixed(1)}%`);
const mib = (kb: number): string => (kb / 1024).toFixed(1);


export function renderStats(s: Stats, source: string): string {
  const out: string[] = [];
  const jvms = s.archives.reduce((a, x) => a + x.jvms, 0);
  const saved = s.archives.reduce((a, x) => a + (x.memory?.savedKb ?? 0), 0);
  out.push(`classcache stats — ${source} — ${s.at}`);
  out.push(`${s.archives.length} archive(s), ${jvms} JVM(s) mapping one, ${mib(saved)} MiB saved by sharing`);
  if (s.classCaches) {
    out.push("");
    out.push(
      ...table(
        ["NAMESPACE", "CLASSCACHE", "WORKLOAD", "PHASE", "ARCHIVE", "PEERS", "HIT", "PROBLEM"],
        s.classCaches.map((c) => [c.namespace, c.name, c.workload, c.phase, c.archiveKey ? shortKey(c.archiveKey) : "—", c.readyPeers === undefined ? "—" : String(c.readyPeers), pct(c.hitRate), c.problem ?? ""]),
        "text",
      ),
    );
  }
  out.push("");
  out.push(
    ...table(
      ["ARCHIVE", "SIGNED", "KIND", "JVM", "SIZE MiB", "NODES", "PULLING", "JVMS", "HIT (BUILD)", "ΣRSS MiB", "SAVED MiB", "RO PSS/RSS (IDEAL)", "APP"],
      s.archives.map((a) => [
        shortKey(a.key),
        a.verified === undefined ? "unchecked" : a.verified ? "yes" : "NO",
        a.kind ?? "—",
        a.jvm ?? "—",
        a.sizeBytes === undefined ? "—" : (a.sizeBytes / 1048576).toFixed(1),
        String(a.nodes),
        String(a.pulling),
        String(a.jvms),
        `${pct(a.liveHitRate)} (${pct(a.buildHitRate)})`,
        a.memory ? mib(a.memory.rssKb) : "—",
        a.memory ? mib(a.memory.savedKb) : "—",
        a.memory?.roPssRssRatio !== undefined ? `${a.memory.roPssRssRatio.toFixed(2)} (${a.memory.idealRoRatio!.toFixed(2)})` : "—",
        a.app ?? "",
      ]),
      "text",
    ),
  );
  out.push("");
  out.push(
    ...table(
      ["NODE", "ZONE", "ARCHIVES", "PULLING", "JVMS", "SAVED MiB"],
      s.nodes.map((n) => [n.node, n.zone || "—", String(n.archives), String(n.pulling), String(n.jvms), n.savedKb === undefined ? "—" : mib(n.savedKb)]),
      "text",
    ),
  );
  out.push("");
  out.push("HIT: classes the running JVMs loaded from the archive (the build's verification boot in brackets). SAVED: ΣRss − ΣPss of the archive's mappings.");
  return out.join("\n") + "\n";
}
