/** Store snapshots: what a failed command must leave untouched. */
import { readdir, stat } from "node:fs/promises";
import { join, relative } from "node:path";

/** Every file and directory under `dir` with size and mtime, except build logs (diagnostics, kept on purpose). */
export async function snapshot(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    let entries;
    try {
      entries = await readdir(d, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(d, e.name);
      const rel = relative(dir, p);
      if (rel === "logs" || rel.startsWith("logs/")) continue;
      const st = await stat(p);
      out.push(`${rel}${e.isDirectory() ? "/" : ` ${st.size} ${st.mtimeMs}`}`);
      if (e.isDirectory()) await walk(p);
    }
  };
  await walk(dir);
  return out.sort();
}
