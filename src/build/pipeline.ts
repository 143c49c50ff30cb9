/**
 * The archive engine: gather facts, plan, then act — extract the app into the store, train,
 * write the archive atomically, verify it with a real boot, and publish its manifest. A build
 * that fails at any step leaves the store as it was: no manifest, no blob that looks valid.
 */
import { copyFile, mkdir, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, join } from "node:path";
import { performance } from "node:perf_hooks";
import { archiveKey } from "../archive/key.ts";
import type { Launch, Layout, Manifest } from "../archive/manifest.ts";
import { ROOT_PLACEHOLDER } from "../archive/manifest.ts";
import { loadProfile, type AgentProfile } from "../archive/profile.ts";
import { capabilities, probeJdk, resolveJavaHome, type JdkIdentity } from "../jvm/jdk.ts";
import { fillRoot, freePort, launchArgs, type PathView } from "../jvm/launch.ts";
import { runtimeOptions, trainingOptions, type Plan } from "../jvm/options.ts";
import { ClasscacheError, usageError } from "../runtime/errors.ts";
import type { Logger } from "../runtime/log.ts";
import { LocalStore, storeError } from "../store/store.ts";
import { sha256File } from "../util/hash.ts";
import { captureAgentJar, readCaptured } from "./capture.ts";
import { copyClassPath, extractBootJar, inspectAgentJar, inspectClassPath, inspectFatJar, type ExtractedFile } from "./extract.ts";
import { planBuild, type BuildPlan, type TrainingRequest } from "./plan.ts";
import { runTraining } from "./train.ts";
import { verifyBoot } from "./verify.ts";
import { weaveLayout } from "./weave.ts";

export const CLASSCACHE_VERSION = "0.1.0";

export interface BuildRequest {
  app?: string | undefined;
  classPath?: string[] | undefined;
  mainClass?: string | undefined;
  appArgs: string[];
  jvmOptions: string[];
  java?: string | undefined;
  agent?: string | undefined;
  agentConfig?: string | undefined;
  profile?: string | undefined;
  training: TrainingRequest;
  store: string;
  /** Where JVMs see the store (default: its own path). See docs/build.md. */
  root?: string | undefined;
  /** Rebuild even if the store already has this key. */
  force?: boolean;
}

export interface BuildResult {
  manifest: Manifest;
  /** The store already had an archive for this key; nothing was built. */
  reused: boolean;
}

export type Step = "inspect" | "extract" | "capture" | "weave" | "train" | "verify" | "publish";

export interface BuildDeps {
  log: Logger;
  onStep?: (step: Step, detail?: string) => void;
}

export function checkRequest(req: BuildRequest): void {
  if (!req.app === !req.classPath) throw usageError("give either --app <fat.jar> or --classpath <a.jar:b.jar> --main <class>");
  if (req.classPath && !req.mainClass) throw usageError("--classpath needs --main <class>");
  if (req.app && req.mainClass) throw usageError("--main goes with --classpath; a Spring Boot fat jar names its own main class");
  if (req.agent && !req.profile) throw usageError("--agent needs --profile <name|file> to say how the agent runs", "see `classcache profiles` for the built-in ones");
  if (req.profile && !req.agent) throw usageError("--profile needs --agent <jar>");
  if (req.agentConfig && !req.agent) throw usageError("--agent-config needs --agent <jar>");
  if (!(req.training.timeoutMs > 0)) throw usageError("--timeout must be a positive number of seconds");
}

interface Gathered {
  store: LocalStore;
  jdk: JdkIdentity;
  bp: BuildPlan;
  key: string;
  profile: AgentProfile | undefined;
  agentSha: string | undefined;
  appSha: string[];
  isBoot: boolean;
  mainClass: string;
}

