import assert from "node:assert/strict";
import { request } from "node:https";
import { connect } from "node:tls";
import { after, before, describe, it } from "node:test";
import { discardLogger } from "../runtime/log.ts";
import type { AdmissionReview } from "./admission.ts";
import { fingerprint, issueCa, issueServing, servingSans, StaticCertSource, type ServingCerts } from "./certs.ts";
import { WebhookServer, type MutatePod, type Validate } from "./server.ts";

const sans = servingSans({ name: "classcache-webhook", namespace: "classcache-system" }, { ips: ["127.0.0.1"] });

async function servingSet(): Promise<ServingCerts> {
  const ca = await issueCa(new Date());
  const s = await issueServing(ca, sans, new Date());
  return { certPem: s.certPem, keyPem: s.keyPem, caPem: ca.certPem };
}

interface Reply {
  status: number;
  body: string;
}

function post(port: number, ca: string, path: string, body: string, contentType = "application/json", method = "POST"): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, method, ca, servername: "classcache-webhook.classcache-system.svc", headers: { "Content-Type": contentType }, agent: false }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

function review(object: unknown, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: { uid: "uid-1", namespace: "apps", operation: "CREATE", object, ...extra } });
}

const pod = { apiVersion: "v1", kind: "Pod", metadata: { generateName: "app-", labels: { "classcache.dev/inject": "demo" } }, spec: { containers: [{ name: "app", image: "app:1" }] } };

