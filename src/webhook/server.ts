/**
 * The admission webhook server: HTTPS, called by the API server.
 *
 *   POST /mutate-pods           → mutatePod (the pod injection policy, passed in)
 *   POST /validate-classcaches  → validate (checks a CRD's CEL rules cannot express, passed in)
 *   GET  /healthz, /readyz
 *
 * It never blocks a workload: whatever goes wrong while mutating a pod — an error, or no answer
 * within the budget (4 s, under the API server's 5 s timeout) — the pod is allowed unchanged with
 * a warning the client sees, and the failure is logged and counted. The TLS context is swapped in
 * place when the certificate source publishes new certificates.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { X509Certificate } from "node:crypto";
import type { KubeObject } from "../kube/types.ts";
import type { Logger } from "../runtime/log.ts";
import { aborted, type Runnable } from "../runtime/runnable.ts";
import { allowed, denied, parseReview, patched, reviewResponse, type AdmissionRequest, type AdmissionResponse } from "./admission.ts";
import { fingerprint, type CertSource, type ServingCerts } from "./certs.ts";
import { WebhookMetrics, type AdmissionOutcome, type FailOpenReason, type WebhookName } from "./metrics.ts";

export const WEBHOOK_PATHS = {
  mutatePods: "/mutate-pods",
  validateClassCaches: "/validate-classcaches",
} as const;

export interface PodMutationContext {
  namespace: string;
  /** The pod's name; for a pod created with generateName, that prefix (the name is not known yet). */
  name: string;
  dryRun: boolean;
  /** Aborts when the budget is spent: the answer is no longer waited for. */
  signal: AbortSignal;
}

export interface PodMutation {
  /** The pod as it should be stored; undefined (or an equal pod) for no change. */
  pod?: object;
  warnings?: string[];
}

/** Decides what to change in a pod. Gets its own copy of the pod; may change and return it. */
export type MutatePod = (pod: KubeObject, ctx: PodMutationContext) => Promise<PodMutation>;

/** The reasons an object is invalid; empty when it is valid. */
export type Validate = (obj: unknown) => string[];

export interface WebhookServerOptions {
  certs: CertSource;
  mutatePod: MutatePod;
  validate: Validate;
  logger: Logger;
  metrics?: WebhookMetrics;
  /** Default 9443; 0 picks a free port (see listening()). */
  port?: number;
  host?: string;
  /** Time a pod mutation may take before the pod is let through unchanged, default 4000 ms. */
  budgetMs?: number;
  /** Largest request body accepted, default 7 MiB (an AdmissionReview holds object and oldObject). */
  maxBodyBytes?: number;
  /**
   * Bytes of request bodies held at once, all requests together, default 64 MiB: past it a request
   * is answered 503 at once. Bounds the memory a crowd of (slow) clients can take, whoever they are.
   */
  maxBufferedBytes?: number;
  /** Time a whole request (headers and body) may take, default 10 s, the API server's own default webhook timeout. */
  requestTimeoutMs?: number;
  /** On stop: how long requests in flight may finish before their connections are cut, default 5 s. */
  shutdownGraceMs?: number;
}

const DEFAULTS = { port: 9443, host: "0.0.0.0", budgetMs: 4000, maxBodyBytes: 7 * 1024 * 1024, maxBufferedBytes: 64 * 1024 * 1024, requestTimeoutMs: 10_000, shutdownGraceMs: 5000 };
/** The API server passes warnings on to clients; long ones may be cut there. */
const MAX_WARNING_CHARS = 200;

class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

class BudgetExceeded extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
    this.name = "BudgetExceeded";
  }
}

export class WebhookServer implements Runnable {
  readonly name = "webhook-server";
  readonly metrics: WebhookMetrics;
  readonly #opts: WebhookServerOptions & typeof DEFAULTS;
  readonly #log: Logger;
  /** Request bodies held right now, all requests together (maxBufferedBytes). */
  readonly #buffered: BodyBudget;
  #ready = false;
  #resolvePort: (port: number) => void = () => {};
  readonly #port = new Promise<number>((resolve) => (this.#resolvePort = resolve));

