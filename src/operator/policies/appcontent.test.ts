import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { appContent, type PodWithChecks } from "./appcontent.ts";

const REF = "a".repeat(64);
const pod = (ref: string, message: string | undefined, finishedAt = "2026-01-01T00:00:00Z", last = false): PodWithChecks => {
  const terminated = message === undefined ? undefined : { message, finishedAt };
  return { metadata: { annotations: { "classcache.dev/ref": ref } }, status: { initContainerStatuses: [{ name: "classcache-check", ...(last ? { lastState: { terminated } } : { state: { terminated } }) }] } };
};
const differs = (actual: string) => JSON.stringify({ archive: false, reason: "app-jar-differs", jar: "/app.jar", expected: "e".repeat(64), actual });

describe("what the pods' jar checks say about the app", () => {
  test("counts the pods of the ref whose jars differ, and takes the digest reported last", () => {
    const r = appContent(
      [
        pod(REF, differs("1".repeat(64)), "2026-01-01T00:00:01Z"),
        pod(REF, differs("2".repeat(64)), "2026-01-01T00:00:02Z", true),
        pod(REF, JSON.stringify({ archive: true })),
        pod(REF, JSON.stringify({ archive: false, reason: "no-archive" })),
        pod("b".repeat(64), differs("3".repeat(64)), "2026-01-01T00:00:09Z"),
        pod("b".repeat(64), differs("9".repeat(64)), "2026-01-01T00:00:09Z"),
        pod(REF, undefined),
        pod(REF, "not json"),
        pod(REF, differs("not-a-digest")),
      ],
      REF,
      "9".repeat(64),
    );
    assert.deepEqual(r, { differing: 3, digest: "2".repeat(64) }, "a pod of an earlier ref counts when it runs the content already recorded");
  });

  test("keeps the recorded content while only pods of an earlier ref, waiting for its archive, report it", () => {
    assert.deepEqual(appContent([pod("b".repeat(64), differs("9".repeat(64)))], REF, "9".repeat(64)), { differing: 1, digest: "9".repeat(64) });
  });

  test("finds nothing when every pod runs the archive's app", () => {
    assert.deepEqual(appContent([pod(REF, JSON.stringify({ archive: true }))], REF), { differing: 0, digest: undefined });
  });
});
