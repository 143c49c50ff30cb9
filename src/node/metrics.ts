/**
 * The node agent's metrics, in the same registry as the peer server's, served from /metrics:
 * bytes served and pulled, pulls, builds, verification failures and the hit rate of each
 * archive the node holds.
 */
import { Counter, Gauge, Histogram } from "prom-client";
import { PeerMetrics } from "../p2p/metrics.ts";

export class NodeMetrics {
  readonly peer: PeerMetrics;
  readonly builds: Counter<"result">;
  readonly buildSeconds: Histogram;
  readonly pulls: Counter<"result">;
  readonly verificationFailures: Counter<"reason">;
  readonly hitRate: Gauge<"key">;
  readonly jvms: Gauge<"key">;
  readonly liveHitRate: Gauge<"key">;
  readonly sharingSavedBytes: Gauge<"key">;

  constructor(peer = new PeerMetrics()) {
    this.peer = peer;
    const registers = [peer.registry];
    this.builds = new Counter({ name: "classcache_builds_total", help: "Archive builds on this node, by result.", labelNames: ["result"] as const, registers });
    this.buildSeconds = new Histogram({ name: "classcache_build_duration_seconds", help: "Time to build, verify and store an archive.", buckets: [5, 15, 30, 60, 120, 300, 600], registers });
    this.pulls = new Counter({ name: "classcache_archive_pulls_total", help: "Archives made whole on this node, by result: ok (blobs pulled from peers), local (all here already: an upload adopted), failed.", labelNames: ["result"] as const, registers });
    this.verificationFailures = new Counter({
      name: "classcache_verification_failures_total",
      help: "Manifests or blobs rejected: bad signature, digest mismatch.",
      labelNames: ["reason"] as const,
      registers,
    });
    this.hitRate = new Gauge({ name: "classcache_archive_hit_rate", help: "Share of classes loaded from the archive in its verification boot.", labelNames: ["key"] as const, registers });
    // What the node's JVMs really get, from the heartbeat's /proc scan (see usage.ts).
    this.jvms = new Gauge({ name: "classcache_archive_jvms", help: "JVMs on this node that map the archive now.", labelNames: ["key"] as const, registers });
    this.liveHitRate = new Gauge({
      name: "classcache_archive_live_hit_rate",
      help: "Share of the classes those JVMs loaded that came from the archive (their perf counters).",
      labelNames: ["key"] as const,
      registers,
    });
    this.sharingSavedBytes = new Gauge({
      name: "classcache_archive_sharing_saved_bytes",
      help: "Rss minus Pss of the archive's mappings over those JVMs: the memory sharing it saves on this node.",
      labelNames: ["key"] as const,
      registers,
    });
  }
}
