import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { archiveUsage, parseSmaps } from "./smaps.ts";

const sample = `7f0000000000-7f0000400000 rw-p 00000000 fd:00 4242                       /var/lib/classcache/blobs/sha256/ab
Size:               4096 kB
Rss:                4000 kB
Pss:                4000 kB
Shared_Clean:          0 kB
Private_Dirty:      4000 kB
7f0000400000-7f0001000000 r--p 00400000 fd:00 4242                       /var/lib/classcache/blobs/sha256/ab
Size:              12288 kB
Rss:               12000 kB
Pss:                3000 kB
Shared_Clean:      12000 kB
Private_Dirty:         0 kB
7f0002000000-7f0003000000 r--p 00000000 fd:00 77                         /usr/lib/jvm/x/lib/server/classes.jsa
Size:              16384 kB
Rss:               16000 kB
Pss:                4000 kB
Shared_Clean:      16000 kB
Private_Dirty:         0 kB
`;

describe("smaps accounting", () => {
  it("counts only the archive's own mappings, split into its shareable and private parts", () => {
    const u = archiveUsage(parseSmaps(sample), 4242);
    assert.equal(u.rssKb, 16000);
    assert.equal(u.pssKb, 7000);
    assert.deepEqual(u.ro, { rssKb: 12000, pssKb: 3000 });
    assert.deepEqual(u.rw, { rssKb: 4000, pssKb: 4000 });
    assert.equal(u.sharedCleanKb, 12000);
  });

  it("does not count the JDK's own CDS archive as classcache's", () => {
    assert.equal(archiveUsage(parseSmaps(sample), 4243).rssKb, 0);
  });
});
