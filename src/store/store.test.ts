import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { link, mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from "node:fs/promises";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Layout, Manifest } from "../archive/manifest.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { PeerMetrics } from "../p2p/metrics.ts";
import { pullBlob, Quarantine } from "../p2p/puller.ts";
import { createPeerServer } from "../p2p/server.ts";
import { listen, mapSource, memoryLogger, randomFile, stop } from "../p2p/testing.ts";
import { sha256Hex } from "../util/hash.ts";
import { scopeDirName, scopeOfDirName } from "./scopes.ts";
import { LocalStore, manifestRefs, pinnedMtime } from "./store.ts";

const MiB = 1024 * 1024;
const HOUR = 3600_000;

/** A minimal manifest: what the store reads of one is its key, layout, archive and runtime. */
function manifest(key: string, layout: Layout, archive: { sha256: string; size: number }): Manifest {
  const file = `blobs/sha256/${archive.sha256}`;
  return {
    key,
    layout,
    archive: { kind: "cds", ...archive, file },
    runtime: { launch: { kind: "jar", jar: `layouts/${layout.id}/app.jar` }, jvmOptions: [`-XX:SharedArchiveFile={root}/${file}`], appArgs: [] },
  } as unknown as Manifest;
}

function key(name: string): string {
  return sha256Hex(`key ${name}`);
}

