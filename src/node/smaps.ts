/**
 * Memory accounting from /proc/<pid>/smaps: how much of a JVM's memory is the classcache
 * archive, and how much of that is shared with the other JVMs on the node. PSS (proportional
 * set size) divides each shared page among its sharers, so ΣRss − ΣPss is what sharing saved.
 * Only the VMAs of the archive itself count (matched by inode) — the JDK's own classes.jsa is
 * shared anyway and is not classcache's saving.
 */
import { readFile } from "node:fs/promises";

export interface Vma {
  perms: string;
  inode: number;
  path: string;
  rssKb: number;
  pssKb: number;
  sharedCleanKb: number;
  privateDirtyKb: number;
}

const HEADER = /^[0-9a-f]+-[0-9a-f]+ (\S{4}) [0-9a-f]+ \S+ (\d+)\s*(.*)$/;
const FIELD = /^(\w+):\s+(\d+) kB$/;

export function parseSmaps(text: string): Vma[] {
  const out: Vma[] = [];
  let cur: Vma | undefined;
  for (const line of text.split("\n")) {
    const h = HEADER.exec(line);
    if (h) {
      cur = { perms: h[1]!, inode: Number(h[2]), path: h[3] ?? "", rssKb: 0, pssKb: 0, sharedCleanKb: 0, privateDirtyKb: 0 };
      out.push(cur);
      continue;
    }
    const f = FIELD.exec(line);
    if (!f || !cur) continue;
    const kb = Number(f[2]);
    if (f[1] === "Rss") cur.rssKb = kb;
    else if (f[1] === "Pss") cur.pssKb = kb;
    else if (f[1] === "Shared_Clean") cur.sharedCleanKb = kb;
    else if (f[1] === "Private_Dirty") cur.privateDirtyKb = kb;
  }
  return out;
}

export interface Usage {
  rssKb: number;
  pssKb: number;
}

export interface ArchiveUsage extends Usage {
  sharedCleanKb: number;
  privateDirtyKb: number;
  /** Read-only (and executable) mappings: the part JVMs can share. */
  ro: Usage;
  /** Writable mappings: copy-on-write, dirtied by each JVM, so private. */
  rw: Usage;
}

const sum = (vs: Vma[]): Usage => ({ rssKb: vs.reduce((a, v) => a + v.rssKb, 0), pssKb: vs.reduce((a, v) => a + v.pssKb, 0) });

/** The archive's share of one process, from the VMAs that map the file with this inode. */
export function archiveUsage(vmas: Vma[], inode: number): ArchiveUsage {
  const mine = vmas.filter((v) => v.inode === inode && inode !== 0);
  return {
    ...sum(mine),
    sharedCleanKb: mine.reduce((a, v) => a + v.sharedCleanKb, 0),
    privateDirtyKb: mine.reduce((a, v) => a + v.privateDirtyKb, 0),
    ro: sum(mine.filter((v) => !v.perms.includes("w"))),
    rw: sum(mine.filter((v) => v.perms.includes("w"))),
  };
}

export function processUsage(vmas: Vma[]): Usage {
  return sum(vmas);
}

export async function readSmaps(pid: number): Promise<Vma[]> {
  return parseSmaps(await readFile(`/proc/${pid}/smaps`, "utf8"));
}

export function addArchiveUsage(a: ArchiveUsage, b: ArchiveUsage): ArchiveUsage {
  return {
    rssKb: a.rssKb + b.rssKb,
    pssKb: a.pssKb + b.pssKb,
    sharedCleanKb: a.sharedCleanKb + b.sharedCleanKb,
    privateDirtyKb: a.privateDirtyKb + b.privateDirtyKb,
    ro: { rssKb: a.ro.rssKb + b.ro.rssKb, pssKb: a.ro.pssKb + b.ro.pssKb },
    rw: { rssKb: a.rw.rssKb + b.rw.rssKb, pssKb: a.rw.pssKb + b.rw.pssKb },
  };
}

export const emptyArchiveUsage = (): ArchiveUsage => ({ rssKb: 0, pssKb: 0, sharedCleanKb: 0, privateDirtyKb: 0, ro: { rssKb: 0, pssKb: 0 }, rw: { rssKb: 0, pssKb: 0 } });