async function gather(req: BuildRequest, deps: BuildDeps): Promise<Gathered> {
  deps.onStep?.("inspect");
  const store = await LocalStore.open(req.store);
  const home = await resolveJavaHome(req.java);
  const jdk = await probeJdk(home, req.jvmOptions);
  const app = req.app ? await inspectFatJar(req.app) : await inspectClassPath(req.classPath!, req.mainClass!);
  const appSha = await Promise.all(app.sources.map(async (s) => (await sha256File(s)).sha256));
  let agent: Parameters<typeof planBuild>[0]["agent"] = null;
  let profile: AgentProfile | undefined;
  let agentSha: string | undefined;
  if (req.agent) {
    await inspectAgentJar(req.agent);
    profile = await loadProfile(req.profile!);
    agentSha = (await sha256File(req.agent)).sha256;
    const configSha = req.agentConfig ? (await sha256File(req.agentConfig).catch((e: unknown) => {
      throw new ClasscacheError("input", `cannot read --agent-config ${req.agentConfig}`, { cause: e });
    })).sha256 : null;
    agent = { sha256: agentSha, configSha256: configSha, profile };
  }
  const bp = planBuild({ app: { ...app, digests: appSha }, appArgs: req.appArgs, jvmOptions: req.jvmOptions, jdk, agent, training: req.training });
  return { store, jdk, bp, key: archiveKey(bp.keyInputs), profile, agentSha, appSha, isBoot: app.kind === "boot", mainClass: app.mainClass };
}

/** The port a Boot app will listen on: the user's, or a free one we choose. */
function bootPort(req: BuildRequest): { port: number | undefined; userSet: boolean } {
  for (const a of [...req.appArgs, ...req.jvmOptions]) {
    const m = /^(?:--|-D)server\.port=(\d+)$/.exec(a);
    if (m) return { port: Number(m[1]), userSet: true };
  }
  return { port: undefined, userSet: false };
}

