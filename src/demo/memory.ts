/** Per-node memory sharing of the archive, summed over the node's JVMs. */
import { stat } from "node:fs/promises";
import { ratio } from "../util/format.ts";
import { addArchiveUsage, archiveUsage, emptyArchiveUsage, readSmaps, type ArchiveUsage } from "../node/smaps.ts";

export interface NodeMemory {
  node: string;
  jvms: number;
  /** Σ over the node's JVMs of the archive's own mappings. */
  rssKb: number;
  pssKb: number;
  /** ΣRss − ΣPss: what sharing the archive saved on this node. */
  savedKb: number;
  sharedCleanKb: number;
  pssRssRatio: number;
  /** Read-only part: shareable, ideal 1/jvms. */
  roPssRssRatio: number;
  /** Read-write part: copy-on-write, dirtied by each JVM, so private (ideal 1). */
  rwPssRssRatio: number;
  idealRoRatio: number;
  usage: ArchiveUsage;
}


export async function nodeMemory(node: string, archivePath: string, pids: number[]): Promise<NodeMemory> {
  const inode = (await stat(archivePath)).ino;
  let total = emptyArchiveUsage();
  for (const pid of pids) total = addArchiveUsage(total, archiveUsage(await readSmaps(pid), inode));
  return {
    node,
    jvms: pids.length,
    rssKb: total.rssKb,
    pssKb: total.pssKb,
    savedKb: total.rssKb - total.pssKb,
    sharedCleanKb: total.sharedCleanKb,
    pssRssRatio: ratio(total.pssKb, total.rssKb),
    roPssRssRatio: ratio(total.ro.pssKb, total.ro.rssKb),
    rwPssRssRatio: ratio(total.rw.pssKb, total.rw.rssKb),
    idealRoRatio: pids.length ? Math.round((1 / pids.length) * 1000) / 1000 : 0,
    usage: total,
  };
}