describe("WebhookServer", () => {
  let certs: ServingCerts;
  let source: StaticCertSource;
  let server: WebhookServer;
  let port: number;
  const ctl = new AbortController();
  let running: Promise<void>;
  let behaviour: "inject" | "same" | "throw" | "hang" = "inject";
  let seen: { name: string; namespace: string; dryRun: boolean } | undefined;
  const mutatePod: MutatePod = async (p, ctx) => {
    seen = { name: ctx.name, namespace: ctx.namespace, dryRun: ctx.dryRun };
    if (behaviour === "throw") throw new Error("no archive for this pod");
    if (behaviour === "hang") return new Promise(() => {});
    if (behaviour === "same") return { pod: p };
    const spec = p.spec as { containers: { env?: unknown[] }[] };
    spec.containers[0]!.env = [{ name: "CLASSCACHE", value: "on" }];
    return { pod: p, warnings: ["injected"] };
  };
  const validate: Validate = (obj) => {
    const size = (obj as { spec?: { size?: number } }).spec?.size ?? 0;
    if (size === 13) throw new Error("unlucky");
    return size < 0 ? ["spec.size must not be negative", "spec.size is too small"] : [];
  };

  before(async () => {
    certs = await servingSet();
    source = new StaticCertSource({ certs, logger: discardLogger });
    server = new WebhookServer({ certs: source, mutatePod, validate, logger: discardLogger, port: 0, host: "127.0.0.1", budgetMs: 200, maxBodyBytes: 64 * 1024 });
    running = server.start(ctl.signal);
    port = await server.listening();
  });
  after(async () => {
    ctl.abort();
    await running;
  });

  const answer = async (body: string, path = "/mutate-pods"): Promise<NonNullable<AdmissionReview["response"]>> => {
    const res = await post(port, certs.caPem, path, body);
    assert.equal(res.status, 200, res.body);
    const parsed = JSON.parse(res.body) as AdmissionReview;
    assert.equal(parsed.kind, "AdmissionReview");
    return parsed.response!;
  };

  it("answers a pod with the JSON Patch of the mutation and its warnings", async () => {
    behaviour = "inject";
    const res = await answer(review(pod, { dryRun: true }));
    assert.equal(res.allowed, true);
    assert.equal(res.uid, "uid-1");
    assert.deepEqual(res.warnings, ["injected"]);
    assert.deepEqual(JSON.parse(Buffer.from(res.patch!, "base64").toString()), [
      { op: "add", path: "/spec/containers/0/env", value: [{ name: "CLASSCACHE", value: "on" }] },
    ]);
    assert.deepEqual(seen, { name: "app-", namespace: "apps", dryRun: true });
  });

  it("sends no patch when the pod did not change", async () => {
    behaviour = "same";
    const res = await answer(review(pod));
    assert.deepEqual(res, { uid: "uid-1", allowed: true });
  });

  it("lets the pod in unchanged, with a warning, when the mutation throws", async () => {
    behaviour = "throw";
    const res = await answer(review(pod));
    assert.equal(res.allowed, true);
    assert.equal(res.patch, undefined);
    assert.match(res.warnings?.[0] ?? "", /without classcache injection \(error\): no archive for this pod/);
    const m = await server.metrics.failedOpen.get();
    assert.equal(m.values.find((v) => v.labels.reason === "error")?.value, 1);
  });

  it("lets the pod in unchanged once the budget is spent", async () => {
    behaviour = "hang";
    const t0 = performance.now();
    const res = await answer(review(pod));
    assert.ok(performance.now() - t0 < 2000);
    assert.equal(res.allowed, true);
    assert.equal(res.patch, undefined);
    assert.match(res.warnings?.[0] ?? "", /\(timeout\): no answer within 200 ms/);
    const requests = await server.metrics.requests.get();
    assert.equal(requests.values.find((v) => v.labels.outcome === "failed_open")?.value, 2);
  });

  it("denies an invalid object with every message", async () => {
    const res = await answer(review({ spec: { size: -1 } }), "/validate-classcaches");
    assert.equal(res.allowed, false);
    assert.deepEqual(res.status, { code: 422, reason: "Invalid", message: "spec.size must not be negative; spec.size is too small" });
    assert.deepEqual(await answer(review({ spec: { size: 1 } }), "/validate-classcaches"), { uid: "uid-1", allowed: true });
  });

  it("allows, with a warning, when validation itself fails", async () => {
    const res = await answer(review({ spec: { size: 13 } }), "/validate-classcaches");
    assert.equal(res.allowed, true);
    assert.match(res.warnings?.[0] ?? "", /checks skipped \(error\): unlucky/);
  });

  it("refuses what is not an AdmissionReview v1 in JSON", async () => {
    assert.equal((await post(port, certs.caPem, "/mutate-pods", review(pod), "text/plain")).status, 415);
    assert.equal((await post(port, certs.caPem, "/mutate-pods", "{not json")).status, 400);
    const wrong = await post(port, certs.caPem, "/mutate-pods", JSON.stringify({ apiVersion: "admission.k8s.io/v1beta1", kind: "AdmissionReview", request: { uid: "x" } }));
    assert.equal(wrong.status, 400);
    assert.match(wrong.body, /v1beta1/);
    assert.equal((await post(port, certs.caPem, "/mutate-pods", review({ big: "x".repeat(70 * 1024) }))).status, 413);
    assert.equal((await post(port, certs.caPem, "/mutate-pods", "", "application/json", "GET")).status, 405);
    assert.equal((await post(port, certs.caPem, "/nothing", "{}")).status, 404);
  });

  it("holds its memory and its time against a crowd of clients that trickle large bodies, and still answers the API server", async () => {
    behaviour = "same";
    // A separate server with small limits, so the crowd is cheap to make: 4 bodies of 60 KiB fill its budget.
    const small = new WebhookServer({ certs: source, mutatePod, validate, logger: discardLogger, port: 0, host: "127.0.0.1", maxBodyBytes: 64 * 1024, maxBufferedBytes: 256 * 1024, requestTimeoutMs: 1500 });
    const stop = new AbortController();
    const serving = small.start(stop.signal);
    const smallPort = await small.listening();
    try {
      // Twelve clients each send 60 KiB of a body and then stall, never finishing it.
      const crowd = Array.from({ length: 12 }, () =>
        new Promise<{ status: number; ms: number }>((resolve) => {
          const t0 = Date.now();
          const req = request({ host: "127.0.0.1", port: smallPort, path: "/mutate-pods", method: "POST", ca: certs.caPem, servername: "classcache-webhook.classcache-system.svc", headers: { "Content-Type": "application/json", "Content-Length": 64 * 1024 }, agent: false }, (res) => {
            res.resume();
            res.on("end", () => resolve({ status: res.statusCode ?? 0, ms: Date.now() - t0 }));
          });
          req.on("error", () => resolve({ status: 0, ms: Date.now() - t0 }));
          req.write(Buffer.alloc(60 * 1024, 32));
        }),
      );
      await new Promise((r) => setTimeout(r, 300));
      // The API server's request is served meanwhile (it gets what budget the crowd left, or is
      // answered at once; either way it is not stuck behind them).
      const t0 = Date.now();
      const res = await post(smallPort, certs.caPem, "/mutate-pods", review(pod));
      assert.ok(Date.now() - t0 < 1000, "answered at once");
      assert.ok(res.status === 200 || res.status === 503, `status ${res.status}`);
      const outcomes = await Promise.all(crowd);
      assert.ok(outcomes.filter((o) => o.status === 503).length >= 8, `most of the crowd is refused at once: ${JSON.stringify(outcomes)}`);
      assert.ok(outcomes.every((o) => o.ms < 5000), `no stalled request is held past the request timeout: ${JSON.stringify(outcomes)}`);
    } finally {
      stop.abort();
      await serving;
    }
  });

  it("serves /healthz and /readyz", async () => {
    assert.deepEqual(await post(port, certs.caPem, "/healthz", "", "", "GET"), { status: 200, body: "ok\n" });
    assert.deepEqual(await post(port, certs.caPem, "/readyz", "", "", "GET"), { status: 200, body: "ok\n" });
  });

  it("serves new certificates to new connections as soon as they are published", async () => {
    const served = (): Promise<string> =>
      new Promise((resolve, reject) => {
        const s = connect({ host: "127.0.0.1", port, servername: "classcache-webhook.classcache-system.svc", rejectUnauthorized: false }, () => {
          resolve(fingerprint(s.getPeerX509Certificate()!.toString()));
          s.end();
        });
        s.on("error", reject);
      });
    assert.equal(await served(), fingerprint(certs.certPem));
    const next = await servingSet();
    source.set(next);
    assert.equal(await served(), fingerprint(next.certPem));
    assert.equal((await post(port, next.caPem, "/healthz", "", "", "GET")).status, 200);
    certs = next;
  });
});
