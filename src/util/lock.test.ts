import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { holderAlive, processIdentity, withFileLock } from "./lock.ts";

describe("the store's file lock", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-lock-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("names its holder by pid, start time and boot, and a live holder's lock is waited for", async () => {
    const lock = join(dir, "held.lock");
    await withFileLock(lock, async () => {
      assert.equal(await readFile(lock, "utf8"), processIdentity(process.pid));
      assert.equal(holderAlive(await readFile(lock, "utf8")), true);
      await assert.rejects(withFileLock(lock, async () => {}, 600), /timed out waiting for the lock/);
    });
  });

  it("takes over the lock of a process that came back with the same pid, as PID 1 of a restarted container does", async () => {
    const lock = join(dir, "restarted.lock");
    // This very pid, but an earlier life of it: another start time.
    const [pid, , boot] = processIdentity(process.pid)!.split(" ");
    await writeFile(lock, `${pid} 1 ${boot}`);
    assert.equal(holderAlive(`${pid} 1 ${boot}`), false);
    assert.equal(await withFileLock(lock, () => Promise.resolve("taken"), 2000), "taken");
  });

  it("takes over the lock of a process that was killed while it held it", async () => {
    const lock = join(dir, "killed.lock");
    const child = spawn(process.execPath, ["--input-type=module", "-e", `const { withFileLock } = await import(${JSON.stringify(join(import.meta.dirname, "lock.ts"))}); await withFileLock(${JSON.stringify(lock)}, () => new Promise(() => { console.log("held"); }));`], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve) => child.stdout.once("data", () => resolve()));
    child.kill("SIGKILL");
    await new Promise((r) => child.once("exit", r));
    assert.equal(await withFileLock(lock, () => Promise.resolve("taken"), 2000), "taken");
  });

  it("takes over an empty lock left by a holder that died between creating and writing it", async () => {
    const lock = join(dir, "empty.lock");
    await writeFile(lock, "");
    const old = new Date(Date.now() - 60_000);
    await utimes(lock, old, old);
    assert.equal(await withFileLock(lock, () => Promise.resolve("taken"), 2000), "taken");
  });
});
