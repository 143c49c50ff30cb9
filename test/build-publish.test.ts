/**
 * What a ClassCache's build Job does, for real: `classcache build --publish-to` builds and
 * verifies the demo app in its own store, then uploads it to the node agent's socket under the
 * operator's build grant for its scope and ref; the agent admits it (its key recomputed, its
 * runtime derived by the agent), signs and publishes it, binds the ref and serves it.
 *
 * And the attacks of a tenant next door, against the real agent process and a real Valkey: a
 * build that claims another namespace's key, a key that is not the digest of its inputs, JVM
 * options and a launch smuggled into a manifest, a binding replayed over a newer one. None gets
 * anything into another tenant's JVMs, and the agent says why in its log.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { archiveKey } from "../src/archive/key.ts";
import type { Manifest } from "../src/archive/manifest.ts";
import { generateSigningKey, openBinding, openEnvelope, signBinding, signerFromPem, signGrant, trustStoreFromPems, type Signer, type TrustStore } from "../src/archive/signing.ts";
import { demoAppJar } from "../src/demo/fixtures.ts";
import { ValkeyDirectory } from "../src/directory/valkey.ts";
import { planPod } from "../src/node/podinit.ts";
import { uploadBuild } from "../src/node/upload.ts";
import { LocalStore } from "../src/store/store.ts";
import { Agent } from "../src/testenv/agents.ts";
import { startRedis, type RunningRedis } from "../src/testenv/redis.ts";
import { cli, jdk } from "./support/cli.ts";

function socketCall(socket: string, method: string, path: string, token: string, body: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers: { authorization: `Bearer ${token}`, "content-length": Buffer.byteLength(body) } }, (res) => {
      const parts: Buffer[] = [];
      res.on("data", (c: Buffer) => parts.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString() }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

const ROOT = "/var/lib/classcache";

describe("a build Job's upload to its node agent", () => {
  let dir: string;
  let redis: RunningRedis;
  let agent: Agent;
  let operator: Signer;
  let trust: TrustStore;
  let directory: ValkeyDirectory;
  let app: string;
  let java17: string;
  const victimRef = randomBytes(32).toString("hex");
  const attackerRef = randomBytes(32).toString("hex");
  /** The grant the operator gives a ClassCache's build Job (see BuildGrant). */
  const grant = (scope: string, ref: string, owner: string) => signGrant({ scope, ref, classCache: `${scope}/app`, owner, issuedAt: Date.now() }, operator);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "classcache-publish-"));
    redis = await startRedis({ dir: join(dir, "redis"), password: "publish-test-password" });
    const keys = generateSigningKey();
    operator = signerFromPem(keys.privatePem);
    trust = trustStoreFromPems([keys.publicPem]);
    await writeFile(join(dir, "signing.pem"), keys.privatePem, { mode: 0o600 });
    await writeFile(join(dir, "signing.pub"), keys.publicPem);
    await writeFile(join(dir, "token"), randomBytes(24).toString("hex"), { mode: 0o600 });
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
      args: ["--root", ROOT, "--directory-password-file", join(dir, "directory-password")],
    });
    directory = new ValkeyDirectory({ url: redis.url });
    [app, java17] = await Promise.all([demoAppJar(), jdk(17)]);
  });

  after(async () => {
    await directory?.close();
    await agent?.stop();
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const socket = () => join(agent.spec.store, "run", "agent.sock");

  /** `classcache build` in a Job's own store, for a scope; uploaded when a grant is given. */
  async function build(scope: string, store: string, publish?: { ref: string; grant: string }): Promise<Manifest> {
    const upload = publish ? [`--ref=${publish.ref}`, `--publish-to=unix:${socket()}`, `--build-token-file=${join(dir, `grant-${publish.ref.slice(0, 8)}`)}`] : [];
    if (publish) await writeFile(join(dir, `grant-${publish.ref.slice(0, 8)}`), publish.grant);
    const r = await cli("build", `--app=${app}`, `--java=${java17}`, `--store=${store}`, `--root=${ROOT}`, `--scope=${scope}`, ...upload, "--mode=none", "--exit-on-refresh", "--json");
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Manifest;
  }

  it("refuses an upload without the operator's grant for the ref, and a manifest that names unsafe paths", async () => {
    const sha = "c".repeat(64);
    assert.equal((await socketCall(socket(), "PUT", `/v1/builds/${victimRef}/blobs/${sha}`, "wrong", "bytes")).status, 401);
    assert.equal((await socketCall(socket(), "PUT", `/v1/builds/${victimRef}/blobs/${sha}`, grant("victim", "d".repeat(64), "uid-v"), "bytes")).status, 401, "another ref's grant");
    const forged = signGrant({ scope: "victim", ref: victimRef, classCache: "victim/app", owner: "uid-v", issuedAt: Date.now() }, signerFromPem(generateSigningKey().privatePem));
    assert.equal((await socketCall(socket(), "PUT", `/v1/builds/${victimRef}/blobs/${sha}`, forged, "bytes")).status, 401, "a grant no trusted key signed");
    // The right grant, but bytes that are not the digest they claim: not kept.
    assert.equal((await socketCall(socket(), "PUT", `/v1/builds/${victimRef}/blobs/${sha}`, grant("victim", victimRef, "uid-v"), "bytes")).status, 502);
    assert.equal(existsSync(join(agent.spec.store, "blobs", "sha256", sha)), false);
    const evil = { key: "e".repeat(64), archive: { sha256: sha, file: "../../etc/passwd", size: 5 }, layout: { id: "../x", files: [] } };
    assert.equal((await socketCall(socket(), "POST", `/v1/builds/${victimRef}/manifest`, grant("victim", victimRef, "uid-v"), JSON.stringify(evil))).status, 400);
    assert.equal(existsSync(join(agent.spec.store, "manifests", `${evil.key}.json`)), false);
  });

  it("keeps a tenant from squatting another namespace's key or smuggling JVM options into a manifest", async () => {
    // The attacker builds the same public jar with the same JDK, in its own namespace's scope.
    const attackerStore = await LocalStore.open(join(dir, "attacker-store"));
    const own = await build("tenant-a", attackerStore.dir);
    const upload = (m: Manifest) => uploadBuild(attackerStore, m, { socket: socket(), token: grant("tenant-a", attackerRef, "uid-a"), ref: attackerRef });
    const evilAgent = `-javaagent:{root}/layouts/${own.layout.id}/app.jar`;
    const poison = (m: Manifest): Manifest => ({ ...m, runtime: { ...m.runtime, jvmOptions: [...m.runtime.jvmOptions, evilAgent, "-XX:OnError=/bin/sh -c id"], launch: { kind: "jar", jar: "../../../tmp/evil.jar" } } });

    // 1. The victim's key, computed from the same inputs with the victim's scope, under the attacker's grant.
    const victimInputs = { ...own.inputs, scope: "victim" };
    const squat = poison({ ...own, inputs: victimInputs, key: archiveKey(victimInputs) });
    await assert.rejects(upload(squat), /is for scope "victim", but the build grant is for scope "tenant-a"/);
    // 2. The victim's key over the attacker's own inputs: the key is recomputed, not taken.
    await assert.rejects(upload(poison({ ...own, key: squat.key })), /key [0-9a-f]{12} is not the digest of its inputs/);
    assert.equal(await directory.manifest(squat.key), undefined, "nothing was published under the victim's key");
    assert.match(await agent.logs(), /upload refused.*is for scope \\"victim\\", but the build grant is for scope \\"tenant-a\\"/, "the refusal is logged with the ref and scope");

    // 3. Its own scope and key, with options and a launch of its choosing: admitted, but the runtime is the agent's.
    const r = await upload(poison(own));
    assert.equal(r.key, own.key);
    const published = openEnvelope((await directory.manifest(own.key))!, trust, own.key);
    assert.deepEqual(published.runtime.jvmOptions, ["-Xshare:auto", `-XX:SharedArchiveFile={root}/blobs/sha256/${own.archive.sha256}`]);
    assert.deepEqual(published.runtime.launch, { kind: "jar", jar: `layouts/${own.layout.id}/app.jar` });

    // The victim's honest build, from the same jar and JDK: another key, built and bound for the victim alone.
    const victim = await build("victim", join(dir, "victim-store"), { ref: victimRef, grant: grant("victim", victimRef, "uid-v") });
    assert.notEqual(victim.key, own.key, "the scope is in the key");
    const binding = openBinding((await directory.binding(`${victimRef}.amd64`))!, trust, victimRef, "amd64");
    assert.deepEqual([binding.key, binding.scope, binding.owner], [victim.key, "victim", "uid-v"]);
    assert.deepEqual((await directory.holders(victim.key)).map((h) => h.node), ["node-a"]);
    // What the victim's pods get on this node: only the victim's archive and layout, no option of the attacker's.
    const plan = await planPod({ ref: victimRef, arch: "amd64", store: join(agent.spec.store, "scopes", "victim"), root: ROOT, out: dir, fallback: ["-jar", "/app.jar"], fallbackJvm: [], shareMemory: false });
    const attackers = await planPod({ ref: victimRef, arch: "amd64", store: join(agent.spec.store, "scopes", "tenant-a"), root: ROOT, out: dir, fallback: ["-jar", "/app.jar"], fallbackJvm: [], shareMemory: false });
    assert.equal(attackers.archive, false, "the attacker's pods, which see their own namespace's view, find nothing of the victim's");
    assert.equal(plan.key, victim.key);
    assert.deepEqual(plan.jvm, ["-Xshare:auto", `-XX:SharedArchiveFile=${ROOT}/blobs/sha256/${victim.archive.sha256}`]);
    assert.deepEqual(plan.launch, ["-jar", `${ROOT}/layouts/${victim.layout.id}/app.jar`]);
  });

  it("binds the ref again when a recreated ClassCache's build finds the key already on the node", async () => {
    // The ClassCache is deleted (its finalizer unbinds the ref) and created again with a new UID.
    await directory.unbind(`${victimRef}.amd64`);
    const again = await build("victim", join(dir, "victim-store"), { ref: victimRef, grant: grant("victim", victimRef, "uid-v2") });
    const binding = openBinding((await directory.binding(`${victimRef}.amd64`))!, trust, victimRef, "amd64");
    assert.deepEqual([binding.key, binding.owner], [again.key, "uid-v2"], "the key was local on the node, and the ref is bound all the same");
  });

  it("refuses a binding replayed over a newer one, and says so", async () => {
    const name = `${victimRef}.amd64`;
    const current = openBinding((await directory.binding(name))!, trust, victimRef, "amd64");
    const ok = await agent.ensure({ ref: victimRef });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    // An old binding of the same ref, once validly signed, written back by someone who can write to Valkey.
    const old = signBinding({ ...current, key: "9".repeat(64), issuedAt: current.issuedAt - 60_000 }, operator);
    await directory.unbind(name);
    await directory.bind(name, old);
    const replayed = await agent.ensure({ ref: victimRef });
    assert.equal(replayed.status, 502, JSON.stringify(replayed.body));
    assert.match(String(replayed.body.error), /before the one this node holds.*a replayed binding is refused/);
    assert.equal((await readFile(join(agent.spec.store, "scopes", "victim", "refs", name), "utf8")).split("\n")[0], current.key, "the node still records the newer binding's key");
    assert.match(await agent.logs(), /binding rejected.*older than the one this node holds/);
    assert.ok((await agent.metric("classcache_verification_failures_total")) >= 1);
  });
});
