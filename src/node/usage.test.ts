import assert from "node:assert/strict";
import { link, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { fileId, mappedArchive, namespacePid, SmapsCache } from "./usage.ts";

const SHA = "a".repeat(64);
const OTHER = "b".repeat(64);

describe("archive usage from /proc", () => {
  test("finds the store's archive a JVM maps, as the container sees the store, and nothing else", () => {
    const maps = [
      "7f0000000000-7f0000100000 r--s 00000000 08:01 123 /usr/lib/jvm/java-17/lib/server/classes.jsa",
      `800000000-800400000 rw-p 00001000 08:01 456 /var/lib/classcache/blobs/sha256/${SHA}`,
      `800400000-800800000 r--p 00401000 08:01 456 /var/lib/classcache/blobs/sha256/${SHA}`,
    ].join("\n");
    const known = (sha: string, id?: string) => new Map([[sha, id]]);
    assert.equal(mappedArchive(maps, ["/var/lib/classcache", "/srv/store"], known(SHA)), SHA);
    assert.equal(mappedArchive(maps, ["/srv/store"], known(SHA)), undefined, "another store's path");
    assert.equal(mappedArchive(maps, ["/var/lib/classcache"], known(OTHER)), undefined, "a blob that is no archive of a key here");
    assert.equal(mappedArchive("", ["/var/lib/classcache"], known(SHA)), undefined);
    assert.equal(mappedArchive(maps, ["/var/lib/classcache"], known(SHA, "8:1:456")), SHA, "this very file (device 08:01, inode 456)");
    assert.equal(mappedArchive(maps, ["/var/lib/classcache"], known(SHA, "8:1:457")), undefined, "another store's file at the same path");
  });

  test("names a file as /proc/<pid>/maps does: device major:minor and inode", async () => {
    const mine = await readFile("/proc/self/maps", "utf8");
    const exe = mine.split("\n").find((l) => l.includes("/") && l.split(/\s+/)[4] !== "0")!;
    const [, , , dev, inode, path] = exe.split(/\s+/);
    const [major, minor] = dev!.split(":").map((h) => parseInt(h, 16));
    assert.equal(await fileId(path!), `${major}:${minor}:${inode}`);
  });

  test("names a scope view's hard link to an archive as the store's file itself: a JVM reading the view is counted", async () => {
    const dir = await mkdtemp(join(tmpdir(), "usage-"));
    try {
      await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
      await mkdir(join(dir, "scopes", "shop", "blobs", "sha256"), { recursive: true });
      await writeFile(join(dir, "blobs", "sha256", SHA), "archive");
      await link(join(dir, "blobs", "sha256", SHA), join(dir, "scopes", "shop", "blobs", "sha256", SHA));
      const id = await fileId(join(dir, "blobs", "sha256", SHA));
      assert.equal(await fileId(join(dir, "scopes", "shop", "blobs", "sha256", SHA)), id);
      const [major, minor, inode] = id.split(":");
      const maps = `800000000-800400000 r--p 00001000 ${Number(major).toString(16)}:${Number(minor).toString(16)} ${inode} /var/lib/classcache/blobs/sha256/${SHA}`;
      assert.equal(mappedArchive(maps, ["/var/lib/classcache"], new Map([[SHA, id]])), SHA, "the view mounted at the root: the same path, the same file");
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test("reads the pid a containerised JVM has in its own namespace", () => {
    assert.equal(namespacePid("Name:\tjava\nPid:\t4242\nNSpid:\t4242\t7\n"), 7);
    assert.equal(namespacePid("Name:\tjava\nNSpid:\t4242\n"), 4242);
    assert.equal(namespacePid("Name:\tjava\n"), undefined);
  });

  test("re-reads a JVM's smaps only when its figures are older than the cache's limit or its archive's sharers changed, and forgets JVMs gone", async () => {
    const proc = await mkdtemp(join(tmpdir(), "proc-"));
    try {
      await mkdir(join(proc, "42"));
      const smaps = (rss: number, pss: number) =>
        `800000000-800400000 r--p 00000000 08:01 456 /var/lib/classcache/blobs/sha256/${SHA}\nRss:  ${rss} kB\nPss:  ${pss} kB\n` +
        `900000000-900400000 rw-p 00000000 00:00 0 \nRss:  99999 kB\nPss:  99999 kB\n`;
      await writeFile(join(proc, "42", "smaps"), smaps(4000, 2000));
      const cache = new SmapsCache(60_000);
      assert.deepEqual(await cache.read(proc, "42", SHA), { rssKb: 4000, pssKb: 2000, roRssKb: 4000, roPssKb: 2000 }, "the archive's mappings only");
      await writeFile(join(proc, "42", "smaps"), smaps(4000, 1000));
      assert.equal((await cache.read(proc, "42", SHA)).pssKb, 2000, "within the limit: not read again");
      assert.equal((await cache.read(proc, "42", SHA, true)).pssKb, 1000, "read afresh when asked");
      await writeFile(join(proc, "42", "smaps"), smaps(4000, 500));
      cache.keepOnly(new Set(), new Set());
      assert.equal((await cache.read(proc, "42", SHA)).pssKb, 500, "forgotten, so read afresh");
      assert.equal(cache.sharersChanged(SHA, ["42"]), true, "a first JVM");
      assert.equal(cache.sharersChanged(SHA, ["42"]), false);
      assert.equal(cache.sharersChanged(SHA, ["43", "42"]), true, "a second JVM changes the first one's Pss too");
      assert.equal((await new SmapsCache(0).read(proc, "42", SHA)).pssKb, 500, "no cache at all");
    } finally {
      await rm(proc, { recursive: true, force: true });
    }
  });
});