describe("local store: usage, LRU garbage collection and imports", () => {
  let dir: string;
  let n = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-store-"));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function fresh(): Promise<LocalStore> {
    return LocalStore.open(join(dir, `store-${++n}`));
  }

  /** Adds a key with an archive of `archiveMiB` and a layout of the shared jar plus a jar of its own (or of `jarOf`'s: the same layout). */
  async function addKey(store: LocalStore, name: string, archiveMiB: number, shared: Buffer, jarOf = name): Promise<{ key: string; manifest: Manifest }> {
    const work = await store.workDir("test");
    await writeFile(join(work, "shared.jar"), shared);
    await writeFile(join(work, "own.jar"), `own jar of ${jarOf}`);
    await writeFile(join(work, "app.jar"), "app");
    const layout = await store.addLayout([
      { path: "app.jar", tempPath: join(work, "app.jar") },
      { path: "lib/shared.jar", tempPath: join(work, "shared.jar") },
      { path: "lib/own.jar", tempPath: join(work, "own.jar") },
    ]);
    await writeFile(join(work, "archive"), Buffer.alloc(archiveMiB * MiB, name));
    const archive = await store.addBlob(join(work, "archive"));
    const m = manifest(key(name), layout, archive);
    await store.publishManifest(m);
    await rm(work, { recursive: true, force: true });
    return { key: m.key, manifest: m };
  }

  /** Every blob and layout each remaining manifest names is there. */
  async function consistent(store: LocalStore): Promise<void> {
    for (const k of await store.keys()) {
      const m = (await store.getManifest(k))!;
      for (const f of [...m.layout.files.map((x) => x.sha256), m.archive.sha256]) assert.ok(await store.hasBlob(f), `${k} names a missing blob ${f}`);
      assert.ok((await stat(store.layoutPath(m.layout.id))).isDirectory());
    }
  }

  it("reclaims at open what a crashed writer left in tmp/, its own pid's earlier life included, and nothing a live one is writing", async () => {
    const store = await fresh();
    const tmp = join(store.dir, "tmp");
    const old = new Date(Date.now() - process.uptime() * 1000 - 60_000);
    const left = {
      dead: join(tmp, "pull-4194305-0a1b2c"), // a pid no process can have (above Linux's PID_MAX_LIMIT)
      earlierLife: join(tmp, `upload-${process.pid}-0a1b2c`), // this pid, from before this process started
      live: join(tmp, `pull-${process.pid}-0d0e0f`), // this process, now
      other: join(tmp, "pull-1-0a1b2c"), // init: alive, and not ours
      lock: join(tmp, "build.lock"),
    };
    await writeFile(left.dead, "x".repeat(1 << 20));
    await mkdir(left.earlierLife);
    await writeFile(join(left.earlierLife, "blob"), "x");
    await utimes(left.earlierLife, old, old);
    for (const p of [left.live, left.other, left.lock]) await writeFile(p, "x");
    await LocalStore.open(store.dir);
    const kept = (await readdir(tmp)).sort();
    assert.deepEqual(kept, ["build.lock", "pull-1-0a1b2c", `pull-${process.pid}-0d0e0f`].sort());
  });

  it("counts each blob once in its usage, however many keys and layouts share it", async () => {
    const store = await fresh();
    const shared = Buffer.alloc(MiB, "s");
    await addKey(store, "one", 2, shared);
    await addKey(store, "two", 3, shared);
    const u = await store.usage();
    assert.equal(u.keys, 2);
    // app.jar (same bytes in both), shared.jar, two own jars, two archives
    assert.equal(u.blobs, 6);
    assert.equal(u.bytes, 3 + MiB + "own jar of one".length + "own jar of two".length + 5 * MiB);
  });

  it("removes least recently used keys until under quota, keeping protected keys and blobs another key uses", async () => {
    const store = await fresh();
    const shared = Buffer.alloc(MiB, "s");
    const t = Date.now();
    const keys: Record<string, { key: string; manifest: Manifest }> = {};
    for (const [name, used] of [["protected", 1], ["oldest", 2], ["older", 3], ["newer", 4], ["newest", 5]] as const) {
      keys[name] = await addKey(store, name, 4, shared);
      assert.ok(await store.touch(keys[name].key, new Date(t - (10 - used) * 60_000)));
    }
    const before = await store.usage();
    // 5 archives of 4 MiB + 1 MiB shared + small jars: room for three archives.
    const quota = before.bytes - 8 * MiB;
    const r = await store.gc({ quotaBytes: quota, protect: new Set([keys.protected!.key]) });
    assert.deepEqual(r.removedKeys, [keys.oldest!.key, keys.older!.key]);
    assert.equal(r.freedBytes, 8 * MiB + "own jar of oldest".length + "own jar of older".length);
    const afterUsage = await store.usage();
    assert.ok(afterUsage.bytes <= quota);
    assert.equal(afterUsage.bytes, before.bytes - r.freedBytes);
    assert.deepEqual((await store.keys()).sort(), [keys.protected!.key, keys.newer!.key, keys.newest!.key].sort());
    for (const name of ["oldest", "older"]) {
      const m = keys[name]!.manifest;
      assert.ok(!(await store.hasBlob(m.archive.sha256)));
      await assert.rejects(stat(store.layoutPath(m.layout.id)), { code: "ENOENT" });
    }
    const sharedSha = keys.newest!.manifest.layout.files.find((f) => f.path === "lib/shared.jar")!.sha256;
    assert.ok(await store.hasBlob(sharedSha), "a blob other keys use stays");
    await consistent(store);

    // Only the protected key over quota: nothing more can go.
    const r2 = await store.gc({ quotaBytes: 0, protect: new Set([keys.protected!.key]) });
    assert.deepEqual(r2.removedKeys.sort(), [keys.newer!.key, keys.newest!.key].sort());
    assert.deepEqual(await store.keys(), [keys.protected!.key]);
    await consistent(store);
    const last = await store.usage();
    assert.equal(last.blobs, 4);
  });

  it("orders keys by their last use: touch moves a key to the back of the queue", async () => {
    const store = await fresh();
    const shared = Buffer.alloc(1024, "s");
    const a = await addKey(store, "a", 1, shared);
    const b = await addKey(store, "b", 1, shared);
    const t = Date.now();
    await store.touch(a.key, new Date(t - 2000));
    await store.touch(b.key, new Date(t - 1000));
    assert.ok(await store.touch(a.key)); // used now
    assert.equal(await store.touch(key("absent")), false);
    await assert.rejects(store.touch("../etc"), ClasscacheError);
    const r = await store.gc({ quotaBytes: (await store.usage()).bytes - 1, protect: new Set() });
    assert.deepEqual(r.removedKeys, [b.key]);
    await consistent(store);
  });

  it("removes blobs and layouts no manifest references once they are an hour old", async () => {
    const store = await fresh();
    const kept = await addKey(store, "kept", 1, Buffer.alloc(10, "s"));
    const work = await store.workDir("orphan");
    await writeFile(join(work, "orphan"), "left behind by a crash");
    const orphan = await store.addBlob(join(work, "orphan"));
    await writeFile(join(work, "x.jar"), "a jar of a layout never published");
    const orphanLayout = await store.addLayout([{ path: "x.jar", tempPath: join(work, "x.jar") }]);
    const quota = 2 ** 40;
    assert.deepEqual(await store.gc({ quotaBytes: quota, protect: new Set() }), { removedKeys: [], freedBytes: 0 });
    assert.ok(await store.hasBlob(orphan.sha256), "a young orphan may be about to be published");
    const r = await store.gc({ quotaBytes: quota, protect: new Set(), now: Date.now() + 2 * HOUR });
    assert.deepEqual(r, { removedKeys: [], freedBytes: orphan.size + orphanLayout.files[0]!.size });
    assert.ok(!(await store.hasBlob(orphan.sha256)));
    await assert.rejects(stat(store.layoutPath(orphanLayout.id)), { code: "ENOENT" });
    assert.deepEqual(await store.keys(), [kept.key]);
    await consistent(store);
  });

  it("counts what the crash leftovers freed towards the quota before removing keys", async () => {
    const store = await fresh();
    const a = await addKey(store, "a", 1, Buffer.alloc(10, "s"));
    const orphanPath = store.tempFile("orphan");
    await writeFile(orphanPath, Buffer.alloc(MiB, "o"));
    const orphan = await store.importBlob(orphanPath, sha256Hex(Buffer.alloc(MiB, "o")));
    const total = (await store.usage()).bytes;
    const later = Date.now() + 2 * HOUR;
    const enough = await store.gc({ quotaBytes: total - orphan.size, protect: new Set(), now: later });
    assert.deepEqual(enough, { removedKeys: [], freedBytes: orphan.size });
    const more = await store.gc({ quotaBytes: total - orphan.size - 1, protect: new Set(), now: later });
    assert.deepEqual(more.removedKeys, [a.key]);
    assert.deepEqual(await store.usage(), { bytes: 0, blobs: 0, keys: 0 });
  });

  it("finds what a manifest names, and nothing in an unreadable one", () => {
    const layout = { id: "a".repeat(64), files: [{ path: "x.jar", sha256: "b".repeat(64), size: 1 }] };
    const m = manifest(key("m"), layout, { sha256: "c".repeat(64), size: 1 });
    m.runtime.jvmOptions.push(`-javaagent:{root}/layouts/${"d".repeat(64)}/agent.jar`, `-Dx={root}/blobs/sha256/${"e".repeat(64)}`);
    const refs = manifestRefs(JSON.stringify(m));
    assert.deepEqual([...refs.layouts].sort(), ["a".repeat(64), "d".repeat(64)]);
    assert.deepEqual([...refs.blobs].sort(), ["b".repeat(64), "c".repeat(64), "e".repeat(64)]);
    assert.deepEqual(manifestRefs("{not json"), { blobs: new Set(), layouts: new Set() });
  });

  it("imports a received file as a blob only when its sha256 matches, removing it otherwise", async () => {
    const store = await fresh();
    const good = store.tempFile();
    await writeFile(good, "pulled bytes");
    const sha = sha256Hex("pulled bytes");
    const r = await store.importBlob(good, sha);
    assert.deepEqual(r, { sha256: sha, size: 12, created: true });
    const st = await stat(store.blobPath(sha));
    assert.equal(st.mode & 0o777, 0o444);
    assert.equal(st.mtimeMs, pinnedMtime(sha).getTime());
    await assert.rejects(stat(good), { code: "ENOENT" });

    const bad = store.tempFile();
    await writeFile(bad, "tampered bytes");
    await assert.rejects(store.importBlob(bad, sha256Hex("other bytes")), (e: unknown) => e instanceof ClasscacheError && /does not match its expected sha256/.test(e.message));
    await assert.rejects(stat(bad), { code: "ENOENT" });
    assert.ok(!(await store.hasBlob(sha256Hex("tampered bytes"))));
    assert.ok(!(await store.hasBlob(sha256Hex("other bytes"))));

    const again = store.tempFile();
    await writeFile(again, "pulled bytes");
    assert.equal((await store.importBlob(again, sha)).created, false);
    await assert.rejects(stat(again), { code: "ENOENT" });
    assert.deepEqual(await readdir(join(store.dir, "tmp")), []);
  });
});

