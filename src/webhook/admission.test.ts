import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { allowed, denied, jsonPatch, parseReview, patched, reviewResponse } from "./admission.ts";

const decode = (patch: string | undefined): unknown => JSON.parse(Buffer.from(patch ?? "", "base64").toString("utf8"));

describe("admission answers", () => {
  it("allowed carries the uid and only non-empty warnings", () => {
    assert.deepEqual(allowed("u1"), { uid: "u1", allowed: true });
    assert.deepEqual(allowed("u1", []), { uid: "u1", allowed: true });
    assert.deepEqual(allowed("u1", ["careful"]), { uid: "u1", allowed: true, warnings: ["careful"] });
  });

  it("denied defaults to 422 Invalid and keeps the message", () => {
    assert.deepEqual(denied("u2", "spec.size must not be negative"), {
      uid: "u2",
      allowed: false,
      status: { code: 422, message: "spec.size must not be negative", reason: "Invalid" },
    });
    assert.equal(denied("u2", "no", 403).status?.code, 403);
  });

  it("patched without a change sends no patch at all", () => {
    const pod = { metadata: { name: "p", labels: { a: "b" } }, spec: { containers: [{ name: "app" }] } };
    assert.deepEqual(patched("u3", pod, structuredClone(pod)), { uid: "u3", allowed: true });
  });

  it("patched sends a base64 JSON Patch that turns the original into the mutated object", () => {
    const pod = { metadata: { name: "p" }, spec: { containers: [{ name: "app", env: [{ name: "A", value: "1" }] }] } };
    const mutated = structuredClone(pod);
    mutated.spec.containers[0]!.env.push({ name: "JDK_JAVA_OPTIONS", value: "@/classcache/args" });
    const res = patched("u4", pod, mutated, ["w"]);
    assert.equal(res.patchType, "JSONPatch");
    assert.deepEqual(res.warnings, ["w"]);
    assert.deepEqual(decode(res.patch), [{ op: "add", path: "/spec/containers/0/env/1", value: { name: "JDK_JAVA_OPTIONS", value: "@/classcache/args" } }]);
  });

  it("escapes / and ~ in keys as RFC 6901 asks", () => {
    const pod = { metadata: { labels: {} as Record<string, string>, annotations: { "x~y/z": "old" } } };
    const mutated = { metadata: { labels: { "classcache.dev/inject": "demo" }, annotations: { "x~y/z": "new" } } };
    assert.deepEqual(decode(patched("u5", pod, mutated).patch), [
      { op: "replace", path: "/metadata/annotations/x~0y~1z", value: "new" },
      { op: "add", path: "/metadata/labels/classcache.dev~1inject", value: "demo" },
    ]);
  });

  it("treats undefined fields as absent, as JSON does", () => {
    assert.deepEqual(jsonPatch({ a: 1 }, { a: 1, b: undefined }), []);
  });

  it("wraps the response in an AdmissionReview v1", () => {
    assert.deepEqual(reviewResponse(allowed("u")), { apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", response: { uid: "u", allowed: true } });
  });
});

describe("parseReview", () => {
  it("accepts an AdmissionReview v1 with a request uid", () => {
    const review = { apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: { uid: "x", object: {} } };
    assert.deepEqual(parseReview(review), { request: review.request });
  });

  it("names what is wrong with anything else", () => {
    assert.match((parseReview([]) as { error: string }).error, /not a JSON object/);
    assert.match((parseReview({ apiVersion: "admission.k8s.io/v1beta1", kind: "AdmissionReview", request: { uid: "x" } }) as { error: string }).error, /v1beta1/);
    assert.match((parseReview({ apiVersion: "admission.k8s.io/v1", kind: "Pod" }) as { error: string }).error, /kind/);
    assert.match((parseReview({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview" }) as { error: string }).error, /no request/);
    assert.match((parseReview({ apiVersion: "admission.k8s.io/v1", kind: "AdmissionReview", request: {} }) as { error: string }).error, /uid/);
  });
});
