/**
 * Which JVMs on this node have an archive of the store mapped, and how many of their classes
 * came from it — read at no cost from /proc and each JVM's perf counters (hsperfdata), for every
 * JVM on the node whatever container it runs in. This is the hit rate workloads really get; the
 * archive's mappings in their smaps say how much memory sharing it saves.
 *
 * A container's JVM sees the store at the fixed root and keeps its perf counters in its own
 * /tmp under its own pid: both are reached through /proc/<pid> (root/ and status's NSpid).
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { HolderUsage } from "../directory/directory.ts";
import { readClassCounts } from "../jvm/hsperf.ts";
import { archiveUsage, parseSmaps } from "./smaps.ts";

const ARCHIVE_PATH = /\/blobs\/sha256\/([0-9a-f]{64})$/;

/** The archive blob a process maps from one of `prefixes` (the store as the node and as containers see it). */
export function mappedArchive(maps: string, prefixes: string[], archives: ReadonlySet<string>): string | undefined {
  for (const line of maps.split("\n")) {
    const path = line.slice(line.indexOf("/")).trim();
    if (!prefixes.some((p) => path.startsWith(`${p}/blobs/sha256/`))) continue;
    const sha = ARCHIVE_PATH.exec(path)?.[1];
    if (sha && archives.has(sha)) return sha;
  }
  return undefined;
}

/** The pid a process has in its own pid namespace (the name of its hsperfdata file). */
export function namespacePid(status: string): number | undefined {
  const line = status.split("\n").find((l) => l.startsWith("NSpid:"));
  const last = line?.trim().split(/\s+/).pop();
  return last && /^\d+$/.test(last) ? Number(last) : undefined;
}

interface ArchiveMemory {
  rssKb: number;
  pssKb: number;
  roRssKb: number;
  roPssKb: number;
}

/**
 * The archive's memory in each JVM, re-read from smaps at most every `maxAgeMs`: reading smaps
 * walks the page tables of the whole process (its heap too), which is not free on a node with
 * many large JVMs. A JVM seen for the first time is read at once.
 */
export class SmapsCache {
  readonly #entries = new Map<string, { at: number; mem: ArchiveMemory }>();
  readonly #maxAgeMs: number;

  constructor(maxAgeMs = 60_000) {
    this.#maxAgeMs = maxAgeMs;
  }

  async read(proc: string, pid: string, sha: string): Promise<ArchiveMemory> {
    const id = `${pid}:${sha}`;
    const hit = this.#entries.get(id);
    if (hit && Date.now() - hit.at < this.#maxAgeMs) return hit.mem;
    const vmas = parseSmaps(await readFile(join(proc, pid, "smaps"), "utf8"));
    const a = archiveUsage(vmas, vmas.find((v) => v.path.endsWith(`/blobs/sha256/${sha}`))?.inode ?? 0);
    const mem = { rssKb: a.rssKb, pssKb: a.pssKb, roRssKb: a.ro.rssKb, roPssKb: a.ro.pssKb };
    this.#entries.set(id, { at: Date.now(), mem });
    return mem;
  }

  /** Forgets processes that no longer map an archive. */
  keepOnly(ids: ReadonlySet<string>): void {
    for (const id of this.#entries.keys()) if (!ids.has(id)) this.#entries.delete(id);
  }
}

/** Usage per archive sha256, over every process on this machine. */
export async function scanUsage(prefixes: string[], archives: ReadonlySet<string>, proc = "/proc", smaps = new SmapsCache(0)): Promise<Map<string, HolderUsage>> {
  const out = new Map<string, HolderUsage>();
  let pids: string[];
  try {
    pids = (await readdir(proc)).filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  const seen = new Set<string>();
  for (const pid of pids) {
    try {
      const sha = mappedArchive(await readFile(join(proc, pid, "maps"), "utf8"), prefixes, archives);
      if (!sha) continue;
      const nspid = namespacePid(await readFile(join(proc, pid, "status"), "utf8")) ?? Number(pid);
      const counts = await readClassCounts(nspid, join(proc, pid, "root", "tmp"));
      if (!counts) continue;
      const mem = await smaps.read(proc, pid, sha);
      seen.add(`${pid}:${sha}`);
      const u = out.get(sha) ?? { jvms: 0, sharedClasses: 0, loadedClasses: 0, rssKb: 0, pssKb: 0, roRssKb: 0, roPssKb: 0 };
      u.jvms += 1;
      u.sharedClasses += counts.shared;
      u.loadedClasses += counts.shared + counts.notShared;
      u.rssKb! += mem.rssKb;
      u.pssKb! += mem.pssKb;
      u.roRssKb! += mem.roRssKb;
      u.roPssKb! += mem.roPssKb;
      out.set(sha, u);
    } catch {
      // The process exited, or is not ours to read: skip it.
    }
  }
  smaps.keepOnly(seen);
  return out;
}
