/**
 * Metrics of the admission webhook, in a registry passed in (never prom-client's global one).
 */
import { Counter, Gauge, Histogram, Registry } from "prom-client";

/** The webhooks served: a fixed set of label values. */
export type WebhookName = "mutate-pods" | "validate-classcaches";

/** How an admission request was answered. */
export type AdmissionOutcome = "allowed" | "patched" | "denied" | "failed_open" | "bad_request";

/** Why a request was let through without doing the webhook's work. */
export type FailOpenReason = "error" | "timeout";

export class WebhookMetrics {
  readonly registry: Registry;
  readonly requests: Counter<"webhook" | "outcome">;
  readonly requestSeconds: Histogram<"webhook">;
  readonly failedOpen: Counter<"webhook" | "reason">;
  /** TLS handshakes completed: a rotation closes idle connections, so clients handshake again. */
  readonly tlsHandshakes: Counter;
  /** notAfter of the certificate served now, for an alert well before it passes. */
  readonly certificateExpiry: Gauge;

  constructor(registry: Registry = new Registry()) {
    this.registry = registry;
    const registers = [registry];
    this.requests = new Counter({
      name: "classcache_webhook_requests_total",
      help: "Admission requests answered, by webhook and outcome.",
      labelNames: ["webhook", "outcome"] as const,
      registers,
    });
    this.requestSeconds = new Histogram({
      name: "classcache_webhook_request_duration_seconds",
      help: "Time from an admission request to its answer, by webhook.",
      labelNames: ["webhook"] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 5],
      registers,
    });
    this.failedOpen = new Counter({
      name: "classcache_webhook_failed_open_total",
      help: "Admission requests let through unchanged because the webhook failed or ran out of time.",
      labelNames: ["webhook", "reason"] as const,
      registers,
    });
    this.tlsHandshakes = new Counter({ name: "classcache_webhook_tls_handshakes_total", help: "TLS handshakes completed by the webhook server.", registers });
    this.certificateExpiry = new Gauge({
      name: "classcache_webhook_certificate_expiry_timestamp_seconds",
      help: "When the serving certificate in use expires (Unix seconds).",
      registers,
    });
  }
}