  constructor(opts: WebhookServerOptions) {
    const set = Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) as Partial<WebhookServerOptions>;
    this.#opts = { ...DEFAULTS, ...(set as WebhookServerOptions) };
    this.#buffered = new BodyBudget(this.#opts.maxBufferedBytes);
    this.metrics = opts.metrics ?? new WebhookMetrics();
    this.#log = opts.logger.with({ component: "webhook-server" });
  }

  /** Resolves with the port once the server listens. */
  listening(): Promise<number> {
    return this.#port;
  }

  /** True while the server listens with certificates. */
  ready(): boolean {
    return this.#ready;
  }

  async start(signal: AbortSignal): Promise<void> {
    const certs = await this.#opts.certs.ready(signal);
    // connectionsCheckingInterval: how often Node looks for requests past their timeout (30 s by default).
    const server = createServer({ ...tlsOptions(certs), minVersion: "TLSv1.2", connectionsCheckingInterval: 1000 }, (req, res) => void this.#serve(req, res));
    // A client that trickles its request is cut, not waited for (Node's default is 300 s).
    server.requestTimeout = this.#opts.requestTimeoutMs;
    server.headersTimeout = Math.min(this.#opts.requestTimeoutMs, 5000);
    server.on("secureConnection", () => this.metrics.tlsHandshakes.inc());
    server.on("tlsClientError", (err) => this.#log.debug("tls handshake failed", { error: err.message }));
    this.#recordCertificate(certs);
    const unsubscribe = this.#opts.certs.subscribe((next) => this.#swap(server, next));
    try {
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(this.#opts.port, this.#opts.host, () => {
          server.off("error", reject);
          resolve();
        });
      });
      const port = (server.address() as AddressInfo).port;
      this.#ready = true;
      this.#log.info("webhook server listening", { port, serving: fingerprint(certs.certPem) });
      this.#resolvePort(port);
      await aborted(signal);
    } finally {
      this.#ready = false;
      unsubscribe();
      await this.#close(server);
    }
  }

  /** New certificates: new handshakes get them; idle keep-alive connections are closed so clients reconnect. */
  #swap(server: Server, certs: ServingCerts): void {
    try {
      server.setSecureContext(tlsOptions(certs));
      server.closeIdleConnections();
      this.#recordCertificate(certs);
      this.#log.info("webhook serving certificate replaced", { serving: fingerprint(certs.certPem) });
    } catch (err) {
      // The old context stays in use; the next publication tries again.
      this.#log.error("webhook serving certificate not usable", { error: (err as Error)?.message ?? String(err) });
    }
  }

  #recordCertificate(certs: ServingCerts): void {
    try {
      this.metrics.certificateExpiry.set(new X509Certificate(certs.certPem).validToDate.getTime() / 1000);
    } catch {
      /* unreadable: setSecureContext reports it */
    }
  }

  async #close(server: Server): Promise<void> {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeIdleConnections();
    const timer = setTimeout(() => server.closeAllConnections(), this.#opts.shutdownGraceMs);
    await closed;
    clearTimeout(timer);
  }

  async #serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? "/", "https://x").pathname;
    try {
      switch (path) {
        case "/healthz":
          return text(res, 200, "ok\n");
        case "/readyz":
          return this.#ready ? text(res, 200, "ok\n") : text(res, 503, "not ready\n");
        case WEBHOOK_PATHS.mutatePods:
          return await this.#review(req, res, "mutate-pods", (r) => this.#mutate(r));
        case WEBHOOK_PATHS.validateClassCaches:
          return await this.#review(req, res, "validate-classcaches", (r) => Promise.resolve(this.#validate(r)));
        default:
          return text(res, 404, "not found\n");
      }
    } catch (err) {
      this.#log.error("webhook request failed", { path, error: (err as Error)?.message ?? String(err) });
      if (!res.headersSent) text(res, 500, "internal error\n");
      else res.destroy();
    }
  }

  /** Reads and checks one AdmissionReview, answers it, and logs and meters the outcome. */
  async #review(req: IncomingMessage, res: ServerResponse, webhook: WebhookName, answer: (r: AdmissionRequest) => Promise<AdmissionResponse>): Promise<void> {
    const started = performance.now();
    const done = (outcome: AdmissionOutcome, fields: Record<string, unknown>): void => {
      const seconds = (performance.now() - started) / 1000;
      this.metrics.requests.inc({ webhook, outcome });
      this.metrics.requestSeconds.observe({ webhook }, seconds);
      const level = outcome === "failed_open" || outcome === "bad_request" ? "warn" : "debug";
      this.#log[level]("admission request", { webhook, outcome, ms: Math.round(seconds * 1000), ...fields });
    };
    let request: AdmissionRequest;
    try {
      if (req.method !== "POST") throw new HttpError(405, "only POST is served here");
      const type = (req.headers["content-type"] ?? "").split(";")[0]?.trim().toLowerCase();
      if (type !== "application/json") throw new HttpError(415, `content-type ${JSON.stringify(type)}: expected application/json`);
      const body = await readJson(req, this.#opts.maxBodyBytes, this.#buffered);
      const parsed = parseReview(body);
      if ("error" in parsed) throw new HttpError(400, parsed.error);
      request = parsed.request;
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 400;
      done("bad_request", { status, error: (err as Error).message });
      res.setHeader("Connection", "close");
      return text(res, status, `${(err as Error).message}\n`);
    }
    const response = await answer(request);
    const outcome: AdmissionOutcome = !response.allowed ? "denied" : response.patch ? "patched" : failedOpen.has(response) ? "failed_open" : "allowed";
    done(outcome, { uid: request.uid, namespace: request.namespace, name: request.name, operation: request.operation, warnings: response.warnings });
    json(res, 200, reviewResponse(response));
  }

  async #mutate(request: AdmissionRequest): Promise<AdmissionResponse> {
    const pod = request.object as KubeObject | undefined;
    if (typeof pod !== "object" || pod === null || typeof pod.metadata !== "object") {
      return this.#failOpen("mutate-pods", request, "error", new Error("the request carries no pod"));
    }
    const ctl = new AbortController();
    const budgetMs = this.#opts.budgetMs;
    let timer: NodeJS.Timeout | undefined;
    const budget = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const err = new BudgetExceeded(budgetMs);
        ctl.abort(err);
        reject(err);
      }, budgetMs);
    });
    try {
      const ctx: PodMutationContext = {
        namespace: request.namespace ?? pod.metadata.namespace ?? "",
        name: request.name || pod.metadata.name || pod.metadata.generateName || "",
        dryRun: request.dryRun === true,
        signal: ctl.signal,
      };
      const result = await Promise.race([this.#opts.mutatePod(structuredClone(pod), ctx), budget]);
      if (!result?.pod) return allowed(request.uid, cleanWarnings(result?.warnings));
      return patched(request.uid, pod, result.pod, cleanWarnings(result.warnings));
    } catch (err) {
      return this.#failOpen("mutate-pods", request, err instanceof BudgetExceeded ? "timeout" : "error", err);
    } finally {
      clearTimeout(timer);
    }
  }

  #validate(request: AdmissionRequest): AdmissionResponse {
    let problems: string[];
    try {
      problems = this.#opts.validate(request.object);
    } catch (err) {
      // The CRD's schema and CEL rules still hold; this webhook only adds to them.
      return this.#failOpen("validate-classcaches", request, "error", err);
    }
    if (problems.length === 0) return allowed(request.uid);
    return denied(request.uid, problems.join("; "));
  }

  #failOpen(webhook: WebhookName, request: AdmissionRequest, reason: FailOpenReason, err: unknown): AdmissionResponse {
    const message = (err as Error)?.message ?? String(err);
    this.metrics.failedOpen.inc({ webhook, reason });
    this.#log.warn("admission failed open", { webhook, reason, uid: request.uid, namespace: request.namespace, name: request.name, error: message });
    const what = webhook === "mutate-pods" ? "pod admitted without classcache injection" : "classcache checks skipped";
    const response = allowed(request.uid, cleanWarnings([`${what} (${reason}): ${message}`]));
    failedOpen.add(response);
    return response;
  }
}

