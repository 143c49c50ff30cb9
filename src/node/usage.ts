/**
 * Which JVMs on this node have an archive of the store mapped, and how many of their classes
 * came from it — read at no cost from /proc and each JVM's perf counters (hsperfdata), for every
 * JVM on the node whatever container it runs in. This is the hit rate workloads really get; the
 * archive's mappings in their smaps say how much memory sharing it saves.
 *
 * A container's JVM sees the store at the fixed root and keeps its perf counters in its own
 * /tmp under its own pid: both are reached through /proc/<pid> (root/ and status's NSpid).
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import type { HolderUsage } from "../directory/directory.ts";
import { readClassCounts } from "../jvm/hsperf.ts";
import { archiveUsage, parseSmaps } from "./smaps.ts";

const ARCHIVE_PATH = /\/blobs\/sha256\/([0-9a-f]{64})$/;

/**
 * The archive blob a process maps from one of `prefixes` (the store as the node and as containers
 * see it). `archives` maps each blob's sha256 to its file identity (see fileId), when known: a
 * mapping counts only if it is that very file. Paths alone cannot tell two stores apart that
 * containers see at the same path — several simulated nodes on one machine, say.
 */
export function mappedArchive(maps: string, prefixes: string[], archives: ReadonlyMap<string, string | undefined>): string | undefined {
  for (const line of maps.split("\n")) {
    const path = line.slice(line.indexOf("/")).trim();
    if (!prefixes.some((p) => path.startsWith(`${p}/blobs/sha256/`))) continue;
    const sha = ARCHIVE_PATH.exec(path)?.[1];
    if (!sha || !archives.has(sha)) continue;
    const want = archives.get(sha);
    const [, , , dev, inode] = line.split(/\s+/);
    const [major, minor] = (dev ?? "").split(":").map((h) => parseInt(h, 16));
    if (want === undefined || want === `${major}:${minor}:${inode}`) return sha;
  }
  return undefined;
}

/** A file's identity as /proc/<pid>/maps shows it: device major:minor and inode, in decimal. */
export async function fileId(path: string): Promise<string> {
  const s = await stat(path, { bigint: true });
  // glibc's gnu_dev_major/gnu_dev_minor
  const major = ((s.dev >> 8n) & 0xfffn) | ((s.dev >> 32n) & ~0xfffn);
  const minor = (s.dev & 0xffn) | ((s.dev >> 12n) & ~0xffn);
  return `${major}:${minor}:${s.ino}`;
}

/** The real uid of a process, from /proc/<pid>/status ("Uid: real effective saved fs"). */
export function processUid(status: string): number | undefined {
  const m = /^Uid:\s+(\d+)/m.exec(status);
  return m ? Number(m[1]) : undefined;
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
 * many large JVMs. All of an archive's JVMs are read at once when the set of JVMs mapping it
 * changes, because every sharer's Pss changes with it.
 */
export class SmapsCache {
  readonly #entries = new Map<string, { at: number; mem: ArchiveMemory }>();
  /** The JVMs (pids) mapping each archive at the last scan. */
  readonly #sharers = new Map<string, string>();
  readonly #maxAgeMs: number;

  constructor(maxAgeMs = 60_000) {
    this.#maxAgeMs = maxAgeMs;
  }

  /** Records who maps `sha` now; true when that differs from the last scan (and so cached figures are stale). */
  sharersChanged(sha: string, pids: string[]): boolean {
    const now = [...pids].sort().join(",");
    const changed = this.#sharers.get(sha) !== now;
    this.#sharers.set(sha, now);
    return changed;
  }

  async read(proc: string, pid: string, sha: string, fresh = false): Promise<ArchiveMemory> {
    const id = `${pid}:${sha}`;
    const hit = this.#entries.get(id);
    if (hit && !fresh && Date.now() - hit.at < this.#maxAgeMs) return hit.mem;
    const vmas = parseSmaps(await readFile(join(proc, pid, "smaps"), "utf8"));
    const a = archiveUsage(vmas, vmas.find((v) => v.path.endsWith(`/blobs/sha256/${sha}`))?.inode ?? 0);
    const mem = { rssKb: a.rssKb, pssKb: a.pssKb, roRssKb: a.ro.rssKb, roPssKb: a.ro.pssKb };
    this.#entries.set(id, { at: Date.now(), mem });
    return mem;
  }

  /** Forgets processes that no longer map an archive, and archives no process maps. */
  keepOnly(ids: ReadonlySet<string>, shas: ReadonlySet<string>): void {
    for (const id of this.#entries.keys()) if (!ids.has(id)) this.#entries.delete(id);
    for (const sha of this.#sharers.keys()) if (!shas.has(sha)) this.#sharers.delete(sha);
  }
}

/** Usage per archive sha256, over every process on this machine. */
export async function scanUsage(prefixes: string[], archives: ReadonlyMap<string, string | undefined>, proc = "/proc", smaps = new SmapsCache(0)): Promise<Map<string, HolderUsage>> {
  const out = new Map<string, HolderUsage>();
  let pids: string[];
  try {
    pids = (await readdir(proc)).filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  // First who maps what, and their class counts (cheap); then the archives' memory (smaps).
  const jvms = new Map<string, { pid: string; shared: number; notShared: number }[]>();
  for (const pid of pids) {
    try {
      const sha = mappedArchive(await readFile(join(proc, pid, "maps"), "utf8"), prefixes, archives);
      if (!sha) continue;
      const status = await readFile(join(proc, pid, "status"), "utf8");
      const nspid = namespacePid(status) ?? Number(pid);
      // The file lives in the process's own /tmp, which it (and its container) controls: read as hostile.
      const counts = await readClassCounts(nspid, join(proc, pid, "root", "tmp"), processUid(status));
      if (counts) jvms.set(sha, [...(jvms.get(sha) ?? []), { pid, ...counts }]);
    } catch {
      // The process exited, or is not ours to read: skip it.
    }
  }
  const seen = new Set<string>();
  for (const [sha, list] of jvms) {
    const fresh = smaps.sharersChanged(sha, list.map((j) => j.pid));
    const u: HolderUsage = { jvms: 0, sharedClasses: 0, loadedClasses: 0, rssKb: 0, pssKb: 0, roRssKb: 0, roPssKb: 0 };
    for (const j of list) {
      try {
        const mem = await smaps.read(proc, j.pid, sha, fresh);
        seen.add(`${j.pid}:${sha}`);
        u.jvms += 1;
        u.sharedClasses += j.shared;
        u.loadedClasses += j.shared + j.notShared;
        u.rssKb! += mem.rssKb;
        u.pssKb! += mem.pssKb;
        u.roRssKb! += mem.roRssKb;
        u.roPssKb! += mem.roPssKb;
      } catch {
        // Exited since.
      }
    }
    if (u.jvms > 0) out.set(sha, u);
  }
  smaps.keepOnly(seen, new Set(jvms.keys()));
  return out;
}
