import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { MAX_PERF_DATA_BYTES, readPerfFile } from "./hsperf.ts";

// What a pod controls on its node: the files in its own /tmp, which the node agent reads.
describe("reading a JVM's perf-data file that its process controls", () => {
  let tmp: string;
  const uid = process.getuid!();
  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), "classcache-hsperf-"));
    await mkdir(join(tmp, "hsperfdata_app"));
    await writeFile(join(tmp, "hsperfdata_app", "10"), Buffer.alloc(4096, 1));
    execFileSync("mkfifo", [join(tmp, "hsperfdata_app", "11")]);
    await symlink("/dev/zero", join(tmp, "hsperfdata_app", "12"));
    await writeFile(join(tmp, "hsperfdata_app", "13"), Buffer.alloc(MAX_PERF_DATA_BYTES + 1));
    await mkdir(join(tmp, "elsewhere"));
    await writeFile(join(tmp, "elsewhere", "14"), Buffer.alloc(4096, 1));
    await symlink(join(tmp, "elsewhere"), join(tmp, "hsperfdata_link"));
  });
  after(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it("reads a regular file of the process's owner", async () => {
    assert.equal((await readPerfFile(10, tmp, uid))?.length, 4096);
    assert.equal(await readPerfFile(10, tmp, uid + 1), undefined, "another owner's file is not the JVM's");
  });

  it("neither hangs on a FIFO nor follows a symlink to a device, nor reads more than a perf file can be", async () => {
    const t0 = Date.now();
    assert.equal(await readPerfFile(11, tmp, uid), undefined, "a FIFO");
    assert.ok(Date.now() - t0 < 1000, "answered at once");
    assert.equal(await readPerfFile(12, tmp, uid), undefined, "a symlink to /dev/zero");
    assert.equal(await readPerfFile(13, tmp, uid), undefined, "a file larger than any perf data");
    assert.equal(await readPerfFile(14, tmp, uid), undefined, "a user directory that is a symlink elsewhere");
  });
});
