import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { generateSigningKey, signerFromPem, signManifest, STATEMENTS, trustStoreFromPems } from "../archive/signing.ts";
import { sampleManifest } from "../../test/support/manifest.ts";
import type { Holder, HolderUsage } from "../directory/directory.ts";
import { archiveStats, nodeRows, renderStats } from "./stats.ts";

const manifest = sampleManifest({ kind: "aot", size: 10 << 20, hitRate: 0.97 });
const KEY = manifest.key;
const holder = (node: string, usage?: HolderUsage, complete?: boolean): Holder => ({ node, url: `http://${node}:7071`, zone: "z", ...(complete === false ? { complete } : {}), ...(usage ? { usage } : {}) });

void describe("archiveStats", () => {
  const keys = generateSigningKey();
  const envelope = signManifest(manifest, signerFromPem(keys.privatePem));

  void it("sums the nodes' JVMs, class counts and memory, and weighs the read-only ideal by each node's JVMs", () => {
    const s = archiveStats(
      KEY,
      envelope,
      [
        holder("a", { jvms: 2, sharedClasses: 1800, loadedClasses: 2000, rssKb: 40_000, pssKb: 24_000, roRssKb: 20_000, roPssKb: 10_000 }),
        holder("b", { jvms: 1, sharedClasses: 900, loadedClasses: 1000, rssKb: 20_000, pssKb: 20_000, roRssKb: 10_000, roPssKb: 10_000 }),
        holder("c", undefined, false),
      ],
      trustStoreFromPems([keys.publicPem]),
    );
    assert.equal(s.verified, true);
    assert.deepEqual([s.nodes, s.pulling, s.jvms, s.liveHitRate], [2, 1, 3, 0.9]);
    // ideal: node a 20 000/2 + node b 10 000/1 = 20 000 of 30 000 read-only kB
    assert.deepEqual(s.memory, { rssKb: 60_000, pssKb: 44_000, savedKb: 16_000, roPssRssRatio: 0.667, idealRoRatio: 0.667 });
    assert.equal(s.jvm, "Eclipse Adoptium 25.0.3+9");
    assert.deepEqual(nodeRows([s, archiveStats("b".repeat(64), undefined, [holder("a")])]), [
      { node: "a", zone: "z", archives: 2, pulling: 0, jvms: 2, savedKb: 16_000 },
      { node: "b", zone: "z", archives: 1, pulling: 0, jvms: 1, savedKb: 0 },
      { node: "c", zone: "z", archives: 0, pulling: 1, jvms: 0 },
    ]);
    assert.match(renderStats({ at: "now", archives: [s], nodes: nodeRows([s]) }, "test"), new RegExp(String.raw`^${KEY.slice(0, 12)}\s+yes\s+aot\s.* 90\.0% \(97\.0%\)`, "m"));
  });

  void it("says NO for a manifest another key signed, and shows a malformed one's well-typed fields only", () => {
    const other = trustStoreFromPems([generateSigningKey().publicPem]);
    assert.equal(archiveStats(KEY, envelope, [], other).verified, false);
    const odd = archiveStats(KEY, JSON.stringify({ type: STATEMENTS.manifest, payload: { key: KEY, archive: "x", verification: { hitRate: "high" }, mode: 3 } }), [holder("a")]);
    assert.equal(odd.verified, undefined, "no trust given: unchecked");
    assert.deepEqual([odd.kind, odd.buildHitRate, odd.mode, odd.memory, odd.liveHitRate], [undefined, undefined, undefined, undefined, undefined]);
    assert.doesNotThrow(() => renderStats({ at: "now", archives: [odd, archiveStats(KEY, "not json", [])], nodes: [] }, "test"));
  });
});
