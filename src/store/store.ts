/**
 * The local content-addressed store. Layout on disk:
 *
 *   blobs/sha256/<hex>      every file by content: archives, jars (read-only, mtime pinned)
 *   layouts/<id>/…          a class-path layout: hard links to blobs, as the JVM sees it
 *   manifests/<key>.json    one manifest per archive key; its presence makes the archive visible
 *   scopes/<dir>/           one view per scope (a namespace, or `_cluster`): what that scope's
 *                           pods see, as hard links to the files above (see setRef)
 *   tmp/                    work in progress; anything here is garbage after a crash
 *
 * Everything is written to tmp/, hashed, fsynced and renamed into place, so a reader never
 * sees half a file, and a manifest appears only after the files it names; in a view, the ref
 * record appears only after everything it leads to. Garbage collection goes the other way: a
 * view's ref records, then its links, then the store's manifest, then the files it names.
 *
 * A manifest's mtime is when its key was last used (`touch`): garbage collection removes the
 * least recently used keys first.
 */
import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { access, chmod, link, mkdir, open, readdir, readFile, realpath, rename, rm, stat, utimes } from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { layoutId, type Layout, type LayoutFile, type Manifest } from "../archive/manifest.ts";
import { KEY_PATTERN } from "../archive/key.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { errnoCode, fsyncDir, fsyncPath, publishOnce, tempName, writeFileAtomic } from "../util/fsx.ts";
import { HEX64, sha256File } from "../util/hash.ts";
import { alive, withFileLock } from "../util/lock.ts";
import { scopeOfDirName, viewDir, VIEWS_DIR } from "./scopes.ts";

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

export { layoutId };

const STALE_TMP_MS = 24 * 3600_000;
/** Blobs and layouts no manifest references are left alone this long: a build or pull may be about to publish them. */
const ORPHAN_MIN_AGE_MS = 3600_000;

export interface StoreUsage {
  /** Bytes of blobs, each counted once (layouts are hard links to them). */
  bytes: number;
  blobs: number;
  keys: number;
}

export interface GcOptions {
  /** Remove least recently used keys while blobs take more than this. */
  quotaBytes: number;
  /** Keys never removed (in use, being pulled). */
  protect: Set<string>;
  /** The time to judge ages by (epoch ms); now when absent. */
  now?: number;
}

