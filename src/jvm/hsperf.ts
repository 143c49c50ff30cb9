/**
 * Reads a running JVM's performance counters from its hsperfdata file — the documented
 * binary format behind `jcmd <pid> PerfCounter.print`. It costs the JVM nothing and needs no
 * agent, so the class hit rate of any JVM on a node can be read from outside.
 */
import { constants } from "node:fs";
import { lstat, open, readdir } from "node:fs/promises";
import { join } from "node:path";

/**
 * Far more than any JVM's perf data (PerfDataMemorySize is 64 KiB by default): a file larger
 * than this is not one, whatever its name says.
 */
export const MAX_PERF_DATA_BYTES = 1 << 20;

const MAGIC = 0xcafec0c0;

export type PerfValue = bigint | string;

export function parsePerfData(buf: Buffer): Map<string, PerfValue> {
  if (buf.length < 32 || buf.readUInt32BE(0) !== MAGIC) throw new Error("not an hsperfdata file (bad magic)");
  const le = buf.readUInt8(4) === 1;
  const u32 = (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o));
  const i64 = (o: number) => (le ? buf.readBigInt64LE(o) : buf.readBigInt64BE(o));
  const major = buf.readUInt8(5);
  if (major !== 2) throw new Error(`unsupported hsperfdata version ${major}`);
  const entryOffset = u32(24);
  const numEntries = u32(28);
  const out = new Map<string, PerfValue>();
  let pos = entryOffset;
  for (let i = 0; i < numEntries && pos + 20 <= buf.length; i++) {
    const entryLength = u32(pos);
    if (entryLength === 0) break;
    const nameStart = pos + u32(pos + 4);
    const vectorLength = u32(pos + 8);
    const type = String.fromCharCode(buf.readUInt8(pos + 12));
    const dataStart = pos + u32(pos + 16);
    const nameEnd = buf.indexOf(0, nameStart);
    const name = buf.toString("latin1", nameStart, nameEnd);
    if (type === "J" && vectorLength === 0) out.set(name, i64(dataStart));
    else if (type === "B" && vectorLength > 0) {
      const end = buf.indexOf(0, dataStart);
      out.set(name, buf.toString("utf8", dataStart, end < 0 || end > dataStart + vectorLength ? dataStart + vectorLength : end));
    }
    pos += entryLength;
  }
  return out;
}

export interface ClassCounts {
  /** Classes loaded from a class-data archive (java.cls.sharedLoadedClasses). */
  shared: number;
  /** Classes loaded any other way (java.cls.loadedClasses). */
  notShared: number;
}

export function classCounts(counters: Map<string, PerfValue>): ClassCounts | undefined {
  const shared = counters.get("java.cls.sharedLoadedClasses");
  const loaded = counters.get("java.cls.loadedClasses");
  if (typeof shared !== "bigint" || typeof loaded !== "bigint") return undefined;
  return { shared: Number(shared), notShared: Number(loaded) };
}

export function hitRate(c: ClassCounts): number {
  const total = c.shared + c.notShared;
  return total === 0 ? 0 : c.shared / total;
}

/**
 * The hsperfdata file of a pid under a /tmp directory (any user's), read as what it is: a file
 * the JVM's own process — or whoever runs in its container — controls. So: a real directory per
 * user (a symlink is not followed), the file itself opened without following a symlink and
 * without blocking (a FIFO answers at once, and is refused), a regular file only, of the
 * process's owner when `uid` is given, and at most MAX_PERF_DATA_BYTES. Anything else is "no
 * counters": it can neither hang nor flood the reader.
 */
export async function readPerfFile(pid: number, tmpDir = "/tmp", uid?: number): Promise<Buffer | undefined> {
  let dirs: string[];
  try {
    dirs = (await readdir(tmpDir)).filter((d) => d.startsWith("hsperfdata_"));
  } catch {
    return undefined;
  }
  for (const d of dirs) {
    const dir = join(tmpDir, d);
    if (!(await lstat(dir).catch(() => undefined))?.isDirectory()) continue;
    const fh = await open(join(dir, String(pid)), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK).catch(() => undefined);
    if (!fh) continue;
    try {
      const st = await fh.stat();
      if (!st.isFile() || st.size > MAX_PERF_DATA_BYTES || (uid !== undefined && st.uid !== uid)) continue;
      const buf = Buffer.alloc(st.size);
      const { bytesRead } = await fh.read(buf, 0, st.size, 0);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }
  return undefined;
}

export async function readClassCounts(pid: number, tmpDir = "/tmp", uid?: number): Promise<ClassCounts | undefined> {
  const data = await readPerfFile(pid, tmpDir, uid);
  return data ? classCounts(parsePerfData(data)) : undefined;
}