export async function buildArchive(req: BuildRequest, deps: BuildDeps): Promise<BuildResult> {
  checkRequest(req);
  const t0 = performance.now();
  const g = await gather(req, deps);
  const log = deps.log.with({ key: g.key.slice(0, 12) });
  if (!req.force) {
    const existing = await g.store.getManifest(g.key);
    if (existing) {
      log.info("archive already in store");
      return { manifest: existing, reused: true };
    }
  }
  const root = req.root ?? g.store.dir;
  if (root !== g.store.dir && capabilities(g.jdk.feature).relocatableClassPath) log.debug("root differs from store; JDK relocates class paths anyway");
  const view: PathView = { store: g.store.dir, root };
  const work = await g.store.workDir(`build-${g.key.slice(0, 12)}`);
  const logs = join(g.store.dir, "logs", g.key);
  await mkdir(logs, { recursive: true }).catch((e: unknown) => {
    throw storeError(e, g.store.dir, "write logs to");
  });
  const blobsToDiscard: string[] = [];
  try {
    // Extract the app (and the agent) into an immutable layout in the store.
    deps.onStep?.("extract");
    const extracted = req.app ? await extractBootJar(req.app, join(work, "app")) : await copyClassPath(req.classPath!, join(work, "app"));
    const files: ExtractedFile[] = [...extracted.files];
    let agentRel: string | undefined;
    if (req.agent) {
      agentRel = `agent/${basename(req.agent)}`;
      await mkdir(join(work, "app", "agent"), { recursive: true });
      await copyFile(req.agent, join(work, "app", agentRel));
      files.push({ path: agentRel, tempPath: join(work, "app", agentRel) });
    }
    let layout = await g.store.addLayout(files);
    const launchFor = (l: Layout): Launch =>
      g.isBoot
        ? { kind: "jar", jar: `layouts/${l.id}/app.jar` }
        : { kind: "main", classPath: extracted.classPath.map((p) => `layouts/${l.id}/${p}`), mainClass: g.mainClass };
    const planFor = (l: Layout): Plan => ({
      ...g.bp.plan,
      agent: g.profile && agentRel ? { jar: `${ROOT_PLACEHOLDER}/layouts/${l.id}/${agentRel}`, build: g.profile.build, runtime: g.profile.runtime } : null,
    });
    const { port, userSet } = bootPort(req);
    const portFor = async () => (g.isBoot ? (userSet ? port! : await freePort()) : undefined);
    const bootOpts = (p: number | undefined) => (g.isBoot && !userSet && p !== undefined ? [`-Dserver.port=${p}`] : []);
    const notes = [...g.bp.notes];

    // Baked on JDKs that drop transformed classes: capture them, weave them into jar copies.
    if (g.bp.plan.bakedStrategy === "weave") {
      deps.onStep?.("capture");
      const capture = await captureAgentJar(g.jdk.home);
      const capDir = join(work, "captured");
      const p = await portFor();
      const plan = planFor(layout);
      const opts = trainingOptions(plan, join(root, "tmp", basename(work), "capture.discard"), join(root, "tmp", basename(work), "capture-cds.log"), { agent: true })
        .filter((o) => !o.startsWith("-XX:AOTCacheOutput") && !o.startsWith("-XX:ArchiveClassesAtExit"));
      await runTraining({
        java: join(g.jdk.home, "bin", "java"),
        view,
        args: [...req.jvmOptions, ...opts.map((o) => fillRoot(o, root)), `-javaagent:${capture}=${join(root, "tmp", basename(work), "captured")}`, ...bootOpts(p), ...trainingExitOpts(g), ...launchArgs(launchFor(layout), root), ...req.appArgs],
        exit: g.bp.exit,
        training: req.training,
        baseUrl: p ? `http://127.0.0.1:${p}` : undefined,
        output: undefined,
        logFile: join(logs, "capture.log"),
        cdsLogFile: join(work, "capture-cds.log"),
        what: "the capture run (training with the agent on, recording its transformed classes)",
      });
      deps.onStep?.("weave");
      const captured = await readCaptured(capDir);
      const woven = await weaveLayout(layout, join(root, "layouts", layout.id), (s) => g.store.blobPath(s), captured.byJar, join(work, "woven"));
      if (woven.wovenClasses === 0) {
        notes.push("the agent transformed no class that could be woven: the baked archive holds no instrumentation");
      } else {
        notes.push(`wove ${woven.wovenClasses} transformed classes into ${woven.wovenJars.length} jars (${woven.wovenJars.join(", ")})`);
      }
      if (woven.unsigned.length) notes.push(`dropped the signatures of ${woven.unsigned.join(", ")} to weave them`);
      if (captured.unbaked.length) notes.push(`${captured.unbaked.length} transformed classes cannot be baked (e.g. ${captured.unbaked.slice(0, 3).map((u) => `${u.name}: ${u.reason}`).join("; ")})`);
      layout = await g.store.addLayout(woven.files);
    }

    // Train: the app's own JVM writes the archive.
    deps.onStep?.("train");
    const plan = planFor(layout);
    const ext = plan.kind === "aot" ? "aot" : "jsa";
    const outRel = join("tmp", basename(work), `archive.${ext}`);
    const p = await portFor();
    const training = await runTraining({
      java: join(g.jdk.home, "bin", "java"),
      view,
      args: [
        ...req.jvmOptions,
        ...trainingOptions(plan, join(root, outRel), join(root, "tmp", basename(work), "training-cds.log")).map((o) => fillRoot(o, root)),
        ...bootOpts(p),
        ...trainingExitOpts(g),
        ...launchArgs(launchFor(layout), root),
        ...req.appArgs,
      ],
      exit: g.bp.exit,
      training: req.training,
      baseUrl: p ? `http://127.0.0.1:${p}` : undefined,
      output: join(g.store.dir, outRel),
      logFile: join(logs, "training.log"),
      cdsLogFile: join(work, "training-cds.log"),
      what: "the training run",
    });
    for (const w of training.warmups) if (typeof w.status !== "number" || w.status >= 400) notes.push(`warm-up ${w.url} answered ${w.status}`);
    await copyFile(join(work, "training-cds.log"), join(logs, "training-cds.log")).catch(() => {});
    const archive = await g.store.addBlob(join(g.store.dir, outRel));
    blobsToDiscard.push(archive.sha256);

    // Verify: boot with exactly what will be injected, and prove the archive was used.
    deps.onStep?.("verify");
    const archiveRel = `blobs/sha256/${archive.sha256}`;
    const injectedTemplate = runtimeOptions(plan, { archive: `${ROOT_PLACEHOLDER}/${archiveRel}`, shareMemory: false });
    const vp = await portFor();
    const launch = launchFor(layout);
    const verification = await verifyBoot({
      java: join(g.jdk.home, "bin", "java"),
      view,
      jvmOptions: req.jvmOptions,
      injected: injectedTemplate.map((o) => fillRoot(o, root)),
      extra: [...(g.profile ? g.profile.verify.extraJvmOpts : []), ...bootOpts(vp)],
      launch: launchArgs(launch, root),
      appArgs: req.appArgs,
      exit: g.bp.exit === "on-refresh" ? "on-ready" : g.bp.exit,
      training: req.training,
      baseUrl: vp ? `http://127.0.0.1:${vp}` : undefined,
      mainClass: g.mainClass,
      evidence: g.profile?.verify.evidence ? new RegExp(g.profile.verify.evidence) : undefined,
      hasAgent: g.bp.mode !== "none",
      probes: req.training.warmupUrls.length ? req.training.warmupUrls : g.isBoot ? ["/"] : [],
      logFile: join(logs, "verify.log"),
      classLogFile: join(logs, "verify-classes.log"),
    });
    if (g.bp.mode !== "none" && verification.instrumented === false) {
      notes.push(`the agent's instrumentation did not fire in the verification boot (no line matched ${g.profile?.verify.evidence})`);
    }

    // Publish: the manifest makes the archive visible; the first one for a key wins.
    deps.onStep?.("publish");
    const manifest: Manifest = {
      formatVersion: g.bp.keyInputs.format,
      key: g.key,
      mode: g.bp.mode,
      createdAt: new Date().toISOString(),
      inputs: g.bp.keyInputs,
      jvm: {
        home: g.jdk.home,
        feature: g.jdk.feature,
        runtimeVersion: g.jdk.runtimeVersion,
        vendor: g.jdk.vendor,
        arch: g.jdk.arch,
        relocatableClassPath: capabilities(g.jdk.feature).relocatableClassPath,
      },
      app: { kind: g.isBoot ? "boot" : "classpath", source: req.app ?? req.classPath!.join(":"), mainClass: g.mainClass, args: req.appArgs },
      agent: g.profile && g.agentSha ? { name: basename(req.agent!), sha256: g.agentSha, profile: g.profile.name, mode: g.profile.mode } : null,
      layout,
      root,
      archive: { kind: plan.kind, sha256: archive.sha256, size: archive.size, file: archiveRel },
      runtime: { launch, jvmOptions: injectedTemplate, appArgs: req.appArgs },
      verification,
      build: {
        durationMs: Math.round(performance.now() - t0),
        trainingMs: training.durationMs,
        host: hostname(),
        classcacheVersion: CLASSCACHE_VERSION,
        notes,
      },
    };
    const { manifest: inForce, published } = await g.store.publishManifest(manifest);
    // Keep our blob if it is the one in force (ours, or an identical one published first).
    if (published || inForce.archive.sha256 === archive.sha256) blobsToDiscard.length = 0;
    log.info("archive built", { hitRate: verification.hitRate, published });
    return { manifest: inForce, reused: !published };
  } finally {
    for (const b of blobsToDiscard) await g.store.discardBlob(b);
    await rm(work, { recursive: true, force: true });
  }
}

function trainingExitOpts(g: Gathered): string[] {
  return g.bp.exit === "on-refresh" ? ["-Dspring.context.exit=onRefresh"] : [];
}