export interface GcResult {
  removedKeys: string[];
  freedBytes: number;
}

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
      for (const sub of ["blobs/sha256", "layouts", "manifests", VIEWS_DIR, "tmp"]) await mkdir(join(dir, sub), { recursive: true });
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
        throw new ClasscacheError("verification", `content of ${tempPath} does not match its expected sha256 ${expectedSha256}`);
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

  /** A fresh path under tmp/ for a file being received (nothing is created). */
  tempFile(prefix = "pull"): string {
    return tempName(join(this.dir, "tmp"), prefix);
  }

  /**
   * Runs `write` on a fresh temp path (a pull fills it). If `write` fails, whatever it wrote is
   * removed, and a full or read-only store becomes the store's own error; other errors pass.
   * The file is not a blob yet: `importBlob` makes it one.
   */
  async receive<T>(write: (tempPath: string) => Promise<T>, prefix = "pull"): Promise<{ tempPath: string; result: T }> {
    const tempPath = this.tempFile(prefix);
    try {
      return { tempPath, result: await write(tempPath) };
    } catch (err) {
      await rm(tempPath, { force: true }).catch(() => {});
      throw asStoreError(err, this.dir);
    }
  }

  /**
   * Makes a received file a blob, but only if its content has the expected sha256: on a
   * mismatch or any failure the temp file is removed and the error thrown. Import the blobs of
   * a pulled archive and publish its manifest under `withBuildLock`, as a build does, so `gc`
   * cannot remove a blob between its import and the manifest that names it.
   */
  async importBlob(tempPath: string, expectedSha256: string): Promise<{ sha256: string; size: number; created: boolean }> {
    try {
      if (!HEX64.test(expectedSha256)) throw new ClasscacheError("usage", `"${expectedSha256}" is not a sha256 digest (64 lowercase hex digits)`);
      return await this.addBlob(tempPath, expectedSha256);
    } catch (err) {
      await rm(tempPath, { force: true }).catch(() => {});
      throw err;
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
    this.servable = undefined;
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

  /** A scope's view: the directory that scope's pods see as the store (see setRef). */
  viewPath(scope: string): string {
    return join(this.dir, viewDir(scope));
  }

  /**
   * Records, in `scope`'s view, that `name` (a ClassCache ref and arch) resolves to `key` on this
   * node, with when the binding that said so was issued (a binding older than that is a replay).
   * The key's manifest must be in the store. Read by the pods' init step, which sees only its
   * scope's view, read-only, as the store: the key is the file's first line.
   *
   * The view holds, as hard links to the store's own files (the same inode, so every JVM on the
   * node maps one file, with its content-derived mtime), what the scope's pods need of the key:
   * `layouts/<id>/…`, `blobs/sha256/<archive>` (and whatever else its runtime names) and
   * `manifests/<key>.json`, at the same relative paths as in the store; then `refs/<name>`,
   * written last (temp, fsync, rename). A crash leaves either no ref record or a complete view;
   * links without a ref are gc's. Idempotent: asked again (every pod start may ask), it writes
   * nothing. Runs under the view lock, which gc takes too, never under the build lock.
   */
  async setRef(scope: string, name: string, key: string, issuedAt: number): Promise<void> {
    if (!/^[0-9a-f]{64}\.[a-z0-9]+$/.test(name)) throw new ClasscacheError("usage", `malformed ref name ${name}`);
    if (!KEY_PATTERN.test(key)) throw new ClasscacheError("usage", `"${key}" is not an archive key`);
    const view = this.viewPath(scope);
    const text = `${key}\nissued ${issuedAt}\n`;
    const record = refPath(view, name);
    const viewManifest = join(view, "manifests", `${key}.json`);
    try {
      // The view's ref is written last and removed first, so the same record over this very manifest file means a complete view.
      if ((await readFile(record, "utf8").catch(() => "")) === text && (await sameFile(this.manifestPath(key), viewManifest))) return;
      await this.withViewLock(async () => {
        const manifest = await readFile(this.manifestPath(key), "utf8").catch((err: unknown) => {
          if (errnoCode(err) === "ENOENT") throw new ClasscacheError("not-found", `no archive with key ${key.slice(0, 12)} in the store at ${this.dir}`);
          throw err;
        });
        const needs = viewRefs(manifest);
        for (const sub of ["blobs/sha256", "layouts", "manifests", "refs"]) await mkdir(join(view, sub), { recursive: true });
        for (const id of needs.layouts) await this.linkLayoutInto(view, id);
        for (const sha of needs.blobs) await this.linkInto(this.blobPath(sha), join(view, "blobs", "sha256", sha));
        await this.linkInto(this.manifestPath(key), viewManifest);
        for (const sub of ["blobs/sha256", "layouts", "manifests"]) await fsyncDir(join(view, sub));
        // Not writeFileAtomic: its temp file would sit in the view, which pods see; this one is in the store's tmp/.
        const tmp = this.tempFile("ref");
        try {
          const fh = await open(tmp, "wx", 0o644);
          try {
            await fh.writeFile(text);
            await fh.sync();
          } finally {
            await fh.close();
          }
          await rename(tmp, record);
        } finally {
          await rm(tmp, { force: true });
        }
        await fsyncDir(dirname(record));
      });
    } catch (err) {
      throw storeError(err, this.dir, "record a ref in");
    }
  }

  /** What setRef recorded for `name` in `scope`'s view, if anything readable. */
  async getRef(scope: string, name: string): Promise<{ key: string; issuedAt: number } | undefined> {
    return parseRef(await readFile(refPath(this.viewPath(scope), name), "utf8").catch(() => ""));
  }

  /** Hard-links a store file into a view at `dest`, unless that very file is there already. */
  private async linkInto(src: string, dest: string): Promise<void> {
    if (await sameFile(src, dest)) return;
    const tmp = this.tempFile("view");
    try {
      await link(src, tmp);
      await rename(tmp, dest); // replaces a stale link atomically
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** Builds `layouts/<id>/` in a view: the store's layout tree, hard-linked file by file in tmp/, renamed into place in one step. */
  private async linkLayoutInto(view: string, id: string): Promise<void> {
    const dest = join(view, "layouts", id);
    if (await isDir(dest)) return; // renamed in whole, and layouts never change
    const src = this.layoutPath(id);
    const work = await this.workDir("view");
    try {
      for (const e of await readdir(src, { recursive: true, withFileTypes: true })) {
        const rel = relative(src, join(e.parentPath, e.name));
        if (e.isDirectory()) await mkdir(join(work, rel), { recursive: true });
        else if (e.isFile()) {
          await mkdir(dirname(join(work, rel)), { recursive: true });
          await link(join(src, rel), join(work, rel));
        }
      }
      await fsyncDir(work);
      try {
        await rename(work, dest);
      } catch (err) {
        if (!["ENOTEMPTY", "EEXIST"].includes(errnoCode(err) ?? "")) throw err;
      }
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  /** Runs `fn` while holding the store's view lock: one writer of the scopes' views at a time (setRef, gc). */
  private async withViewLock<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(join(this.dir, "tmp", "views.lock"), fn, 3600_000);
  }

  async getManifest(key: string): Promise<Manifest | undefined> {
    try {
      return await this.readManifestFile(this.manifestPath(key));
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return undefined;
      throw err;
    }
  }

  async hasBlob(sha256: string): Promise<boolean> {
    return isFile(this.blobPath(sha256));
  }

  private servable: { at: number; sizes: Map<string, number> } | undefined;

  /**
   * The size of a blob that a manifest in this store names, or undefined: a peer server serves
   * only what a verified manifest made visible, never stray or half-imported files. Cached for
   * a second; this instance's own manifest changes drop the cache.
   */
  async servableBlobSize(sha256: string): Promise<number | undefined> {
    if (!this.servable || Date.now() - this.servable.at > 1000) {
      const sizes = new Map<string, number>();
      for (const key of await this.keys()) {
        const m = await this.getManifest(key).catch(() => undefined);
        if (!m) continue;
        sizes.set(m.archive.sha256, m.archive.size);
        for (const f of m.layout.files) sizes.set(f.sha256, f.size);
      }
      this.servable = { at: Date.now(), sizes };
    }
    const size = this.servable.sizes.get(sha256);
    return size !== undefined && (await this.hasBlob(sha256)) ? size : undefined;
  }

  /** Makes a key invisible again (its files stay until gc). */
  async removeManifest(key: string): Promise<void> {
    this.servable = undefined;
    await rm(this.manifestPath(key), { force: true });
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
   * Records that `key` was used now (or at `at`): sets its manifest's mtime, which garbage
   * collection orders keys by. False when the store has no such key.
   */
  async touch(key: string, at: Date = new Date()): Promise<boolean> {
    if (!KEY_PATTERN.test(key)) throw new ClasscacheError("usage", `"${key}" is not an archive key`);
    try {
      await utimes(this.manifestPath(key), at, at);
      return true;
    } catch (err) {
      if (errnoCode(err) === "ENOENT") return false;
      throw storeError(err, this.dir, "record a use in");
    }
  }

  /** What the store holds: blob bytes (each blob once), blobs, keys. */
  async usage(): Promise<StoreUsage> {
    const blobs = await this.scanBlobs();
    let bytes = 0;
    for (const b of blobs.values()) bytes += b.size;
    return { bytes, blobs: blobs.size, keys: (await this.keys()).length };
  }

  /**
   * Frees space, under the build lock (so never while a build or an import runs; do not call
   * it while holding that lock). First removes blobs and layouts no manifest references that
   * are over an hour old (left by crashes); then, while blobs take more than `quotaBytes`,
   * removes the least recently used key not in `protect`: its entries in every scope's view first
   * (ref records, then links), then its manifest (fsynced), then its layouts and blobs that no
   * remaining manifest references, then its build logs. Views are brought in line with the store
   * before anything else (see syncViews), so no view ever names a missing file.
   */
  async gc(opts: GcOptions): Promise<GcResult> {
    try {
      return await this.withBuildLock(() => this.withViewLock(() => this.gcLocked(opts)));
    } catch (err) {
      throw storeError(err, this.dir, "collect garbage in");
    }
  }

  private async gcLocked(opts: GcOptions): Promise<GcResult> {
    const now = opts.now ?? Date.now();
    const manifests = await this.scanManifests();
    const blobs = await this.scanBlobs();
    const layouts = await this.scanLayouts();
    const blobRefs = new Map<string, number>();
    const layoutRefs = new Map<string, number>();
    for (const m of manifests.values()) {
      for (const b of m.blobs) blobRefs.set(b, (blobRefs.get(b) ?? 0) + 1);
      for (const l of m.layouts) layoutRefs.set(l, (layoutRefs.get(l) ?? 0) + 1);
    }
    let usedBytes = 0;
    for (const b of blobs.values()) usedBytes += b.size;
    let freedBytes = 0;
    await this.syncViews(manifests, new Set());
    const removeBlob = async (sha256: string): Promise<void> => {
      const b = blobs.get(sha256);
      if (!b) return;
      await rm(this.blobPath(sha256), { force: true });
      blobs.delete(sha256);
      usedBytes -= b.size;
      freedBytes += b.size;
    };

    for (const [id, changed] of layouts) {
      if (!layoutRefs.has(id) && now - changed > ORPHAN_MIN_AGE_MS) await rm(this.layoutPath(id), { recursive: true, force: true });
    }
    for (const [sha256, b] of [...blobs]) if (!blobRefs.has(sha256) && now - b.changed > ORPHAN_MIN_AGE_MS) await removeBlob(sha256);
    await this.removeStaleTemp();

    const lru = [...manifests].filter(([key]) => !opts.protect.has(key)).sort(([ka, a], [kb, b]) => a.used - b.used || (ka < kb ? -1 : 1));
    const removedKeys: string[] = [];
    for (const [key, m] of lru) {
      if (usedBytes <= opts.quotaBytes) break;
      // The views first: a blob a view links is not freed by removing it from blobs/.
      await this.syncViews(manifests, new Set([key]));
      await rm(this.manifestPath(key), { force: true });
      await fsyncDir(join(this.dir, "manifests"));
      removedKeys.push(key);
      for (const id of m.layouts) if (release(layoutRefs, id)) await rm(this.layoutPath(id), { recursive: true, force: true });
      for (const sha256 of m.blobs) if (release(blobRefs, sha256)) await removeBlob(sha256);
      await rm(join(this.dir, "logs", key), { recursive: true, force: true });
    }
    return { removedKeys, freedBytes };
  }

  /** Every manifest with when it was last used, what it references (none when unreadable) and what a view of it links. */
  private async scanManifests(): Promise<Map<string, ScannedManifest>> {
    const out = new Map<string, ScannedManifest>();
    for (const key of await this.keys()) {
      const path = this.manifestPath(key);
      const st = await stat(path).catch(() => undefined);
      if (!st) continue;
      const text = await readFile(path, "utf8").catch(() => "");
      out.set(key, { used: st.mtimeMs, ...manifestRefs(text), view: viewRefs(text) });
    }
    return out;
  }

  /**
   * Brings every scope's view in line with the store (under the view lock). In each view, first
   * the ref records go whose key is in `dead`, has no manifest in the store, or whose view
   * holds another file than the store's manifest (a replaced one); then every manifest, blob
   * link and layout that no remaining ref of that view needs — a layout another key of the view
   * uses stays. A crash in between leaves links without a ref, which the next pass removes.
   */
  private async syncViews(manifests: ReadonlyMap<string, ScannedManifest>, dead: ReadonlySet<string>): Promise<void> {
    const views = join(this.dir, VIEWS_DIR);
    for (const name of await readdir(views).catch(() => [] as string[])) {
      if (scopeOfDirName(name) === undefined) continue;
      const view = join(views, name);
      const keep = { keys: new Set<string>(), blobs: new Set<string>(), layouts: new Set<string>() };
      let dropped = false;
      for (const ref of await readdir(join(view, "refs")).catch(() => [] as string[])) {
        const key = parseRef(await readFile(join(view, "refs", ref), "utf8").catch(() => ""))?.key;
        const m = key === undefined || dead.has(key) ? undefined : manifests.get(key);
        if (key && m && (await sameFile(this.manifestPath(key), join(view, "manifests", `${key}.json`)))) {
          keep.keys.add(key);
          for (const b of m.view.blobs) keep.blobs.add(b);
          for (const l of m.view.layouts) keep.layouts.add(l);
        } else {
          await rm(join(view, "refs", ref), { recursive: true, force: true });
          dropped = true;
        }
      }
      if (dropped) await fsyncDir(join(view, "refs"));
      await removeAllBut(join(view, "manifests"), (n) => n.endsWith(".json") && keep.keys.has(n.slice(0, -5)));
      await removeAllBut(join(view, "blobs", "sha256"), (n) => keep.blobs.has(n));
      await removeAllBut(join(view, "layouts"), (n) => keep.layouts.has(n));
    }
  }

  /** Blobs by sha256: size, and when the file last changed (ctime: its mtime is pinned). */
  private async scanBlobs(): Promise<Map<string, { size: number; changed: number }>> {
    const dir = join(this.dir, "blobs", "sha256");
    const out = new Map<string, { size: number; changed: number }>();
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (!HEX64.test(name)) continue;
      const st = await stat(join(dir, name)).catch(() => undefined);
      if (st?.isFile()) out.set(name, { size: st.size, changed: st.ctimeMs });
    }
    return out;
  }

  private async scanLayouts(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const name of await readdir(join(this.dir, "layouts")).catch(() => [] as string[])) {
      if (!HEX64.test(name)) continue;
      const st = await stat(this.layoutPath(name)).catch(() => undefined);
      if (st?.isDirectory()) out.set(name, Math.max(st.ctimeMs, st.mtimeMs));
    }
    return out;
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

  /**
   * Removes what a writer that is gone left in tmp/: an entry is named `<what>-<pid>-<random>`,
   * so one whose process no longer runs — or that this very pid made in an earlier life, before
   * this process started (an agent that is PID 1 of its container is PID 1 again after a crash)
   * — is garbage at once; anything else after a day. A crash must not leave the store full.
   */
  private async removeStaleTemp(): Promise<void> {
    const tmp = join(this.dir, "tmp");
    const started = Date.now() - process.uptime() * 1000;
    for (const name of await readdir(tmp)) {
      if (name.endsWith(".lock")) continue; // the locks take over a dead holder's themselves (util/lock.ts)
      const p = join(tmp, name);
      const st = await stat(p).catch(() => undefined);
      if (!st) continue;
      const pid = Number(/^[a-z][-a-z0-9]*?-(\d+)-[0-9a-f]+$/.exec(name)?.[1] ?? NaN);
      const orphan = Number.isInteger(pid) && pid > 0 && (pid === process.pid ? st.mtimeMs < started : !alive(pid));
      if (orphan || Date.now() - st.mtimeMs > STALE_TMP_MS) await rm(p, { recursive: true, force: true });
    }
  }

}

/**
 * Where a ref record is, under a directory that pods see as the store (a scope's view; see
 * setRef): `refs/<ref>.<arch>`.
 */
export function refPath(storeDir: string, name: string): string {
  return join(storeDir, "refs", name);
}

/** A ref record's key and issue time, or undefined when it is not one. */
function parseRef(text: string): { key: string; issuedAt: number } | undefined {
  const m = /^([0-9a-f]{64})\n(?:issued (\d+)\n)?$/.exec(text);
  return m ? { key: m[1]!, issuedAt: Number(m[2] ?? 0) } : undefined;
}

interface ScannedManifest {
  used: number;
  blobs: Set<string>;
  layouts: Set<string>;
  view: { blobs: Set<string>; layouts: Set<string> };
}

/**
 * The blobs and layouts a manifest's text names: its layout and files, its archive, and — in
 * case a future manifest names more — every `blobs/sha256/<hex>` and `layouts/<hex>` in its
 * runtime options. An unreadable manifest names nothing.
 */
export function manifestRefs(text: string): { blobs: Set<string>; layouts: Set<string> } {
  const m = parseManifest(text);
  const { blobs, layouts } = viewRefs(text);
  for (const f of m?.layout?.files ?? []) if (HEX64.test(f.sha256)) blobs.add(f.sha256);
  return { blobs, layouts };
}

/**
 * What a scope's view links of a manifest: its layout directory, its archive, and every
 * `blobs/sha256/<hex>` and `layouts/<hex>` its runtime names — the paths a pod's JVM opens.
 * (A layout's jars are in its directory; they need no `blobs/` entry of their own.)
 */
export function viewRefs(text: string): { blobs: Set<string>; layouts: Set<string> } {
  const blobs = new Set<string>();
  const layouts = new Set<string>();
  const m = parseManifest(text);
  if (!m) return { blobs, layouts };
  if (HEX64.test(m.layout?.id ?? "")) layouts.add(m.layout.id);
  if (HEX64.test(m.archive?.sha256 ?? "")) blobs.add(m.archive.sha256);
  const runtime = JSON.stringify(m.runtime ?? {});
  for (const x of runtime.matchAll(/blobs\/sha256\/([0-9a-f]{64})/g)) blobs.add(x[1]!);
  for (const x of runtime.matchAll(/layouts\/([0-9a-f]{64})/g)) layouts.add(x[1]!);
  return { blobs, layouts };
}

function parseManifest(text: string): Manifest | undefined {
  try {
    const m = JSON.parse(text) as unknown;
    return m && typeof m === "object" ? (m as Manifest) : undefined;
  } catch {
    return undefined;
  }
}

/** Are `a` and `b` the same file (device and inode)? False when either is missing. */
async function sameFile(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([stat(a).catch(() => undefined), stat(b).catch(() => undefined)]);
  return x !== undefined && y !== undefined && x.ino === y.ino && x.dev === y.dev;
}

/** Removes every entry of `dir` whose name `keep` refuses (recursively); a missing `dir` is fine. */
async function removeAllBut(dir: string, keep: (name: string) => boolean): Promise<void> {
  let removed = false;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (keep(name)) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed = true;
  }
  if (removed) await fsyncDir(dir);
}

/** Drops one reference; true when none is left. */
function release(refs: Map<string, number>, id: string): boolean {
  const n = (refs.get(id) ?? 1) - 1;
  if (n > 0) refs.set(id, n);
  else refs.delete(id);
  return n <= 0;
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

