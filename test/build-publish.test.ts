/**
 * What a ClassCache's build Job does, for real: `classcache build --publish-to` builds and
 * verifies the demo app in its own store, then uploads it to the node agent's socket with the
 * ref's build token; the agent signs and publishes it, binds the ref and serves it. A wrong
 * token or an unsafe manifest gets nothing in.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { buildToken, generateSigningKey, openBinding, openEnvelope, trustStoreFromPems } from "../src/archive/signing.ts";
import { demoAppJar } from "../src/demo/fixtures.ts";
import { ValkeyDirectory } from "../src/directory/valkey.ts";
import { Agent } from "../src/testenv/agents.ts";
import { startRedis, type RunningRedis } from "../src/testenv/redis.ts";
import { cli, jdk } from "./support/cli.ts";

function socketCall(socket: string, method: string, path: string, token: string, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers: { authorization: `Bearer ${token}`, "content-length": Buffer.byteLength(body) } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("a build Job's upload to its node agent", () => {
  let dir: string;
  let redis: RunningRedis;
  let agent: Agent;
  let publicPem: string;
  const buildKey = randomBytes(32).toString("hex");
  const ref = randomBytes(32).toString("hex");

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-publish-"));
    redis = await startRedis({ dir: join(dir, "redis"), password: "publish-test-password" });
    const keys = generateSigningKey();
    publicPem = keys.publicPem;
    await writeFile(join(dir, "signing.pem"), keys.privatePem, { mode: 0o600 });
    await writeFile(join(dir, "signing.pub"), keys.publicPem);
    await writeFile(join(dir, "token"), randomBytes(24).toString("hex"), { mode: 0o600 });
    await writeFile(join(dir, "build-key"), buildKey, { mode: 0o600 });
    await writeFile(join(dir, "directory-password"), redis.password, { mode: 0o600 });
    agent = await Agent.start({
      name: "node-a",
      address: "127.0.0.41",
      store: join(dir, "node-a"),
      // The password as the DaemonSet gives it: in a file, not in the URL on the command line.
      directory: `redis://${redis.host}:${redis.port}`,
      tokenFile: join(dir, "token"),
      trust: join(dir, "signing.pub"),
      signingKey: join(dir, "signing.pem"),
      logDir: join(dir, "logs"),
      args: ["--root", "/var/lib/classcache", "--build-key-file", join(dir, "build-key"), "--directory-password-file", join(dir, "directory-password")],
    });
  });

  after(async () => {
    await agent?.stop();
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const socket = () => join(agent.spec.store, "run", "agent.sock");

  it("refuses an upload without the ref's token, and a manifest that names unsafe paths", async () => {
    const sha = "c".repeat(64);
    assert.equal(await socketCall(socket(), "PUT", `/v1/builds/${ref}/blobs/${sha}`, "wrong", "bytes"), 401);
    assert.equal(await socketCall(socket(), "PUT", `/v1/builds/${ref}/blobs/${sha}`, buildToken(buildKey, "d".repeat(64)), "bytes"), 401, "another ref's token");
    // The right token, but bytes that are not the digest they claim: not kept.
    assert.equal(await socketCall(socket(), "PUT", `/v1/builds/${ref}/blobs/${sha}`, buildToken(buildKey, ref), "bytes"), 502);
    assert.equal(existsSync(join(agent.spec.store, "blobs", "sha256", sha)), false);
    const evil = { key: "e".repeat(64), archive: { sha256: sha, file: "../../etc/passwd", size: 5 }, layout: { id: "../x", files: [] } };
    assert.equal(await socketCall(socket(), "POST", `/v1/builds/${ref}/manifest`, buildToken(buildKey, ref), JSON.stringify(evil)), 400);
    assert.equal(existsSync(join(agent.spec.store, "manifests", `${evil.key}.json`)), false);
  });

  it("builds, uploads, and the agent signs, publishes and binds the ref", async () => {
    const [app, java17] = await Promise.all([demoAppJar(), jdk(17)]);
    await writeFile(join(dir, "build-token"), buildToken(buildKey, ref));
    const r = await cli(
      "build", `--app=${app}`, `--java=${java17}`, `--store=${join(dir, "job-store")}`, "--root=/var/lib/classcache",
      `--ref=${ref}`, `--publish-to=unix:${socket()}`, `--build-token-file=${join(dir, "build-token")}`, "--mode=none", "--exit-on-refresh", "--json",
    );
    assert.equal(r.code, 0, r.stderr);
    const built = JSON.parse(r.stdout) as { key: string };
    assert.equal((await readFile(join(agent.spec.store, "refs", `${ref}.amd64`), "utf8")).trim(), built.key);
    const trust = trustStoreFromPems([publicPem]);
    const directory = new ValkeyDirectory({ url: redis.url });
    try {
      assert.equal(openBinding((await directory.binding(`${ref}.amd64`))!, trust, ref, "amd64").key, built.key);
      assert.equal(openEnvelope((await directory.manifest(built.key))!, trust, built.key).key, built.key);
      assert.deepEqual((await directory.holders(built.key)).map((h) => h.node), ["node-a"]);
    } finally {
      await directory.close();
    }
  });
});
