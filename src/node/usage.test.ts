import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { mappedArchive, namespacePid, SmapsCache } from "./usage.ts";

const SHA = "a".repeat(64);
const OTHER = "b".repeat(64);

describe("archive usage from /proc", () => {
  test("finds the store's archive a JVM maps, as the container sees the store, and nothing else", () => {
    const maps = [
      "7f0000000000-7f0000100000 r--s 00000000 08:01 123 /usr/lib/jvm/java-17/lib/server/classes.jsa",
      `800000000-800400000 rw-p 00001000 08:01 456 /var/lib/classcache/blobs/sha256/${SHA}`,
      `800400000-800800000 r--p 00401000 08:01 456 /var/lib/classcache/blobs/sha256/${SHA}`,
    ].join("\n");
    assert.equal(mappedArchive(maps, ["/var/lib/classcache", "/srv/store"], new Set([SHA])), SHA);
    assert.equal(mappedArchive(maps, ["/srv/store"], new Set([SHA])), undefined, "another store's path");
    assert.equal(mappedArchive(maps, ["/var/lib/classcache"], new Set([OTHER])), undefined, "a blob that is no archive of a key here");
    assert.equal(mappedArchive("", ["/var/lib/classcache"], new Set([SHA])), undefined);
  });

  test("reads the pid a containerised JVM has in its own namespace", () => {
    assert.equal(namespacePid("Name:\tjava\nPid:\t4242\nNSpid:\t4242\t7\n"), 7);
    assert.equal(namespacePid("Name:\tjava\nNSpid:\t4242\n"), 4242);
    assert.equal(namespacePid("Name:\tjava\n"), undefined);
  });

  test("re-reads a JVM's smaps only when its figures are older than the cache's limit, and forgets JVMs gone", async () => {
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
      cache.keepOnly(new Set());
      assert.equal((await cache.read(proc, "42", SHA)).pssKb, 1000, "forgotten, so read afresh");
      assert.equal((await new SmapsCache(0).read(proc, "42", SHA)).pssKb, 1000);
    } finally {
      await rm(proc, { recursive: true, force: true });
    }
  });
});