describe("local store: per-scope views", () => {
  let dir: string;
  let n = 0;
  const REF = (name: string) => `${sha256Hex(`ref ${name}`)}.amd64`;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-views-"));
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function fresh(): Promise<LocalStore> {
    return LocalStore.open(join(dir, `store-${++n}`));
  }

  async function addKey(store: LocalStore, name: string, archiveBytes: number, jar = name): Promise<Manifest> {
    const work = await store.workDir("test");
    await writeFile(join(work, "app.jar"), `app jar ${jar}`);
    await writeFile(join(work, "lib.jar"), "a library every key uses");
    const layout = await store.addLayout([
      { path: "app.jar", tempPath: join(work, "app.jar") },
      { path: "lib/lib.jar", tempPath: join(work, "lib.jar") },
    ]);
    await writeFile(join(work, "archive"), Buffer.alloc(archiveBytes, name));
    const archive = await store.addBlob(join(work, "archive"));
    const m = manifest(key(name), layout, archive);
    await store.publishManifest(m);
    await rm(work, { recursive: true, force: true });
    return m;
  }

  /** Every file under `root`, relative, with its inode. */
  async function files(root: string): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const e of await readdir(root, { recursive: true, withFileTypes: true }).catch(() => [])) {
      if (e.isFile()) out.set(relative(root, join(e.parentPath, e.name)), (await stat(join(e.parentPath, e.name))).ino);
    }
    return out;
  }

  /** Each ref of each view leads to a manifest, an archive and a layout that are there. */
  async function viewsComplete(store: LocalStore): Promise<void> {
    for (const name of await readdir(join(store.dir, "scopes"))) {
      const view = join(store.dir, "scopes", name);
      for (const ref of await readdir(join(view, "refs")).catch(() => [] as string[])) {
        const k = (await readFile(join(view, "refs", ref), "utf8")).split("\n")[0]!;
        const m = JSON.parse(await readFile(join(view, "manifests", `${k}.json`), "utf8")) as Manifest;
        await stat(join(view, m.archive.file));
        for (const f of m.layout.files) await stat(join(view, "layouts", m.layout.id, f.path));
      }
    }
  }

  it("names a scope's view after its namespace, or _cluster, and nothing else", () => {
    assert.equal(scopeDirName("shop"), "shop");
    assert.equal(scopeDirName(""), "_cluster");
    for (const bad of ["..", "a/b", "_cluster", "Shop", "x".repeat(64)]) assert.throws(() => scopeDirName(bad), ClasscacheError, bad);
    assert.equal(scopeOfDirName("_cluster"), "");
    assert.equal(scopeOfDirName("shop"), "shop");
    for (const bad of ["..", "", "Shop", "_x"]) assert.equal(scopeOfDirName(bad), undefined, bad);
  });

  it("links exactly what a ref's pods need into its scope's view: the store's own inodes and mtimes at the store's paths, the ref last, once", async () => {
    const store = await fresh();
    const m = await addKey(store, "shop", 4096);
    await addKey(store, "rival", 4096);
    await store.setRef("shop", REF("shop"), m.key, 1234);
    const view = store.viewPath("shop");
    assert.equal(view, join(store.dir, "scopes", "shop"));
    const seen = await files(view);
    assert.deepEqual([...seen.keys()].sort(), [
      `blobs/sha256/${m.archive.sha256}`,
      `layouts/${m.layout.id}/app.jar`,
      `layouts/${m.layout.id}/lib/lib.jar`,
      `manifests/${m.key}.json`,
      `refs/${REF("shop")}`,
    ], "the key's archive, layout and manifest, and nothing of the other key");
    const store_ = await files(store.dir);
    for (const [path, ino] of seen) {
      if (path.startsWith("refs/")) continue;
      assert.equal(ino, store_.get(path), `${path} is the store's own file (one inode, shared by every JVM)`);
    }
    const jar = m.layout.files.find((f) => f.path === "app.jar")!;
    assert.equal((await stat(join(view, "layouts", m.layout.id, "app.jar"))).mtimeMs, pinnedMtime(jar.sha256).getTime(), "the content-derived mtime");
    assert.equal(await readFile(join(view, "refs", REF("shop")), "utf8"), `${m.key}\nissued 1234\n`);
    assert.deepEqual(await store.getRef("shop", REF("shop")), { key: m.key, issuedAt: 1234 });
    assert.equal(await store.getRef("rival", REF("shop")), undefined, "another scope's view records nothing");
    assert.equal(await store.getRef("", REF("shop")), undefined);

    const record = await stat(join(view, "refs", REF("shop")));
    await store.setRef("shop", REF("shop"), m.key, 1234);
    assert.equal((await stat(join(view, "refs", REF("shop")))).ino, record.ino, "asked again: nothing written");
    await store.setRef("", REF("shared"), m.key, 1);
    assert.ok((await files(join(store.dir, "scopes", "_cluster"))).has(`manifests/${m.key}.json`), "the cluster's view");
    await assert.rejects(store.setRef("shop", REF("x"), key("absent"), 1), (e: unknown) => e instanceof ClasscacheError && e.code === "not-found");
    assert.equal(await store.getRef("shop", REF("x")), undefined);
    await assert.rejects(store.setRef("../..", REF("x"), m.key, 1), ClasscacheError);
    assert.deepEqual((await readdir(join(store.dir, "tmp"))).filter((f) => f !== "build.lock"), [], "no temp file left");
  });

  it("gc removes a key's view entries in every scope before its files, keeps a layout another key of a view links, and removes what a crash left", async () => {
    const store = await fresh();
    const a = await addKey(store, "a", 8192, "same");
    const b = await addKey(store, "b", 4096, "same");
    const c = await addKey(store, "c", 4096);
    assert.equal(a.layout.id, b.layout.id, "a and b share their layout");
    await store.setRef("shop", REF("a"), a.key, 1);
    await store.setRef("shop", REF("b"), b.key, 1);
    await store.setRef("other", REF("a"), a.key, 1);
    await store.setRef("other", REF("c"), c.key, 1);
    const t = Date.now();
    for (const [m, ago] of [[a, 3], [b, 2], [c, 1]] as const) await store.touch(m.key, new Date(t - ago * 60_000));
    // A crash in the middle of a setRef: links in a view, no ref; and a ref of a key the store lost.
    const shop = store.viewPath("shop");
    await link(store.blobPath(c.archive.sha256), join(shop, "blobs", "sha256", c.archive.sha256));
    await writeFile(join(shop, "refs", REF("gone")), `${key("gone")}\nissued 1\n`);
    const archiveInode = (await stat(store.blobPath(a.archive.sha256))).ino;

    const r = await store.gc({ quotaBytes: (await store.usage()).bytes - 8192, protect: new Set() });
    assert.deepEqual(r.removedKeys, [a.key]);
    assert.equal(r.freedBytes, 8192);
    assert.equal(await store.getRef("shop", REF("a")), undefined);
    assert.equal(await store.getRef("other", REF("a")), undefined);
    assert.deepEqual([...(await files(shop)).keys()].sort(), [
      `blobs/sha256/${b.archive.sha256}`,
      `layouts/${b.layout.id}/app.jar`,
      `layouts/${b.layout.id}/lib/lib.jar`,
      `manifests/${b.key}.json`,
      `refs/${REF("b")}`,
    ], "b's entries stay, its layout too; a's, the crash's and the lost key's are gone");
    assert.deepEqual([...(await files(store.viewPath("other"))).keys()].sort(), [
      `blobs/sha256/${c.archive.sha256}`,
      `layouts/${c.layout.id}/app.jar`,
      `layouts/${c.layout.id}/lib/lib.jar`,
      `manifests/${c.key}.json`,
      `refs/${REF("c")}`,
    ]);
    assert.ok(![...(await files(store.dir)).values()].includes(archiveInode), "no link keeps the removed archive's bytes on disk");
    await viewsComplete(store);
  });

  it("re-links a view whose key's manifest was replaced, and gc drops a ref that still names the old one", async () => {
    const store = await fresh();
    const m = await addKey(store, "k", 4096);
    await store.setRef("shop", REF("k"), m.key, 1);
    const work = await store.workDir("test");
    await writeFile(join(work, "archive"), "a forced rebuild's archive");
    const rebuilt = manifest(m.key, m.layout, await store.addBlob(join(work, "archive")));
    await store.publishManifest(rebuilt, { replace: true });
    await store.gc({ quotaBytes: 2 ** 40, protect: new Set() });
    assert.equal(await store.getRef("shop", REF("k")), undefined, "the view named the manifest that was replaced");
    assert.deepEqual([...(await files(store.viewPath("shop"))).keys()], []);
    await store.setRef("shop", REF("k"), m.key, 1);
    assert.ok((await files(store.viewPath("shop"))).has(`blobs/sha256/${rebuilt.archive.sha256}`));
    await viewsComplete(store);
  });
});

