/**
 * The local content-addressed store. Layout on disk:
 *
 *   blobs/sha256/<hex>      every file by content: archives, jars (read-only, mtime pinned)
 *   layouts/<id>/…          a class-path layout: hard links to blobs, as the JVM sees it
 *   manifests/<key>.json    one manifest per archive key; its presence makes the archive visible
 *   tmp/                    work in progress; anything here is garbage after a crash
 *
 * Everything is written to tmp/, hashed, fsynced and renamed into place, so a reader never
 * sees half a file, and a manifest appears only after the files it names.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { access, chmod, link, mkdir, open, readdir, readFile, realpath, rename, rm, stat, utimes } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { Layout, LayoutFile, Manifest } from "../archive/manifest.ts";
import { KEY_PATTERN } from "../archive/key.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { errnoCode, fsyncDir, fsyncPath, publishOnce, writeFileAtomic } from "../util/fsx.ts";
import { canonicalJson, sha256File, sha256Hex } from "../util/hash.ts";
import { withFileLock } from "../util/lock.ts";

/**
 * A file's mtime as a function of its content. The JVM validates class-path jars by size and
 * mtime, not content: equal bytes must get equal mtimes on every machine, and different bytes
 * must (almost surely) get different ones, or a stale archive would be accepted.
 */
export function pinnedMtime(sha256: string): Date {
  const base = 946_684_800; // 2000-01-01T00:00:00Z
  const span = 630_720_000; // twenty years of seconds
  return new Date((base + (parseInt(sha256.slice(0, 8), 16) % span)) * 1000);
}

export function layoutId(files: LayoutFile[]): string {
  return sha256Hex(canonicalJson(files.map((f) => [f.path, f.sha256, f.size])));
}

const STALE_TMP_MS = 24 * 3600_000;

/** What a build added to the store, so a failure can take it back. */
export interface Journal {
  blobs: string[];
  layouts: string[];
}

export class LocalStore {
  readonly dir: string;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /** Opens (creating if needed) a store and proves it is writable. */
  static async open(dir: string): Promise<LocalStore> {
    try {
      await mkdir(dir, { recursive: true });
      await access(dir, constants.W_OK); // EROFS on a read-only mount, even for root
      for (const sub of ["blobs/sha256", "layouts", "manifests", "tmp"]) await mkdir(join(dir, sub), { recursive: true });
      const real = await realpath(dir);
      const probe = join(real, "tmp", `.probe-${process.pid}-${randomBytes(4).toString("hex")}`);
      const fh = await open(probe, "wx");
      await fh.close();
      await rm(probe);
      const store = new LocalStore(real);
      await store.removeStaleTemp();
      return store;
    } catch (err) {
      throw storeError(err, dir, "open");
    }
  }

  blobPath(sha256: string): string {
    return join(this.dir, "blobs", "sha256", sha256);
  }

  layoutPath(id: string): string {
    return join(this.dir, "layouts", id);
  }

  manifestPath(key: string): string {
    return join(this.dir, "manifests", `${key}.json`);
  }

  /** A fresh private directory under tmp/ for one piece of work. */
  async workDir(prefix: string): Promise<string> {
    const d = join(this.dir, "tmp", `${prefix}-${process.pid}-${randomBytes(6).toString("hex")}`);
    await mkdir(d, { recursive: true });
    return d;
  }

  /**
   * Moves a finished temp file into blobs/ under its sha256. The file is fsynced, made
   * read-only and given its content-derived mtime before the rename makes it visible.
   */
  async addBlob(tempPath: string, expectedSha256?: string): Promise<{ sha256: string; size: number; created: boolean }> {
    try {
      const { sha256, size } = await sha256File(tempPath);
      if (expectedSha256 && expectedSha256 !== sha256) {
        throw new ClasscacheError("store", `content of ${tempPath} does not match its expected sha256 ${expectedSha256}`);
      }
      const dest = this.blobPath(sha256);
      if (await isFile(dest)) {
        await rm(tempPath, { force: true });
        return { sha256, size, created: false };
      }
      await fsyncPath(tempPath);
      await chmod(tempPath, 0o444);
      const mtime = pinnedMtime(sha256);
      await utimes(tempPath, mtime, mtime);
      await rename(tempPath, dest);
      await fsyncDir(dirname(dest));
      return { sha256, size, created: true };
    } catch (err) {
      throw storeError(err, this.dir, "write a blob to");
    }
  }

