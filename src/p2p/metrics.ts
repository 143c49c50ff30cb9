/**
 * Metrics of peer-to-peer distribution, in a registry of their own (never prom-client's global
 * one), so a process can hold several (tests, simulated nodes) and the node agent can add its
 * own metrics — builds, verification failures, hit rates — to the same registry and serve them
 * all from the peer server's /metrics.
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** How a pull ended. */
export type PullOutcome = "ok" | "failed" | "aborted";

/** Routes as metric labels: a fixed set, never the raw path (unbounded cardinality). */
export type PeerRoute = "blob" | "healthz" | "readyz" | "metrics" | "other";

export class PeerMetrics {
  readonly registry: Registry;
  /** Body bytes sent to peers (200 and 206 responses). */
  readonly bytesServed: Counter;
  /** Body bytes received from peers by pulls, including bytes later found corrupt. */
  readonly bytesPulled: Counter;
  /** Blob requests answered 503 because `uploadCap` bodies were already being sent. */
  readonly uploadsRejected: Counter;
  /** Blob bodies being sent right now. */
  readonly uploadsActive: Gauge;
  /** The most blob bodies ever sent at once (high-water mark): never above the upload cap. */
  readonly uploadsPeak: Gauge;
  private peak = 0;
  /** Every request the peer server answered, by route and status. */
  readonly requests: Counter<"route" | "status">;
  readonly requestSeconds: Histogram<"route">;
  /** Pulls by how they ended. */
  readonly pulls: Counter<"outcome">;
  /** Holders quarantined because bytes they sent failed verification. */
  readonly peersQuarantined: Counter;
  /** Transfers continued with a Range request after a holder failed or stalled mid-transfer. */
  readonly resumes: Counter;

  constructor(registry: Registry = new Registry()) {
    this.registry = registry;
    const registers = [registry];
    this.bytesServed = new Counter({ name: "classcache_peer_served_bytes_total", help: "Blob bytes sent to peers.", registers });
    this.bytesPulled = new Counter({ name: "classcache_peer_pulled_bytes_total", help: "Blob bytes received from peers by pulls.", registers });
    this.uploadsRejected = new Counter({
      name: "classcache_peer_uploads_rejected_total",
      help: "Blob requests answered 503 because the upload cap was reached.",
      registers,
    });
    this.uploadsActive = new Gauge({ name: "classcache_peer_uploads_active", help: "Blob bodies being sent now.", registers });
    this.uploadsPeak = new Gauge({ name: "classcache_peer_uploads_peak", help: "The most blob bodies sent at once since start.", registers });
    this.requests = new Counter({
      name: "classcache_peer_requests_total",
      help: "Requests answered by the peer server, by route and status.",
      labelNames: ["route", "status"] as const,
      registers,
    });
    this.requestSeconds = new Histogram({
      name: "classcache_peer_request_duration_seconds",
      help: "Time from request to the end of the response, by route.",
      labelNames: ["route"] as const,
      buckets: [0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.pulls = new Counter({ name: "classcache_peer_pulls_total", help: "Blob pulls by outcome.", labelNames: ["outcome"] as const, registers });
    this.peersQuarantined = new Counter({
      name: "classcache_peer_quarantined_total",
      help: "Holders quarantined because the bytes they sent failed verification.",
      registers,
    });
    this.resumes = new Counter({ name: "classcache_peer_resumes_total", help: "Transfers resumed with a Range request from another holder.", registers });
  }

  notePeakUploads(active: number): void {
    if (active > this.peak) {
      this.peak = active;
      this.uploadsPeak.set(active);
    }
  }
}
