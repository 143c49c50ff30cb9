import assert from "node:assert/strict";
import { it } from "node:test";
import { commands } from "./index.ts";

void it("each entry of the command table names and summarises the command it loads", async () => {
  for (const entry of commands) {
    const cmd = await entry.load();
    assert.equal(cmd.name, entry.name);
    assert.equal(cmd.summary, entry.summary, `${entry.name}: the table's summary is the command's`);
  }
});
