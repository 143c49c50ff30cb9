/** File-system helpers for crash-safe writes: temp file, fsync, rename. */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { link, mkdir, open, rename, rm, stat, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";

export function tempName(dir: string, prefix = "tmp"): string {
  return join(dir, `${prefix}-${process.pid}-${randomBytes(6).toString("hex")}`);
}

export async function fsyncPath(path: string): Promise<void> {
  const fh = await open(path, constants.O_RDONLY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsync a directory so a rename inside it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  await fsyncPath(dir);
}

/**
 * Writes `data` to `path` atomically: a reader sees the old file or the whole new one.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array, mode = 0o644): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = tempName(dir, ".write");
  try {
    const fh = await open(tmp, "wx", mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    await fsyncDir(dir);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Publishes `tmp` at `path` only if nothing is there yet (first writer wins).
 * Returns false when `path` already existed; `tmp` is removed either way.
 */
export async function publishOnce(tmp: string, path: string): Promise<boolean> {
  try {
    await link(tmp, path);
    await fsyncDir(dirname(path));
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  } finally {
    await unlink(tmp).catch(() => {});
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

export function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | undefined)?.code;
}