  /**
   * Turns files in a work directory into an immutable layout: each becomes a blob, and
   * layouts/<id>/ is a tree of hard links to them, renamed into place in one step.
   */
  async addLayout(files: { path: string; tempPath: string }[], journal?: Journal): Promise<Layout> {
    const entries: LayoutFile[] = [];
    for (const f of files) {
      const { sha256, size, created } = await this.addBlob(f.tempPath);
      if (created) journal?.blobs.push(sha256);
      entries.push({ path: f.path, sha256, size });
    }
    entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const id = layoutId(entries);
    if (await this.linkLayout({ id, files: entries })) journal?.layouts.push(id);
    return { id, files: entries };
  }

  /** Creates layouts/<id>/ from blobs already in the store (idempotent). True if it created it. */
  async linkLayout(layout: Layout): Promise<boolean> {
    const final = this.layoutPath(layout.id);
    if (await isDir(final)) return false;
    const work = await this.workDir("layout");
    try {
      for (const f of layout.files) {
        if (f.path.split("/").some((p) => p === ".." || p === "" || p === ".")) {
          throw new ClasscacheError("store", `layout ${layout.id} names an unsafe path: ${f.path}`);
        }
        const target = join(work, f.path);
        await mkdir(dirname(target), { recursive: true });
        await link(this.blobPath(f.sha256), target);
      }
      await fsyncDir(work);
      try {
        await rename(work, final);
      } catch (err) {
        // Someone else linked the same layout first: theirs is identical.
        if (!["ENOTEMPTY", "EEXIST"].includes(errnoCode(err) ?? "")) throw err;
        return false;
      }
      await fsyncDir(dirname(final));
      return true;
    } catch (err) {
      throw storeError(err, this.dir, "link a layout in");
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  /**
   * Publishes a manifest; the first one for a key wins, unless `replace` (a forced local
   * rebuild). Returns the manifest now in force.
   */
  async publishManifest(manifest: Manifest, opts: { replace?: boolean } = {}): Promise<{ manifest: Manifest; published: boolean }> {
    const dest = this.manifestPath(manifest.key);
    try {
      const text = JSON.stringify(manifest, null, 2) + "\n";
      if (opts.replace) {
        await writeFileAtomic(dest, text);
        return { manifest, published: true };
      }
      const tmp = join(this.dir, "tmp", `manifest-${process.pid}-${randomBytes(6).toString("hex")}`);
      await writeFileAtomic(tmp, text);
      const published = await publishOnce(tmp, dest);
      return { manifest: published ? manifest : await this.readManifestFile(dest), published };
    } catch (err) {
      throw storeError(err, this.dir, "publish a manifest in");
    }
  }

  async getManifest(key: string): Promise<Manifest | undefined> {
    try {
      return await this.readManifestFile(this.manifestPath(key));
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return undefined;
      throw err;
    }
  }

  /** Resolves a full key or a unique prefix of at least 8 hex digits. */
  async resolveKey(keyOrPrefix: string): Promise<string> {
    const k = keyOrPrefix.toLowerCase().replace(/^sha256:/, "");
    if (!/^[0-9a-f]{8,64}$/.test(k)) {
      throw new ClasscacheError("usage", `"${keyOrPrefix}" is not an archive key`, { hint: "a key is 64 hex digits; a unique prefix of 8 or more is enough" });
    }
    const keys = await this.keys();
    const matches = keys.filter((x) => x.startsWith(k));
    if (matches.length === 1) return matches[0]!;
    if (matches.length > 1) throw new ClasscacheError("usage", `key prefix ${k} is ambiguous (${matches.length} archives)`, { hint: "give more digits" });
    throw new ClasscacheError("not-found", `no archive with key ${k} in the store at ${this.dir}`, { hint: "run `classcache build` first, or pass the right --store" });
  }

  async keys(): Promise<string[]> {
    const names = await readdir(join(this.dir, "manifests")).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith(".json") && KEY_PATTERN.test(n.slice(0, -5))).map((n) => n.slice(0, -5));
  }

  /**
   * Undoes what a failed build added: the blobs and layouts in `journal` that no manifest
   * references. Call it under the build lock, so no other build is using them.
   */
  async rollback(journal: Journal): Promise<void> {
    const inUse = { blobs: new Set<string>(), layouts: new Set<string>() };
    for (const key of await this.keys()) {
      const m = await this.getManifest(key).catch(() => undefined);
      if (!m) continue;
      inUse.layouts.add(m.layout.id);
      inUse.blobs.add(m.archive.sha256);
      for (const f of m.layout.files) inUse.blobs.add(f.sha256);
    }
    for (const id of journal.layouts) if (!inUse.layouts.has(id)) await rm(this.layoutPath(id), { recursive: true, force: true });
    for (const b of journal.blobs) if (!inUse.blobs.has(b)) await rm(this.blobPath(b), { force: true });
    journal.blobs.length = 0;
    journal.layouts.length = 0;
  }

  /** Runs `fn` while holding the store's build lock: one build mutates a store at a time. */
  async withBuildLock<T>(fn: () => Promise<T>, onWait?: () => void): Promise<T> {
    const lock = join(this.dir, "tmp", "build.lock");
    const t = onWait ? setTimeout(onWait, 1000) : undefined;
    return withFileLock(lock, async () => {
      clearTimeout(t);
      return fn();
    }, 24 * 3600_000);
  }

  private async readManifestFile(path: string): Promise<Manifest> {
    return JSON.parse(await readFile(path, "utf8")) as Manifest;
  }

  private async removeStaleTemp(): Promise<void> {
    const tmp = join(this.dir, "tmp");
    for (const name of await readdir(tmp)) {
      if (name === "build.lock") continue;
      const p = join(tmp, name);
      const st = await stat(p).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > STALE_TMP_MS) await rm(p, { recursive: true, force: true });
    }
  }
}

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isFile() ?? false;
}

