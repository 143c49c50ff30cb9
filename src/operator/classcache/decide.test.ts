import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fastJsonPatch, { type Operation } from "fast-json-patch";
import type { Manifest } from "../../archive/manifest.ts";
import type { Holder } from "../../directory/directory.ts";
import { ConditionTypes, FINALIZER, Reasons, resolveSpec, type ClassCache, type ClassCacheSpec, type ClassCacheStatus, type Condition } from "../api/v1.ts";
import { INJECT_LABEL, ORIGINAL_LAUNCH_ANNOTATION } from "../constants.ts";
import type { Container } from "../inject.ts";
import { decide, type Action, type Plan } from "./decide.ts";
import type { ArchiveView, BuildView, Deleting, DirectoryView, Live, Settings } from "./observe.ts";
import { cleanTemplate, injectionFor, type Workload } from "./workload.ts";

const NOW = Date.parse("2026-12-07T18:00:00.250Z");
const AT_NOW = "2026-12-07T18:00:00Z";
const EARLIER = "2026-12-07T17:00:00Z";
const SETTINGS: Settings = { image: "registry.example/classcache:test", allowClusterSharing: false, pollMs: 30_000, readyPollMs: 60_000 };
const KEY = "a".repeat(64);
/** A container started by its image's ENTRYPOINT: no command, args of its own. */
const ENTRYPOINT: Partial<Container> = { args: ["--server.port=8080"], env: [{ name: "JAVA_TOOL_OPTIONS", value: "-Dteam=shop" }] };
const JAVA17 = "/usr/lib/jvm/java-17-openjdk-amd64/bin/java";
const JAVA: Partial<Container> = { command: ["java", "-Xmx256m", "-jar", "/app.jar"], args: ["--server.port=8080"], env: [{ name: "JAVA_TOOL_OPTIONS", value: "-Dteam=shop" }] };

function classCache(spec: Partial<ClassCacheSpec> & Record<string, unknown> = {}, status?: ClassCacheStatus): ClassCache {
  return {
    apiVersion: "classcache.dev/v1",
    kind: "ClassCache",
    metadata: { name: "shop", namespace: "shop", uid: "uid-shop", generation: 2, resourceVersion: "7", finalizers: [FINALIZER] },
    spec: { workloadRef: { name: "shop" }, ...spec },
    ...(status ? { status } : {}),
  };
}

function deployment(container: Partial<Container> = JAVA, labels: Record<string, string> = {}): Workload {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "shop", namespace: "shop", resourceVersion: "100" },
    spec: { template: { metadata: { labels: { app: "shop", ...labels } }, spec: { containers: [{ name: "app", image: "registry.example/shop:1.0", ...container }] } } },
  };
}

const reachable = (d: Partial<Extract<DirectoryView, { reachable: true }>> = {}): DirectoryView => ({ reachable: true, signingKey: "key-now", offers: [], archives: [], ...d });

function bound(arch: string, holders: Holder[], extra: Partial<Extract<ArchiveView, { verified: true }>> = {}): ArchiveView {
  return { arch, verified: true, key: KEY, owner: "uid-shop", holders, summary: { hitRate: 0.97, builtAt: "2026-12-07T12:00:00Z", jvm: "Eclipse Adoptium 25.0.3+9" }, signedByOlderKey: false, ...extra };
}

const holder = (node: string, usage?: { jvms: number; sharedClasses: number; loadedClasses: number }): Holder => ({ node, url: `http://${node}:7071`, zone: "a", ...(usage ? { usage } : {}) });

interface World {
  cc?: ClassCache;
  workload?: Workload | null;
  directory?: DirectoryView;
  build?: Partial<BuildView>;
  podSecurity?: string;
  clusterProblems?: string[];
  settings?: Partial<Settings>;
  lastApplied?: { resourceVersion: string | undefined; body: string };
  patchFailure?: string;
  app?: { differing: number; digest: string | undefined };
}