/** Responses that were a fail-open, for the outcome label (the wire shape has no room for it). */
const failedOpen = new WeakSet<AdmissionResponse>();

function tlsOptions(certs: ServingCerts): { cert: string; key: string } {
  return { cert: certs.certPem, key: certs.keyPem };
}

/** Warnings travel in an HTTP header: printable, single-line, short. */
function cleanWarnings(warnings: string[] | undefined): string[] | undefined {
  if (!warnings) return undefined;
  return warnings
    .map((w) => w.replace(/[^\x20-\x7e]+/g, " ").trim())
    .filter((w) => w !== "")
    .map((w) => (w.length > MAX_WARNING_CHARS ? `${w.slice(0, MAX_WARNING_CHARS - 3)}...` : w));
}

/** The bytes of request bodies held right now, against one budget for the whole server. */
export class BodyBudget {
  used = 0;
  readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
}

async function readJson(req: IncomingMessage, limit: number, budget: BodyBudget): Promise<unknown> {
  const declared = Number(req.headers["content-length"] ?? NaN);
  if (declared > limit) throw new HttpError(413, `the body is larger than ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length;
      budget.used += chunk.length;
      if (size > limit) throw new HttpError(413, `the body is larger than ${limit} bytes`);
      if (budget.used > budget.max) throw new HttpError(503, "too many request bodies at once; try again");
      chunks.push(chunk);
    }
  } finally {
    budget.used -= size;
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8")) as unknown;
  } catch (err) {
    throw new HttpError(400, `the body is not JSON: ${(err as Error).message}`);
  }
}

function text(res: ServerResponse, status: number, body: string): void {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "Content-Length": Buffer.byteLength(body) }).end(body);
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) }).end(data);
}
