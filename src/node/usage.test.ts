import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { mappedArchive, namespacePid } from "./usage.ts";

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
});
