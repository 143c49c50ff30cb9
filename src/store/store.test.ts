import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from "node:fs/promises";
import type { Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { Layout, Manifest } from "../archive/manifest.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { PeerMetrics } from "../p2p/metrics.ts";
import { pullBlob, Quarantine } from "../p2p/puller.ts";
import { createPeerServer } from "../p2p/server.ts";
import { listen, mapSource, memoryLogger, randomFile, stop } from "../p2p/testing.ts";
import { sha256Hex } from "../util/hash.ts";
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

  /** Adds a key with an archive of `archiveMiB` and a layout of the shared jar plus a jar of its own. */
  async function addKey(store: LocalStore, name: string, archiveMiB: number, shared: Buffer): Promise<{ key: string; manifest: Manifest }> {
    const work = await store.workDir("test");
    await writeFile(join(work, "shared.jar"), shared);
    await writeFile(join(work, "own.jar"), `own jar of ${name}`);
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
