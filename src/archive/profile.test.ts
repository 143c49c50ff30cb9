import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ClasscacheError } from "../runtime/errors.ts";
import { catalogNames, loadProfile, parseProfile } from "./profile.ts";

describe("agent profiles", () => {
  it("ship the four profiles of cluster-classcache, the reference agent's, Datadog's and Elastic's", () => {
    assert.deepEqual(catalogNames(), ["apm-v01", "datadog", "elastic", "otel", "pinpoint", "reference", "scouter"]);
  });

  it("read a profile without spec.mode as cluster-classcache meant it: agent off at run time means baked", () => {
    const p = parseProfile(
      `apiVersion: classcache.dev/v1
kind: AgentProfile
metadata: { name: legacy }
spec:
  agent: { jar: /opt/agent/agent.jar }
  build: {}
  runtime: {}
`,
      "test",
    );
    assert.equal(p.mode, "baked");
    assert.equal(p.build.javaagent, true);
    assert.equal(p.runtime.javaagent, false);
    assert.equal(p.runtime.bootclasspath, true);
  });

  it("reject unknown fields with the path of the problem", () => {
    assert.throws(
      () => parseProfile("apiVersion: classcache.dev/v1\nkind: AgentProfile\nmetadata: {name: x}\nspec: {agent: {jar: a}, build: {}, runtime: {}, primer: 1}\n", "bad.yaml"),
      (e: unknown) => e instanceof ClasscacheError && e.message.includes("bad.yaml") && (e.details ?? "").includes('/spec: must NOT have additional properties "primer"'),
    );
  });

  it("reject a mode that contradicts the runtime phase", () => {
    assert.throws(
      () => parseProfile("apiVersion: classcache.dev/v1\nkind: AgentProfile\nmetadata: {name: x}\nspec: {mode: hybrid, agent: {jar: a}, build: {}, runtime: {javaagent: false}}\n", "t"),
      /mode hybrid needs spec.runtime.javaagent: true/,
    );
  });

  it("name the catalog when a profile is unknown", async () => {
    await assert.rejects(loadProfile("newrelic"), (e: unknown) => e instanceof ClasscacheError && /unknown agent profile "newrelic"/.test(e.message) && /otel/.test(e.hint ?? ""));
  });
});
