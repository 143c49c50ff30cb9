/**
 * The CSI node plugin over real gRPC on real Unix sockets, mounting with the real mounter (as
 * root). The file re-runs itself in a private mount namespace (unshare), so no mount it makes can
 * outlive it or reach the host's; there the kubelet's directory is also made a shared mount with
 * a peer — the host's side of the plugin container's Bidirectional mount — to check that what
 * the host sees is read-only too. Everything mounted is unmounted in `after`, namespace or not.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";
import { credentials, status, type Client, type ServiceError } from "@grpc/grpc-js";
import pkg from "../../../package.json" with { type: "json" };
import { createLogger } from "../../runtime/log.ts";
import { ExecMounter, parseMountinfo } from "./mount.ts";
import { CSI_DRIVER, CsiNodePlugin } from "./plugin.ts";
import { csiServices } from "./protos.ts";

const IN_NAMESPACE = "CLASSCACHE_CSI_TEST_MOUNT_NS";
const root = process.getuid?.() === 0;
if (root && process.env[IN_NAMESPACE] === undefined) {
  const unshare = ["--mount", "--propagation", "private"];
  if (spawnSync("unshare", [...unshare, "true"]).status === 0) {
    const r = spawnSync("unshare", [...unshare, process.execPath, ...process.execArgv, fileURLToPath(import.meta.url)], { stdio: "inherit", env: { ...process.env, [IN_NAMESPACE]: "1" } });
    process.exit(r.status ?? 1);
  }
}
const privateNamespace = process.env[IN_NAMESPACE] === "1";

type Call = (req: object, cb: (err: ServiceError | null, res: unknown) => void) => void;
function call<T = Record<string, unknown>>(client: Client, method: string, req: object = {}): Promise<T> {
  const fn = (client as unknown as Record<string, Call>)[method]!;
  return new Promise((resolve, reject) => fn.call(client, req, (err, res) => (err ? reject(err) : resolve(res as T))));
}

function mountsUnder(dir: string): { mountPoint: string; options: string[] }[] {
  return parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8")).filter((m) => m.mountPoint === dir || m.mountPoint.startsWith(dir + "/"));
}

const invalid = (pattern: RegExp) => (err: ServiceError) => {
  assert.equal(err.code, status.INVALID_ARGUMENT, err.message);
  assert.match(err.details, pattern);
  return true;
};

void describe("the CSI node plugin", { skip: root ? false : "mounting needs root" }, () => {
  let tmp: string;
  let kubelet: string;
  let hostSide: string | undefined;
  let store: string;
  let pods: string;
  let plugin: CsiNodePlugin;
  let stopped: Promise<void>;
  const stop = new AbortController();
  const logs: Record<string, unknown>[] = [];
  let identity: Client;
  let node: Client;
  let registration: Client;

  const targetOf = (uid: string) => join(pods, uid, "volumes", "kubernetes.io~csi", "classcache", "mount");
  const publishRequest = (uid: string, namespace: string, attributes: Record<string, string> = {}) => ({
    volume_id: `csi-${uid}`,
    target_path: targetOf(uid),
    volume_capability: { mount: { fs_type: "", mount_flags: [] }, access_mode: { mode: "SINGLE_NODE_WRITER" } },
    readonly: false,
    volume_context: {
      "csi.storage.k8s.io/ephemeral": "true",
      "csi.storage.k8s.io/pod.namespace": namespace,
      "csi.storage.k8s.io/pod.name": `app-${uid.slice(0, 5)}`,
      "csi.storage.k8s.io/pod.uid": uid,
      "csi.storage.k8s.io/serviceAccount.name": "default",
      ...attributes,
    },
  });
  const publish = (req: object) => call(node, "NodePublishVolume", req);
  const unpublish = (uid: string, target = targetOf(uid)) => call(node, "NodeUnpublishVolume", { volume_id: `csi-${uid}`, target_path: target });

  before(async () => {
    tmp = await mkdtemp(join(tmpdir(), "classcache-csi-test-"));
    kubelet = join(tmp, "kubelet");
    store = join(tmp, "store");
    pods = join(kubelet, "pods");
    await mkdir(pods, { recursive: true });
    if (privateNamespace) {
      // The kubelet's directory as the plugin container has it (shared, Bidirectional) and its peer on the host.
      hostSide = join(tmp, "host-kubelet");
      await mkdir(hostSide);
      execFileSync("mount", ["--bind", kubelet, kubelet]);
      execFileSync("mount", ["--make-shared", kubelet]);
      execFileSync("mount", ["--bind", kubelet, hostSide]);
    }
    const file = async (path: string, text: string) => {
      await mkdir(join(store, path, ".."), { recursive: true });
      await writeFile(join(store, path), text);
    };
    await file("scopes/team-a/refs/app.amd64", "team-a's ref");
    await file("scopes/team-b/refs/secret.amd64", "team-b's ref");
    await file("scopes/_cluster/refs/shared.amd64", "shared ref");
    await file("run/marker", "the agent's socket directory");
    // The real mounter, preparing its read-only binds inside the test's directory.
    const mounter = new ExecMounter({ stageDir: join(tmp, "stage") });
    plugin = new CsiNodePlugin({ nodeName: "node-1", store, kubeletDir: kubelet, mounter, log: createLogger({ format: "json", write: (l) => logs.push(JSON.parse(l) as Record<string, unknown>) }), shutdownTimeoutMs: 1000 });
    stopped = plugin.start(stop.signal);
    await Promise.race([plugin.listening(), stopped]);
    const s = csiServices();
    identity = new s.Identity(`unix://${plugin.csiSocket}`, credentials.createInsecure());
    node = new s.Node(`unix://${plugin.csiSocket}`, credentials.createInsecure());
    registration = new s.Registration(`unix://${plugin.registrationSocket}`, credentials.createInsecure());
  });

  after(async () => {
    for (const c of [identity, node, registration]) c?.close();
    stop.abort();
    await stopped;
    assert.equal(existsSync(plugin.csiSocket), false, "the CSI socket is removed on stop");
    assert.equal(existsSync(plugin.registrationSocket), false, "the registration socket is removed on stop");
    // Unmount whatever is left, newest first, even if a test failed half-way.
    for (let round = 0; round < 5 && mountsUnder(tmp).length > 0; round++) {
      for (const m of mountsUnder(tmp).reverse()) spawnSync("umount", [m.mountPoint]);
    }
    assert.deepEqual(mountsUnder(tmp), [], "nothing stays mounted");
    await rm(tmp, { recursive: true, force: true });
  });

  void it("answers Identity and NodeGetInfo, and UNIMPLEMENTED for what it does not do", async () => {
    assert.deepEqual(await call(identity, "GetPluginInfo"), { name: CSI_DRIVER, vendor_version: pkg.version, manifest: {} });
    assert.deepEqual(await call(identity, "GetPluginCapabilities"), { capabilities: [] });
    assert.deepEqual(await call(identity, "Probe"), { ready: { value: true } });
    const info = await call(node, "NodeGetInfo");
    assert.equal(info.node_id, "node-1");
    assert.equal(String(info.max_volumes_per_node), "0");
    assert.deepEqual(await call(node, "NodeGetCapabilities"), { capabilities: [] });
    await assert.rejects(call(node, "NodeStageVolume", { volume_id: "v", staging_target_path: "/x" }), (err: ServiceError) => err.code === status.UNIMPLEMENTED);
  });

  void it("registers with the kubelet as a CSI plugin at its CSI socket", async () => {
    assert.deepEqual(await call(registration, "GetInfo"), { type: "CSIPlugin", name: CSI_DRIVER, endpoint: join(kubelet, "plugins", CSI_DRIVER, "csi.sock"), supported_versions: ["1.0.0"] });
    assert.equal(plugin.registrationSocket, join(kubelet, "plugins_registry", `${CSI_DRIVER}-reg.sock`));
    assert.deepEqual(await call(registration, "NotifyRegistrationStatus", { plugin_registered: true, error: "" }), {});
    assert.deepEqual(await call(registration, "NotifyRegistrationStatus", { plugin_registered: false, error: "boom" }), {});
    assert.ok(logs.some((l) => l.level === "error" && l.error === "boom"));
  });

  void it("mounts the pod's namespace's view read-only at the target, and only that view", async () => {
    const uid = randomUUID();
    const target = targetOf(uid);
    assert.deepEqual(await publish(publishRequest(uid, "team-a")), {});
    assert.equal(await readFile(join(target, "refs/app.amd64"), "utf8"), "team-a's ref");
    assert.deepEqual(await readdir(join(target, "refs")), ["app.amd64"], "another namespace's refs are not there");
    assert.equal(existsSync(join(target, "refs/secret.amd64")), false);
    await assert.rejects(writeFile(join(target, "refs/new"), "x"), { code: "EROFS" });
    await assert.rejects(appendFile(join(target, "refs/app.amd64"), "x"), { code: "EROFS" });
    const [mount, ...more] = mountsUnder(target);
    assert.equal(more.length, 0);
    for (const flag of ["ro", "nosuid", "nodev"]) assert.ok(mount?.options.includes(flag), `mounted with ${flag}: ${mount?.options.join(",")}`);
    if (hostSide) {
      // What the host (the kubelet, the container runtime, the pod) gets is read-only too.
      const onHost = join(hostSide, target.slice(kubelet.length));
      assert.deepEqual(mountsUnder(onHost).map((m) => m.options.includes("ro")), [true]);
      await assert.rejects(writeFile(join(onHost, "refs/new"), "x"), { code: "EROFS" });
    }
    assert.ok(logs.some((l) => l.msg === "volume published" && l.namespace === "team-a" && l.view === "scope" && l.target === target && l.pod === `app-${uid.slice(0, 5)}`));
    await unpublish(uid);
  });

  void it("publishes idempotently, and unpublishes idempotently: unmounted and the target removed", async () => {
    const uid = randomUUID();
    const target = targetOf(uid);
    await publish(publishRequest(uid, "team-a"));
    await publish(publishRequest(uid, "team-a"));
    await Promise.all([publish(publishRequest(uid, "team-a")), publish(publishRequest(uid, "team-a"))]);
    assert.equal(mountsUnder(target).length, 1, "one mount, however often published");
    assert.deepEqual(await unpublish(uid), {});
    assert.deepEqual(mountsUnder(target), []);
    assert.equal(existsSync(target), false, "the target directory is removed");
    if (hostSide) assert.deepEqual(mountsUnder(join(hostSide, "pods", uid)), [], "the unmount reaches the host");
    assert.deepEqual(await unpublish(uid), {}, "a second unpublish succeeds");
  });

  void it('gives the cluster-wide view for view "cluster" and the agent\'s socket directory for view "build"', async () => {
    const cluster = randomUUID();
    await publish(publishRequest(cluster, "team-a", { view: "cluster" }));
    assert.deepEqual(await readdir(join(targetOf(cluster), "refs")), ["shared.amd64"]);
    const build = randomUUID();
    await publish(publishRequest(build, "team-a", { view: "build" }));
    assert.equal(await readFile(join(targetOf(build), "marker"), "utf8"), "the agent's socket directory");
    await assert.rejects(writeFile(join(targetOf(build), "x"), "x"), { code: "EROFS" });
    await unpublish(cluster);
    await unpublish(build);
  });

  void it("mounts an empty view on a node that holds nothing of the namespace yet", async () => {
    const uid = randomUUID();
    await publish(publishRequest(uid, "newcomer"));
    assert.deepEqual(await readdir(targetOf(uid)), []);
    assert.ok(existsSync(join(store, "scopes/newcomer")), "the view is created");
    await unpublish(uid);
  });

  void it("refuses, with INVALID_ARGUMENT and nothing mounted, every attempt to reach another view or place", async () => {
    const mounted = mountsUnder(tmp).length;
    const attempt = async (uid: string, req: object, pattern: RegExp) => {
      await assert.rejects(publish(req), invalid(pattern));
      assert.equal(mountsUnder(tmp).length, mounted, `nothing mounted for ${JSON.stringify(req)}`);
      assert.equal(existsSync(targetOf(uid)), false, "no target made");
    };
    let uid = randomUUID();
    await attempt(uid, publishRequest(uid, "team-a", { view: "../team-b" }), /view "\.\.\/team-b" is not one of scope/);
    await attempt(uid, publishRequest(uid, "team-a", { view: "/var/lib/classcache" }), /is not one of scope/);
    await attempt(uid, publishRequest(uid, "team-a", { namespace: "team-b" }), /volume attribute "namespace" is not one classcache knows/);
    await attempt(uid, publishRequest(uid, "team-a", { path: "scopes/team-b" }), /volume attribute "path" is not one/);
    // A pod that writes the kubelet's keys itself (a CSIDriver without podInfoOnMount) cannot know its own UID.
    await attempt(uid, publishRequest(uid, "team-b", { "csi.storage.k8s.io/pod.uid": randomUUID() }), /does not name the pod directory/);
    await attempt(uid, publishRequest(uid, ""), /pod\.namespace "" is missing or not a namespace name/);
    await attempt(uid, publishRequest(uid, "Team_B"), /not a namespace name/);
    const { "csi.storage.k8s.io/ephemeral": _, ...persistent } = publishRequest(uid, "team-a").volume_context;
    await attempt(uid, { ...publishRequest(uid, "team-a"), volume_context: persistent }, /only inline ephemeral volumes/);
    await attempt(uid, { ...publishRequest(uid, "team-a"), volume_capability: { block: {}, access_mode: { mode: "SINGLE_NODE_WRITER" } } }, /raw block device/);
    const outside = join(tmp, "elsewhere", uid, "mount");
    await attempt(uid, { ...publishRequest(uid, "team-a"), target_path: outside }, /is not inside a pod's directory under/);
    assert.equal(existsSync(outside), false);
    await attempt(uid, { ...publishRequest(uid, "team-a"), target_path: join(pods, uid) }, /is not inside a pod's directory/);
    await attempt(uid, { ...publishRequest(uid, "team-a"), target_path: `${pods}/${uid}/../../../elsewhere/mount` }, /is not a normal path/);
    await attempt(uid, { ...publishRequest(uid, "team-a"), target_path: "relative/mount" }, /is not an absolute path/);
    // A symbolic link on the way out of the pods directory.
    uid = randomUUID();
    await mkdir(join(tmp, "escape"));
    await mkdir(join(pods, uid), { recursive: true });
    await symlink(join(tmp, "escape"), join(pods, uid, "volumes"));
    await assert.rejects(publish(publishRequest(uid, "team-a")), invalid(/resolves to .*escape.*outside/));
    assert.deepEqual(await readdir(join(tmp, "escape")), [], "nothing made through the link");
    assert.equal(mountsUnder(tmp).length, mounted);
    await assert.rejects(unpublish(uid, join(tmp, "escape")), invalid(/is not inside a pod's directory/));
    assert.ok(logs.some((l) => l.msg === "volume publish refused" && l.reason === "UnknownAttribute"));
  });
});