/** What gather would observe of `world`, with the pure parts (clean template, ref, injection input) computed as it does. */
function observed(world: World = {}): Live {
  const cc = world.cc ?? classCache();
  const settings = { ...SETTINGS, ...world.settings };
  const base = { stage: "live" as const, classCache: cc, settings, clusterProblems: world.clusterProblems ?? [], ...(world.patchFailure !== undefined ? { patchFailure: world.patchFailure } : {}) };
  let resolved: ReturnType<typeof resolveSpec>;
  try {
    resolved = resolveSpec(cc);
  } catch (err) {
    return { ...base, spec: { error: (err as Error).message } };
  }
  const object = world.workload === undefined ? deployment() : world.workload;
  if (!object) return { ...base, spec: resolved };
  const clean = cleanTemplate(object);
  const { ref, input, container } = injectionFor(cc, resolved.spec, clean, settings.image, settings.allowClusterSharing);
  const scope = resolved.spec.sharing === "Cluster" && settings.allowClusterSharing ? "" : "shop";
  const build: BuildView = { name: `classcache-build-${ref.slice(0, 10)}`, job: undefined, failure: undefined, ...world.build };
  return {
    ...base,
    spec: resolved,
    workload: { kind: resolved.spec.workloadRef.kind, object, clean, ref, scope, container, input, podSecurity: world.podSecurity, lastApplied: world.lastApplied, directory: world.directory ?? reachable(), build, app: world.app ?? { differing: 0, digest: undefined } },
  };
}

const condition = (plan: Plan, type: string): Condition | undefined => plan.status?.conditions?.find((c) => c.type === type);
const reasonOf = (plan: Plan, type: string): string | undefined => condition(plan, type)?.reason;
const kinds = (plan: Plan): string[] => plan.actions.map((a) => a.kind);
const action = <K extends Action["kind"]>(plan: Plan, kind: K): Extract<Action, { kind: K }> | undefined => plan.actions.find((a): a is Extract<Action, { kind: K }> => a.kind === kind);
/** Actions that change something in the cluster or the directory (logs do not). */
const writes = (plan: Plan): string[] => kinds(plan).filter((k) => k !== "log");

/** The world after a pass made its writes: the status stored, the template patched, the apply remembered. */
function after(o: Live, plan: Plan): Live {
  const w = o.workload!;
  let object = w.object;
  let lastApplied = w.lastApplied;
  const patch = action(plan, "patchWorkload");
  if (patch) {
    const ops = (patch.template ?? []).filter((op) => (op as Operation).op !== "test") as Operation[];
    object = fastJsonPatch.applyPatch(structuredClone(object), ops, false, false).newDocument;
    // The change's last write takes the patching label away again (act.ts, unmark).
    delete object.metadata.labels?.["classcache.dev/patching"];
    object.metadata.resourceVersion = String(Number(object.metadata.resourceVersion) + 1);
    lastApplied = { resourceVersion: object.metadata.resourceVersion, body: JSON.stringify(patch.config) };
  }
  const cc = { ...o.classCache, status: plan.status! };
  const clean = cleanTemplate(object);
  return { ...o, classCache: cc, workload: { ...w, object, clean, lastApplied } };
}

void describe("decide, for a ClassCache that is not live yet or any more", () => {
  void it("does nothing for a ClassCache that is gone", () => {
    assert.deepEqual(decide({ stage: "gone" }, NOW), { actions: [], result: {} });
  });

  void it("only adds the finalizer to a new ClassCache, keeping the finalizers others put there", () => {
    const cc = classCache();
    cc.metadata.finalizers = ["example.com/other"];
    const plan = decide({ stage: "unfinalized", classCache: cc }, NOW);
    assert.deepEqual(plan.actions, [{ kind: "addFinalizer", finalizers: ["example.com/other", FINALIZER] }]);
    assert.deepEqual(plan.result, {});
  });

  const deleting = (d: Partial<Deleting> = {}): Deleting => ({ stage: "deleting", classCache: classCache(), workload: undefined, ref: "f".repeat(64), refShared: false, directory: { present: true, reachable: true }, ...d });

  void it("on deletion puts a patched workload back, removes the ref's bindings, then drops the finalizer", () => {
    const patched = after(observed(), decide(observed(), NOW)).workload!.object;
    const plan = decide(deleting({ workload: { kind: "Deployment", object: patched } }), NOW);
    assert.deepEqual(writes(plan), ["unpatchWorkload", "unbindRef", "removeFinalizer"]);
    assert.deepEqual(action(plan, "removeFinalizer")?.finalizers, []);
    const restore = action(plan, "unpatchWorkload")!.restore as { op: string; path: string; value?: unknown }[];
    assert.deepEqual(restore[0], { op: "test", path: "/metadata/resourceVersion", value: patched.metadata.resourceVersion });
    assert.deepEqual(restore.find((op) => op.path === "/spec/template/spec")?.value, deployment().spec.template.spec);
    assert.ok(restore.some((op) => op.op === "remove" && op.path.endsWith(ORIGINAL_LAUNCH_ANNOTATION.replace("/", "~1"))));
  });

  void it("on deletion keeps the bindings of a ref another ClassCache shares, and says so when the directory does not answer", () => {
    assert.deepEqual(writes(decide(deleting({ refShared: true }), NOW)), ["removeFinalizer"]);
    const unreachable = decide(deleting({ directory: { present: true, reachable: false } }), NOW);
    assert.deepEqual(kinds(unreachable), ["log", "removeFinalizer", "log"]);
    assert.equal((unreachable.actions[0] as Extract<Action, { kind: "log" }>).message, "directory unreachable; the ref's bindings stay in it");
  });
});

