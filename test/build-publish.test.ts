/**
 * What a ClassCache's build Job does, for real: `classcache build --publish-to` builds and
 * verifies the demo app in its own store, then uploads it to the node agent's socket under the
 * operator's build grant for its scope and ref, the manifest signed with the build's one-time
 * key; the agent (which holds no signing key) checks it and leaves it in the directory as an
 * offer; the operator's publishing step (operator/publish.ts, run here as the operator runs it)
 * admits it, signs and publishes it and binds the ref; the agent then adopts it and serves it.
 *
 * And the attacks of a tenant next door and of whoever can write to Valkey, against the real
 * agent process and a real Valkey: a build that claims another namespace's key, a key that is
 * not the digest of its inputs, JVM options and a launch smuggled into a manifest, a forged
 * offer, a binding replayed over a newer one. None gets anything into another tenant's JVMs,
 * and each refusal is said where an operator looks.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { archiveKey } from "../src/archive/key.ts";
import type { Manifest } from "../src/archive/manifest.ts";
import { generateBuildKey, generateSigningKey, openBinding, openEnvelope, signBinding, signBuild, signerFromPem, signGrant, trustStoreFromPems, type Signer, type TrustStore } from "../src/archive/signing.ts";
import { offerName } from "../src/directory/common.ts";
import { publishOffer, type Expectation } from "../src/operator/publish.ts";
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
  /** The grant and one-time build key the operator gives a ClassCache's build Job (see BuildGrant). */
  const grant = (scope: string, ref: string, owner: string, signer = operator) => {
    const key = generateBuildKey();
    const now = Date.now();
    return { token: signGrant({ scope, ref, classCache: `${scope}/app`, owner, buildKey: key.publicKey, issuedAt: now, expiresAt: now + 3600_000 }, signer), key: key.privatePem };
  };
  /** What the operator does for a ClassCache of `scope`/`owner` on its next reconcile. */
  const operatorPublishes = (scope: string, ref: string, owner: string) => {
    const e: Expectation = { scope, ref, arch: "amd64", owner, trust };
    return publishOffer(directory, operator, e, Date.now());
  };
  /** The key the node records for `ref` in the view of `scope` (what that scope's pods see), once it does. */
  const refRecorded = async (ref: string, scope: string): Promise<string> => {
    const path = join(agent.spec.store, "scopes", scope, "refs", `${ref}.amd64`);
    for (let i = 0; i < 300 && !existsSync(path); i++) await new Promise((r) => setTimeout(r, 100));
    return (await readFile(path, "utf8")).split("\n")[0]!;
  };

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
    [app, java17] = await Promise.all([demoAppJar(), jdk(17)]);
    agent = await Agent.start({
      name: "node-a",
      address: "127.0.0.41",
      store: join(dir, "node-a"),
      // The password as the DaemonSet gives it: in a file, not in the URL on the command line.
      directory: `redis://${redis.host}:${redis.port}`,
      tokenFile: join(dir, "token"),
      trust: join(dir, "signing.pub"),
      // No --signing-key: in a cluster a node signs nothing.
      logDir: join(dir, "logs"),
      // The one JDK the node's local API may build with.
      jdks: [java17],
      args: ["--root", ROOT, "--directory-password-file", join(dir, "directory-password"), "--want-retry", "1"],
    });
    directory = new ValkeyDirectory({ url: redis.url });
  });

  after(async () => {
    await directory?.close();
    await agent?.stop();
    await redis?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const socket = () => join(agent.spec.store, "run", "agent.sock");

  /** `classcache build` in a Job's own store, for a scope; uploaded when a grant is given. */
  async function build(scope: string, store: string, publish?: { ref: string; grant: { token: string; key: string } }): Promise<Manifest> {
    const files = publish && { token: join(dir, `grant-${publish.ref.slice(0, 8)}`), key: join(dir, `build-key-${publish.ref.slice(0, 8)}`) };
    const upload = publish ? [`--ref=${publish.ref}`, `--publish-to=unix:${socket()}`, `--build-token-file=${files!.token}`, `--build-key-file=${files!.key}`] : [];
    if (publish) {
      await writeFile(files!.token, publish.grant.token);
      await writeFile(files!.key, publish.grant.key, { mode: 0o600 });
    }
    const r = await cli("build", `--app=${app}`, `--java=${java17}`, `--store=${store}`, `--root=${ROOT}`, `--scope=${scope}`, ...upload, "--mode=none", "--exit-on-refresh", "--json");
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as Manifest;
  }

  it("refuses an upload without the operator's grant for the ref, and a manifest that names unsafe paths", async () => {
    const sha = "c".repeat(64);
    assert.equal((await socketCall(socket(), "PUT", `/v1/builds/${victimRef}/blobs/${sha}`, "wrong", "bytes")).status, 401);
    assert.equal((await socketCall(socket(), "PUT", `/v1/builds/${victimRef}/blobs/${sha}`, grant("victim", "d".repeat(64), "uid-v").token, "bytes")).status, 401, "another ref's grant");
    const forged = grant("victim", victimRef, "uid-v", signerFromPem(generateSigningKey().privatePem)).token;
    assert.equal((await socketCall(socket(), "PUT", `/v1/builds/${victimRef}/blobs/${sha}`, forged, "bytes")).status, 401, "a grant no trusted key signed");
    // The right grant, but bytes that are not the digest they claim: not kept.
    assert.equal((await socketCall(socket(), "PUT", `/v1/builds/${victimRef}/blobs/${sha}`, grant("victim", victimRef, "uid-v").token, "bytes")).status, 502);
    assert.equal(existsSync(join(agent.spec.store, "blobs", "sha256", sha)), false);
    const evil = { key: "e".repeat(64), archive: { sha256: sha, file: "../../etc/passwd", size: 5 }, layout: { id: "../x", files: [] } };
    assert.equal((await socketCall(socket(), "POST", `/v1/builds/${victimRef}/manifest`, grant("victim", victimRef, "uid-v").token, JSON.stringify(evil))).status, 400);
    assert.equal(existsSync(join(agent.spec.store, "manifests", `${evil.key}.json`)), false);
  });

  it("keeps a tenant from squatting another namespace's key or smuggling JVM options into a manifest", async () => {
    // The attacker builds the same public jar with the same JDK, in its own namespace's scope.
    const attackerStore = await LocalStore.open(join(dir, "attacker-store"));
    const own = await build("tenant-a", attackerStore.dir);
    const attackerGrant = grant("tenant-a", attackerRef, "uid-a");
    const upload = (m: Manifest) => uploadBuild(attackerStore, m, { socket: socket(), token: attackerGrant.token, ref: attackerRef, buildSigner: signerFromPem(attackerGrant.key) });
    const evilAgent = `-javaagent:{root}/layouts/${own.layout.id}/app.jar`;
    const poison = (m: Manifest): Manifest => ({ ...m, runtime: { ...m.runtime, jvmOptions: [...m.runtime.jvmOptions, evilAgent, "-XX:OnError=/bin/sh -c id"], launch: { kind: "jar", jar: "../../../tmp/evil.jar" } } });

    // 1. The victim's key, computed from the same inputs with the victim's scope, under the attacker's grant.
    const victimInputs = { ...own.inputs, scope: "victim" };
    const squat = poison({ ...own, inputs: victimInputs, key: archiveKey(victimInputs) });
    await assert.rejects(upload(squat), /is for scope "victim", but the build grant is for scope "tenant-a"/);
    // 2. The victim's key over the attacker's own inputs: the key is recomputed, not taken.
    await assert.rejects(upload(poison({ ...own, key: squat.key })), /key [0-9a-f]{12} is not the digest of its inputs/);
    assert.equal(await directory.binding(offerName(attackerRef, "amd64")), undefined, "nothing refused is offered");
    assert.match(await agent.logs(), /upload refused.*is for scope \\"victim\\", but the build grant is for scope \\"tenant-a\\"/, "the refusal is logged with the ref and scope");

    // 3. Its own scope and key, with options and a launch of its choosing: offered, but what is
    //    published carries the runtime trusted code derives, signed by the operator alone.
    const r = await upload(poison(own));
    assert.deepEqual(r, { key: own.key, status: "offered" });
    assert.equal(await directory.manifest(own.key), undefined, "a node publishes nothing itself");
    assert.deepEqual(await operatorPublishes("tenant-a", attackerRef, "uid-a"), { published: true, key: own.key });
    const published = openEnvelope((await directory.manifest(own.key))!, trust, own.key);
    assert.deepEqual(published.runtime.jvmOptions, ["-Xshare:auto", `-XX:SharedArchiveFile={root}/blobs/sha256/${own.archive.sha256}`]);
    assert.deepEqual(published.runtime.launch, { kind: "jar", jar: `layouts/${own.layout.id}/app.jar` });
    assert.equal(await directory.manifest(squat.key), undefined, "nothing was published under the victim's key");

    // The victim's honest build, from the same jar and JDK: another key, built and bound for the victim alone.
    const victim = await build("victim", join(dir, "victim-store"), { ref: victimRef, grant: grant("victim", victimRef, "uid-v") });
    assert.notEqual(victim.key, own.key, "the scope is in the key");
    assert.deepEqual(await operatorPublishes("victim", victimRef, "uid-v"), { published: true, key: victim.key });
    const binding = openBinding((await directory.binding(`${victimRef}.amd64`))!, trust, victimRef, "amd64");
    assert.deepEqual([binding.key, binding.scope, binding.owner], [victim.key, "victim", "uid-v"]);
    // The node that received the upload adopts it once it is published (its want for the ref), and serves it.
    assert.equal(await refRecorded(victimRef, "victim"), victim.key);
    assert.deepEqual((await directory.holders(victim.key)).map((h) => h.node), ["node-a"]);
    // What the victim's pods get on this node: only the victim's archive and layout, no option of the attacker's.
    const plan = await planPod({ ref: victimRef, arch: "amd64", store: join(agent.spec.store, "scopes", "victim"), root: ROOT, out: dir, fallback: ["-jar", "/app.jar"], fallbackJvm: [], shareMemory: false });
    const attackers = await planPod({ ref: victimRef, arch: "amd64", store: join(agent.spec.store, "scopes", "tenant-a"), root: ROOT, out: dir, fallback: ["-jar", "/app.jar"], fallbackJvm: [], shareMemory: false });
    assert.equal(attackers.archive, false, "the attacker's pods, which see their own namespace's view, find nothing of the victim's");
    assert.equal(plan.key, victim.key);
    assert.deepEqual(plan.jvm, ["-Xshare:auto", `-XX:SharedArchiveFile=${ROOT}/blobs/sha256/${victim.archive.sha256}`]);
    assert.deepEqual(plan.launch, ["-jar", `${ROOT}/layouts/${victim.layout.id}/app.jar`]);
  });

  it("refuses an offer forged in the directory: a Valkey writer has no build key and no operator key", async () => {
    // The writer takes a real offer of the victim's (its grant is in it) and puts the attacker's
    // manifest in it, sealed with a key of its own; or a build of another scope under its own grant.
    const attackerStore = await LocalStore.open(join(dir, "attacker-store"));
    const own = (await attackerStore.getManifest((await attackerStore.keys())[0]!))!;
    const victimGrant = grant("victim", victimRef, "uid-v");
    const forgedBuild = signBuild({ ...own, inputs: { ...own.inputs, scope: "victim" }, key: archiveKey({ ...own.inputs, scope: "victim" }) }, signerFromPem(generateSigningKey().privatePem));
    const name = offerName(victimRef, "amd64");
    await directory.bind(name, JSON.stringify({ grant: victimGrant.token, build: forgedBuild, node: "node-a" }));
    const before = await directory.binding(`${victimRef}.amd64`);
    const verdict = await operatorPublishes("victim", victimRef, "uid-v");
    assert.equal(verdict?.published, false);
    assert.match(verdict.published ? "" : verdict.reason, /build offer signed by untrusted key/);
    assert.equal(await directory.binding(`${victimRef}.amd64`), before, "the binding is untouched");
    assert.equal(await directory.binding(name), undefined, "the forged offer is gone");
    // The attacker's own grant in an offer for the victim's ref does not open for that ref.
    await directory.bind(name, JSON.stringify({ grant: grant("tenant-a", attackerRef, "uid-a").token, build: forgedBuild, node: "node-a" }));
    const other = await operatorPublishes("victim", victimRef, "uid-v");
    assert.match(other?.published === false ? other.reason : "", /build grant is for ref/);
  });

  it("binds the ref again when a recreated ClassCache's build finds the key already on the node", async () => {
    // The ClassCache is deleted (its finalizer unbinds the ref) and created again with a new UID.
    await directory.unbind(`${victimRef}.amd64`);
    const again = await build("victim", join(dir, "victim-store"), { ref: victimRef, grant: grant("victim", victimRef, "uid-v2") });
    assert.deepEqual(await operatorPublishes("victim", victimRef, "uid-v2"), { published: true, key: again.key });
    const binding = openBinding((await directory.binding(`${victimRef}.amd64`))!, trust, victimRef, "amd64");
    assert.deepEqual([binding.key, binding.owner], [again.key, "uid-v2"], "the key was local on the node, and the ref is bound all the same");
  });

  it("keeps the local API from running a caller's program, binding a ref or probing paths, and a binding from passing as a manifest", async () => {
    // A "JDK" of the caller's choosing: a script that would leave a mark if it ran (as root, on a node).
    const marker = join(dir, "pwned");
    const script = join(dir, "evil-jdk");
    await mkdir(join(script, "bin"), { recursive: true });
    await writeFile(join(script, "bin", "java"), `#!/bin/sh\ntouch ${marker}\n`, { mode: 0o755 });
    const training = { warmupUrls: [], timeoutMs: 10_000 };
    const refused = async (body: unknown, says: RegExp) => {
      const r = await agent.ensure(body);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.match(String(r.body.error), says);
    };
    await refused({ build: { app, appArgs: [], jvmOptions: [], java: script, training } }, /is not a JDK this agent builds with/);
    await refused({ build: { app, appArgs: [], jvmOptions: ["-XX:OnError=touch /tmp/x"], java: java17, training } }, /runs a command, reads options or names a file/);
    await refused({ build: { app, appArgs: [], jvmOptions: [], java: java17, profile: "/etc/passwd", training } }, /profile must be one of the catalog's/);
    assert.equal(existsSync(marker), false, "nothing of the caller's ran");
    await refused({ key: "a".repeat(64), ref: victimRef }, /a ref is only looked up here, never bound/);
    await refused({ key: "../../etc/passwd" }, /key must be 64 lowercase hex digits/);
    // A signed binding put where a manifest belongs: refused as what it is, not a crash.
    const bindingText = (await directory.binding(`${victimRef}.amd64`))!;
    const key = "b".repeat(64);
    await directory.publish(key, bindingText);
    const confused = await agent.ensure({ key });
    assert.equal(confused.status, 502, JSON.stringify(confused.body));
    assert.match(String(confused.body.error), /manifest expected, got a statement of type "classcache.dev\/binding\/v2"/);
    await directory.remove(key);
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
