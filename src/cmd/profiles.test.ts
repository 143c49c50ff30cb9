import assert from "node:assert/strict";
import { PassThrough } from "node:stream";
import { describe, it } from "node:test";
import type { Io } from "./command.ts";
import { profilesCommand } from "./profiles.ts";

function io(): { out: string[]; io: Io } {
  const out: string[] = [];
  const stdout = new PassThrough().on("data", (d: Buffer) => out.push(d.toString()));
  return { out, io: { stdout, stderr: new PassThrough(), signal: new AbortController().signal, env: {} } };
}

describe("classcache profiles", () => {
  it("lists every catalog profile with how it proves its agent, and says which prove nothing", async () => {
    const { out, io: x } = io();
    assert.equal(await profilesCommand.run(["--json"], x), 0);
    const rows = JSON.parse(out.join("")) as { name: string; mode: string; proof: string | null }[];
    const by = new Map(rows.map((r) => [r.name, r]));
    assert.ok(by.get("reference")?.proof?.includes("reference-agent"), "the reference agent's evidence");
    assert.ok(by.get("otel")?.proof?.includes("LoggingSpanExporter"), "OpenTelemetry's evidence");
    assert.equal(by.get("scouter")?.proof, null, "a profile without evidence says so");
    const { out: table, io: y } = io();
    await profilesCommand.run([], y);
    assert.match(table.join(""), /scouter .*not proven/);
  });
});