describe("local store on a full disk", () => {
  let mnt: string;
  let work: string;
  let peer: Server | undefined;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), "classcache-full-"));
    mnt = join(work, "mnt");
    await mkdir(mnt);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=8m", "tmpfs", mnt]);
  });

  after(async () => {
    if (peer) await stop(peer);
    execFileSync("umount", [mnt]);
    await rm(work, { recursive: true, force: true });
  });

  it("a pull that fills the store fails with the store's error and leaves nothing half-written", async () => {
    const store = await LocalStore.open(join(mnt, "store"));
    const src = join(work, "blob");
    const size = 20 * MiB;
    const sha = await randomFile(src, size);
    const metrics = new PeerMetrics();
    peer = createPeerServer({ blobs: mapSource({ [sha]: src }), token: "t", uploadCap: 2, metrics, log: memoryLogger().log });
    const url = await listen(peer);
    const quarantine = new Quarantine();
    const pulled = store.receive((dest) =>
      pullBlob({ sha256: sha, size, holders: [{ node: "a", url, zone: "z" }, { node: "b", url, zone: "z" }], token: "t", dest, quarantine, log: memoryLogger().log }),
    );
    await assert.rejects(pulled, (e: unknown) => e instanceof ClasscacheError && e.code === "store" && e.message === `the store at ${store.dir} is full` && /nothing was left half-written/.test(e.hint ?? ""));
    assert.deepEqual(await readdir(join(store.dir, "tmp")), []);
    assert.deepEqual(await readdir(join(store.dir, "blobs", "sha256")), []);
    assert.deepEqual(quarantine.entries(), [], "a full disk is not the holder's fault");
    assert.equal((await metrics.requests.get()).values.find((v) => v.labels.status === "200")?.value, 1, "no second holder was tried");
    assert.deepEqual(await store.usage(), { bytes: 0, blobs: 0, keys: 0 });
  });
});