async function isDir(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isDirectory() ?? false;
}

const STORE_ERRNO = new Set(["ENOSPC", "EDQUOT", "EACCES", "EPERM", "EROFS"]);

/** A file-system error that is about the store (full, read-only) becomes a store error; others pass. */
export function asStoreError(err: unknown, dir: string): unknown {
  return STORE_ERRNO.has(errnoCode(err) ?? "") ? storeError(err, dir, "write to") : err;
}

/** Turns file-system failures into messages that say what to do. */
export function storeError(err: unknown, dir: string, action: string): unknown {
  if (err instanceof ClasscacheError) return err;
  const code = errnoCode(err);
  if (code === "ENOSPC" || code === "EDQUOT") {
    return new ClasscacheError("store", `the store at ${dir} is full`, { hint: "free space, or point --store at a larger disk; nothing was left half-written", cause: err });
  }
  if (code === "EACCES" || code === "EPERM" || code === "EROFS") {
    return new ClasscacheError("store", `cannot ${action} the store at ${dir}: it is not writable`, { hint: "pass a writable directory with --store", cause: err });
  }
  if (code === "ENOTDIR" || code === "EEXIST") {
    return new ClasscacheError("store", `cannot ${action} the store at ${dir}: it is not a directory`, { hint: "pass a directory with --store", cause: err });
  }
  return new ClasscacheError("store", `cannot ${action} the store at ${dir}`, { cause: err });
}

