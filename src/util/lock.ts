/**
 * A cross-process lock on a file: O_EXCL create, released on completion; a dead holder's lock is
 * taken over. The file names its holder by pid, the process's start time and the boot it started
 * in: a pid alone is not enough, because a process that crashed and came back — an agent that is
 * PID 1 of its container is PID 1 again — has the same pid, and its own old lock would look alive.
 */
import { readFileSync } from "node:fs";
import { open, readFile, rm, stat } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/** Who a process is, for as long as it lives: "<pid> <start time in clock ticks> <boot id>". */
export function processIdentity(pid: number): string | undefined {
  try {
    // Field 22 of /proc/<pid>/stat, counted after the command name (which may hold spaces and parentheses).
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const start = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
    const boot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    return start ? `${pid} ${start} ${boot}` : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a process with this pid runs (one of another user's counts). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Whether the holder a lock file names still runs: the same pid, started at the same time, in this boot. */
export function holderAlive(record: string): boolean {
  const [pidText, start, boot] = record.trim().split(" ");
  const pid = Number(pidText);
  if (!(pid > 0)) return false;
  if (start === undefined || boot === undefined) return alive(pid); // a record of the pid alone (an older version)
  return processIdentity(pid) === `${pid} ${start} ${boot}`;
}

export async function withFileLock<T>(path: string, fn: () => Promise<T>, timeoutMs = 30 * 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const me = processIdentity(process.pid) ?? String(process.pid);
  for (;;) {
    try {
      const fh = await open(path, "wx");
      await fh.writeFile(me);
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = await readFile(path, "utf8").catch(() => "");
      // An empty record is a holder between create and write — or one that died right there.
      const stale = holder === "" ? Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? Date.now()) > 10_000 : !holderAlive(holder);
      if (stale) {
        await rm(path, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for the lock ${path} (held by ${holder.split(" ")[0] ? `pid ${holder.split(" ")[0]}` : "a process starting"})`, { cause: err });
      await sleep(250);
    }
  }
  try {
    return await fn();
  } finally {
    await rm(path, { force: true });
  }
}