void describe("decide, one row per condition reason", () => {
  void it("InvalidSpec: a spec that cannot be used fails with its error and nothing else is decided", () => {
    const plan = decide(observed({ cc: classCache({ profile: "no-such-profile", agent: { image: "agent:1" } }) }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.Ready), Reasons.InvalidSpec);
    assert.match(condition(plan, ConditionTypes.Ready)!.message, /no-such-profile/);
    assert.equal(plan.status?.phase, "Failed");
    assert.equal(plan.status?.lastError, condition(plan, ConditionTypes.Ready)!.message);
    assert.deepEqual(plan.status?.conditions?.map((c) => c.type), [ConditionTypes.Ready]);
    assert.deepEqual(kinds(plan), ["applyStatus"]);
    assert.deepEqual(plan.result, {});
  });

  void it("WorkloadNotFound: a ClassCache whose workload does not exist yet waits for it, without polling", () => {
    const plan = decide(observed({ workload: null }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.WorkloadNotFound);
    assert.equal(reasonOf(plan, ConditionTypes.Ready), Reasons.WorkloadNotFound);
    assert.equal(reasonOf(plan, ConditionTypes.Degraded), Reasons.AsExpected);
    assert.equal(plan.status?.phase, "Pending");
    assert.equal(plan.status?.ref, undefined);
    assert.deepEqual(kinds(plan), ["applyStatus"]);
    assert.deepEqual(plan.result, {});
  });

  void it("PodSecurityForbidsHostPath: a namespace that forbids hostPath gets no patch and no build, and an earlier patch is taken out", () => {
    const patchedWorkload = after(observed(), decide(observed(), NOW)).workload!.object;
    const plan = decide(observed({ podSecurity: "baseline", workload: patchedWorkload }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.PodSecurityForbidsHostPath);
    assert.match(condition(plan, ConditionTypes.WorkloadPatched)!.message, /enforces Pod Security "baseline".*enforce "privileged"/);
    assert.equal(reasonOf(plan, ConditionTypes.ArchiveAvailable), Reasons.BuildPending);
    assert.deepEqual(kinds(plan), ["unpatchWorkload", "applyStatus"]);
  });

  void it("LaunchUnknown: a container whose command comes from the image waits for its launch, which its build Job's probe records; Ready says why", () => {
    const plan = decide(observed({ workload: deployment(ENTRYPOINT) }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.LaunchUnknown);
    assert.match(condition(plan, ConditionTypes.WorkloadPatched)!.message, /its image's ENTRYPOINT starts the JVM, and build Job classcache-build-[0-9a-f]{10} records that launch.*spec\.launch\.command/);
    assert.equal(reasonOf(plan, ConditionTypes.Ready), Reasons.LaunchUnknown);
    assert.equal(action(plan, "patchWorkload"), undefined);
    const job = action(plan, "createBuildJob")!.job as unknown as { spec: { template: { spec: { initContainers: Container[]; containers: Container[] } } } };
    assert.equal(job.spec.template.spec.initContainers.at(-1)?.name, "classcache-probe");
    assert.ok(job.spec.template.spec.containers[0]!.args?.includes("--launch-file=/classcache-probe/launch.json"));
    assert.equal(plan.status?.launch, undefined);
  });

  void it("Patched: a container started by its ENTRYPOINT is patched with the launch its build's probe recorded, kept in status.launch, and put back without a command", () => {
    const recorded = [JAVA17, "-Xmx256m", "-jar", "/app.jar", "--server.port=8080"];
    const succeeded = { uid: "job-uid", succeeded: true, failed: undefined };
    const first = observed({ workload: deployment(ENTRYPOINT), build: { job: succeeded, probe: { command: recorded } }, directory: reachable({ archives: [bound("amd64", [holder("node-1")])] }) });
    const plan = decide(first, NOW);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.Patched);
    assert.equal(reasonOf(plan, ConditionTypes.Ready), Reasons.Ready);
    assert.deepEqual(plan.status?.launch, { ref: first.workload!.ref, command: recorded });
    const patch = action(plan, "patchWorkload")!;
    const app = (patch.config as unknown as { spec: { template: { spec: { containers: Container[] } } } }).spec.template.spec.containers[0]!;
    assert.deepEqual(app.command, [JAVA17, "-Xmx256m", "@/classcache/launch.args"], "the container's own args stay args");
    const patched = after(first, plan);
    assert.deepEqual(patched.workload!.object.spec.template.spec.containers[0]!.args, ["--server.port=8080"]);
    // The next pass has the launch from the status, not from the Job's pods: it writes nothing.
    const second = { ...patched, workload: { ...patched.workload!, build: { ...patched.workload!.build, probe: undefined } } };
    assert.deepEqual(writes(decide(second, NOW + 60_000)), []);
    // The webhook, which only has the ClassCache, patches a pod the same way.
    const viaStatus = injectionFor(patched.classCache, resolveSpec(patched.classCache).spec, deployment(ENTRYPOINT).spec.template.spec, SETTINGS.image);
    assert.deepEqual(viaStatus.input.launchCommand, recorded.slice(0, 4));
    // Deletion puts the template back as written: no command.
    const restore = action(decide({ stage: "deleting", classCache: patched.classCache, workload: { kind: "Deployment", object: patched.workload!.object }, ref: undefined, refShared: false, directory: { present: false } }, NOW), "unpatchWorkload")!.restore as { path: string; value?: unknown }[];
    const spec = restore.find((op) => op.path === "/spec/template/spec")?.value as { containers: Container[] };
    assert.deepEqual(spec, deployment(ENTRYPOINT).spec.template.spec);
    assert.equal("command" in spec.containers[0]!, false);
  });

  void it("LaunchNotJava: an ENTRYPOINT the probe found running no java is not patched, and the condition says to set spec.launch.command", () => {
    const problem = { patched: false, reason: Reasons.LaunchNotJava, message: "the image's ENTRYPOINT ended without starting java; set spec.launch.command" } as const;
    const plan = decide(observed({ workload: deployment(ENTRYPOINT), build: { job: { uid: "u", succeeded: false, failed: { message: "BackoffLimitExceeded" } }, failure: "error: the image's ENTRYPOINT started no JVM", probe: { problem } } }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.LaunchNotJava);
    assert.equal(reasonOf(plan, ConditionTypes.Ready), Reasons.LaunchNotJava);
    assert.equal(reasonOf(plan, ConditionTypes.ArchiveAvailable), Reasons.BuildFailed);
    assert.equal(action(plan, "patchWorkload"), undefined);
  });

  void it("spec.launch.command wins over the image's ENTRYPOINT: no probe, nothing recorded", () => {
    const plan = decide(observed({ cc: classCache({ launch: { command: ["java", "-jar", "/app.jar"] } }), workload: deployment(ENTRYPOINT), build: { probe: { command: [JAVA17, "-jar", "/other.jar"] } } }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.Patched);
    assert.equal(plan.status?.launch, undefined);
    const job = action(plan, "createBuildJob")!.job as unknown as { spec: { template: { spec: { initContainers: Container[] } } } };
    assert.ok(!job.spec.template.spec.initContainers.some((c) => c.name === "classcache-probe"));
  });

  void it("a new ref forgets the launch recorded for the old one: the template goes back until the new build records it", () => {
    const old = observed({ workload: deployment(ENTRYPOINT), build: { probe: { command: [JAVA17, "-jar", "/app.jar", "--server.port=8080"] } } });
    const patched = after(old, decide(old, NOW));
    const cc = classCache({ training: { timeoutSeconds: 600 } }, patched.classCache.status);
    const plan = decide(observed({ cc, workload: patched.workload!.object }), NOW);
    assert.notEqual(plan.status?.ref, old.workload!.ref);
    assert.equal(plan.status?.launch, undefined);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.LaunchUnknown);
    assert.ok(kinds(plan).includes("unpatchWorkload"));
  });

  void it("InjectLabelMissing: Webhook mode without the label on the pod template says which label to add", () => {
    const plan = decide(observed({ cc: classCache({ patchMode: "Webhook" }) }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.InjectLabelMissing);
    assert.match(condition(plan, ConditionTypes.WorkloadPatched)!.message, new RegExp(`${INJECT_LABEL}: shop`));
    assert.equal(reasonOf(plan, ConditionTypes.Ready), Reasons.InjectLabelMissing);
    assert.equal(action(plan, "patchWorkload"), undefined);
  });

  void it("InjectedByWebhook: Webhook mode with the label leaves the template as written, taking out an Owned-mode patch", () => {
    const patchedWorkload = after(observed(), decide(observed(), NOW)).workload!.object;
    patchedWorkload.spec.template.metadata!.labels![INJECT_LABEL] = "shop";
    const plan = decide(observed({ cc: classCache({ patchMode: "Webhook" }), workload: patchedWorkload }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.InjectedByWebhook);
    assert.equal(condition(plan, ConditionTypes.WorkloadPatched)?.status, "True");
    assert.deepEqual(writes(plan).filter((k) => k.endsWith("Workload")), ["unpatchWorkload"]);
  });

  void it("Patched: Owned mode writes the template whole while its env is not as patched, then applies our fields", () => {
    const o = observed();
    const plan = decide(o, NOW);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.Patched);
    const patch = action(plan, "patchWorkload")!;
    assert.deepEqual(patch.workload, { kind: "Deployment", name: "shop", namespace: "shop" });
    assert.deepEqual((patch.template as { op: string; value?: unknown }[])[0], { op: "test", path: "/metadata/resourceVersion", value: "100" });
    const config = patch.config as unknown as { metadata: { annotations: Record<string, string> }; spec: { template: { metadata: { annotations: Record<string, string> }; spec: { containers: Container[]; initContainers: Container[] } } } };
    assert.deepEqual(config.spec.template.metadata.annotations, { "classcache.dev/ref": o.workload!.ref });
    assert.deepEqual(config.spec.template.spec.containers[0]!.command, ["java", "-Xmx256m", "@/classcache/launch.args"]);
    assert.deepEqual(config.spec.template.spec.initContainers.map((c) => c.name), ["classcache-init", "classcache-check"]);
    assert.ok(config.metadata.annotations[ORIGINAL_LAUNCH_ANNOTATION]);
    // The build is created before the workload is patched; the status comes last.
    assert.deepEqual(kinds(plan), ["createBuildJob", "recordEvent", "patchWorkload", "applyStatus"]);
  });

  void it("PatchFailed: a template write that failed in this pass is in the status, and nothing is written again", () => {
    const plan = decide(observed({ patchFailure: "the object has been modified" }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.WorkloadPatched), Reasons.PatchFailed);
    assert.equal(condition(plan, ConditionTypes.WorkloadPatched)!.message, "patching Deployment shop failed: the object has been modified");
    assert.equal(reasonOf(plan, ConditionTypes.Ready), Reasons.PatchFailed);
    assert.equal(action(plan, "patchWorkload"), undefined);
  });

  void it("DirectoryUnavailable: without a directory the archive is Unknown, the ClassCache Degraded, and no build starts", () => {
    const plan = decide(observed({ directory: { reachable: false } }), NOW);
    assert.equal(condition(plan, ConditionTypes.ArchiveAvailable)?.status, "Unknown");
    assert.equal(reasonOf(plan, ConditionTypes.ArchiveAvailable), Reasons.DirectoryUnavailable);
    assert.equal(reasonOf(plan, ConditionTypes.Degraded), Reasons.DirectoryUnavailable);
    assert.equal(condition(plan, ConditionTypes.WorkloadPatched)?.status, "True", "pods still get the patch");
    assert.equal(action(plan, "createBuildJob"), undefined);
    assert.equal(plan.status?.phase, "Pending");
    assert.deepEqual(plan.result, { requeueAfter: 30_000 });
  });

  void it("DirectoryNotUpdated: what could not be applied of the cluster's parts makes the ClassCache Degraded", () => {
    const plan = decide(observed({ clusterProblems: ["the directory's storage cannot be changed in place", "and more"] }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.Degraded), Reasons.DirectoryNotUpdated);
    assert.equal(condition(plan, ConditionTypes.Degraded)?.message, "the directory's storage cannot be changed in place; and more");
  });

  void it("BuildPending: nothing is bound and the operator holds no key to grant a build with", () => {
    const plan = decide(observed({ directory: reachable({ signingKey: undefined }) }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.ArchiveAvailable), Reasons.BuildPending);
    assert.equal(reasonOf(plan, ConditionTypes.Ready), Reasons.BuildPending);
    assert.equal(action(plan, "createBuildJob"), undefined);
    assert.equal(plan.status?.phase, "Pending");
  });

  void it("Building: nothing is bound, so one build Job is created for the ref with its grant, and an Event says so", () => {
    const o = observed();
    const plan = decide(o, NOW);
    assert.equal(reasonOf(plan, ConditionTypes.ArchiveAvailable), Reasons.Building);
    const create = action(plan, "createBuildJob")!;
    assert.equal(create.job.metadata.name, o.workload!.build.name);
    assert.deepEqual(create.grant, { namespace: "shop", scope: "shop", ref: o.workload!.ref, classCache: "shop/shop", owner: "uid-shop", deadlineSeconds: create.grant.deadlineSeconds });
    assert.equal(action(plan, "recordEvent")?.event.reason, "BuildStarted");
    assert.equal(plan.status?.phase, "Building");
  });

  void it("Building: a running build Job keeps its grant's Secret and is reported running", () => {
    const plan = decide(observed({ build: { job: { uid: "job-uid", succeeded: false, failed: undefined } } }), NOW);
    assert.match(condition(plan, ConditionTypes.ArchiveAvailable)!.message, /is running$/);
    assert.equal(action(plan, "ensureGrantSecret")?.grant.ref, observed().workload!.ref);
    assert.equal(action(plan, "createBuildJob"), undefined);
  });

  void it("BuildFailed: a failed build is reported in its own words and not retried", () => {
    const plan = decide(observed({ build: { job: { uid: "job-uid", succeeded: false, failed: { message: "BackoffLimitExceeded" } }, failure: "error: training failed" } }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.ArchiveAvailable), Reasons.BuildFailed);
    assert.match(condition(plan, ConditionTypes.ArchiveAvailable)!.message, /failed: error: training failed; it is not retried/);
    assert.equal(plan.status?.phase, "Failed");
    assert.deepEqual(writes(plan), ["patchWorkload", "applyStatus"]);
  });

  void it("BuildFailed: the build's words, once in the status, are kept without reading its pods again", () => {
    const first = observed({ build: { job: { uid: "job-uid", succeeded: false, failed: { message: "BackoffLimitExceeded" } }, failure: "error: training failed" } });
    const said = decide(first, NOW);
    const again = decide({ ...after(first, said), workload: { ...after(first, said).workload!, build: { ...first.workload!.build, failure: undefined } } }, NOW + 1000);
    assert.equal(condition(again, ConditionTypes.ArchiveAvailable)?.message, condition(said, ConditionTypes.ArchiveAvailable)?.message);
  });

  void it("OfferRejected: a refused offer is removed, logged and evented, and the reason is the condition's", () => {
    const verdict = { ok: false as const, reason: "the offer's grant is for scope \"rival\", not \"shop\"" };
    const plan = decide(observed({ directory: reachable({ offers: [{ arch: "amd64", verdict }] }) }), NOW);
    assert.deepEqual(kinds(plan).slice(0, 3), ["takeOffer", "log", "recordEvent"]);
    assert.equal(action(plan, "recordEvent")?.event.reason, "OfferRefused");
    assert.equal(reasonOf(plan, ConditionTypes.ArchiveAvailable), Reasons.OfferRejected);
    assert.match(condition(plan, ConditionTypes.ArchiveAvailable)!.message, /was refused and nothing was published: the offer's grant is for scope "rival"/);
    assert.equal(action(plan, "createBuildJob"), undefined, "a refused build is not simply started again");
    assert.equal(plan.status?.phase, "Failed");
  });

  void it("OfferRejected: a build Job that succeeded without anything bound says so", () => {
    const plan = decide(observed({ build: { job: { uid: "job-uid", succeeded: true, failed: undefined } } }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.ArchiveAvailable), Reasons.OfferRejected);
    assert.match(condition(plan, ConditionTypes.ArchiveAvailable)!.message, /succeeded, but no build it offered was published/);
  });

  void it("an accepted offer is taken and evented, and the pass looks again before it writes a status", () => {
    const verdict = { ok: true as const, manifest: { key: KEY } as Manifest };
    const plan = decide(observed({ directory: reachable({ offers: [{ arch: "amd64", verdict }] }) }), NOW);
    assert.deepEqual(kinds(plan), ["takeOffer", "recordEvent"]);
    assert.equal(action(plan, "recordEvent")?.event.reason, "ArchivePublished");
    assert.equal(plan.observeAgain, true);
    assert.equal(plan.status, undefined);
  });

  void it("VerificationFailed: a binding not signed by the cluster's key is reported, and no build replaces it", () => {
    const plan = decide(observed({ directory: reachable({ archives: [{ arch: "amd64", verified: false, problem: "signature does not verify" }] }) }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.ArchiveAvailable), Reasons.VerificationFailed);
    assert.match(condition(plan, ConditionTypes.ArchiveAvailable)!.message, /for amd64 is not signed by the cluster's key: signature does not verify/);
    assert.deepEqual(plan.status?.archives, []);
    assert.equal(action(plan, "createBuildJob"), undefined);
    assert.equal(plan.status?.phase, "Failed");
  });

  void it("ArchiveVerified: a verified binding makes the ClassCache Ready, with its key, holders and hit rate", () => {
    const plan = decide(observed({ directory: reachable({ archives: [bound("amd64", [holder("node-1"), { ...holder("node-2"), complete: false }])] }) }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.ArchiveAvailable), Reasons.ArchiveVerified);
    assert.equal(condition(plan, ConditionTypes.Ready)?.status, "True");
    assert.equal(plan.status?.phase, "Ready");
    assert.equal(plan.status?.archiveKey, KEY);
    assert.equal(plan.status?.readyPeers, 1, "only nodes that hold it whole");
    assert.equal(plan.status?.hitRate, "97.0%");
    assert.equal(plan.status?.workloadHitRate, undefined);
    assert.deepEqual(plan.status?.archives, [{ arch: "amd64", key: KEY, holders: 1, hitRate: 0.97, builtAt: "2026-12-07T12:00:00Z", jvm: "Eclipse Adoptium 25.0.3+9" }]);
    assert.equal(action(plan, "createBuildJob"), undefined);
    assert.deepEqual(plan.result, { requeueAfter: 60_000 });
  });

  void it("Owned: the template carries the archive's key once it is bound, so the workload rolls onto it; before, only the ref", () => {
    const templateAnnotations = (plan: Plan): Record<string, string> | undefined =>
      ((action(plan, "patchWorkload")?.config as { spec?: { template?: { metadata?: { annotations?: Record<string, string> } } } } | undefined)?.spec?.template?.metadata?.annotations);
    const before = decide(observed(), NOW);
    assert.equal(templateAnnotations(before)?.["classcache.dev/ref"], observed().workload!.ref);
    assert.equal(templateAnnotations(before)?.["classcache.dev/archive"], undefined);
    const available = decide(observed({ directory: reachable({ archives: [bound("amd64", [holder("node-1")])] }) }), NOW);
    assert.equal(templateAnnotations(available)?.["classcache.dev/archive"], KEY);
  });

  void it("ArchiveVerified: a binding signed by an older key is signed again, with an Event if anything was", () => {
    const plan = decide(observed({ directory: reachable({ archives: [bound("amd64", [holder("node-1")], { signedByOlderKey: true })] }) }), NOW);
    const again = action(plan, "signAgain")!;
    assert.equal(again.arch, "amd64");
    assert.match(again.event.note, /now signed with the current key key-now/);
  });

  void it("LowHitRate: running JVMs that load few classes from the archive make the ClassCache Degraded", () => {
    const plan = decide(observed({ directory: reachable({ archives: [bound("amd64", [holder("node-1", { jvms: 2, sharedClasses: 500, loadedClasses: 1000 })])] }) }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.Degraded), Reasons.LowHitRate);
    assert.equal(plan.status?.workloadHitRate, 0.5);
    assert.equal(plan.status?.hitRate, "50.0%");
    assert.equal(condition(plan, ConditionTypes.Ready)?.status, "True", "still ready: the archive is used, only less than it could be");
  });

  void it("ClusterSharingNotAllowed: a ClassCache asking for cluster sharing the admin did not allow keeps its namespace's scope", () => {
    const o = observed({ cc: classCache({ sharing: "Cluster" }) });
    const plan = decide(o, NOW);
    assert.equal(reasonOf(plan, ConditionTypes.Degraded), Reasons.ClusterSharingNotAllowed);
    assert.equal(action(plan, "createBuildJob")?.grant.scope, "shop");
  });

  void it("IgnoredFields: fields cluster-classcache had and classcache ignores make the ClassCache Degraded, saying why", () => {
    const plan = decide(observed({ cc: classCache({ primerImage: "classcache-primer:v0.9-universal" }) }), NOW);
    assert.equal(reasonOf(plan, ConditionTypes.Degraded), Reasons.IgnoredFields);
    assert.match(condition(plan, ConditionTypes.Degraded)!.message, /spec\.primerImage is ignored/);
  });
});

void describe("decide, pass after pass", () => {
  void it("AppChanged: pods whose jar checks found another app make the new content an input of the ref, and say so", () => {
    const digest = "7".repeat(64);
    const world = { directory: reachable({ archives: [bound("amd64", [holder("node-1")])] }), app: { differing: 2, digest } };
    const plan = decide(observed(world), NOW);
    assert.equal(plan.status?.appDigest, digest);
    const degraded = condition(plan, ConditionTypes.Degraded)!;
    assert.deepEqual([degraded.status, degraded.reason], ["True", "AppChanged"]);
    assert.match(degraded.message, /2 pod\(s\) run an app jar \(sha256 777777777777\) other than the one their archive was built from/);
    // Next pass: the ClassCache carries the digest, so its ref is another (and a build follows for it).
    const next = observed({ ...world, cc: { ...classCache(), status: plan.status } });
    assert.notEqual(next.workload!.ref, observed(world).workload!.ref);
    assert.equal(decide(next, NOW).status?.appDigest, digest, "kept while nothing newer is reported");
  });

  void it("a second pass over an unchanged world produces no write actions", () => {
    for (const world of [
      { directory: reachable({ archives: [bound("amd64", [holder("node-1", { jvms: 1, sharedClasses: 990, loadedClasses: 1000 })])] }) },
      { cc: classCache({ patchMode: "Webhook" }), directory: reachable({ archives: [bound("amd64", [holder("node-1")])] }) },
      { directory: { reachable: false } as const },
    ]) {
      const first = observed(world);
      const plan = decide(first, NOW);
      assert.ok(writes(plan).length > 0, "the first pass writes");
      const second = decide(after(first, plan), NOW + 60_000);
      assert.deepEqual(writes(second), [], JSON.stringify(world));
      assert.deepEqual(second.status, plan.status);
    }
  });

  void it("leaves what it was given as it was", () => {
    const o = observed({ directory: reachable({ archives: [bound("amd64", [holder("node-1")], { signedByOlderKey: true })] }) });
    const before = structuredClone(o);
    decide(o, NOW);
    assert.deepEqual(o, before);
  });

  void it("a workload changed by someone else since the last apply is applied again", () => {
    const first = observed({ directory: reachable({ archives: [bound("amd64", [holder("node-1")])] }) });
    const next = after(first, decide(first, NOW));
    next.workload!.object.metadata.resourceVersion = "999";
    assert.deepEqual(writes(decide(next, NOW + 60_000)), ["patchWorkload"]);
  });

  void it("keeps a condition's transition time while its status stays, and takes the pass's time when it changes", () => {
    const previous: Condition[] = [
      { type: ConditionTypes.Ready, status: "False", reason: Reasons.BuildPending, message: "", lastTransitionTime: EARLIER },
      { type: ConditionTypes.ArchiveAvailable, status: "False", reason: Reasons.BuildPending, message: "", lastTransitionTime: EARLIER },
      { type: ConditionTypes.WorkloadPatched, status: "False", reason: Reasons.LaunchUnknown, message: "", lastTransitionTime: EARLIER },
      { type: ConditionTypes.Degraded, status: "False", reason: Reasons.AsExpected, message: "", lastTransitionTime: EARLIER },
    ];
    const plan = decide(observed({ cc: classCache({}, { conditions: previous }) }), NOW);
    const times = Object.fromEntries(plan.status!.conditions!.map((c) => [c.type, [c.reason, c.lastTransitionTime]]));
    assert.deepEqual(times, {
      Ready: [Reasons.Building, EARLIER],
      ArchiveAvailable: [Reasons.Building, EARLIER],
      WorkloadPatched: [Reasons.Patched, AT_NOW],
      Degraded: [Reasons.AsExpected, EARLIER],
    });
    assert.ok(plan.status!.conditions!.every((c) => c.observedGeneration === 2));
  });
});
