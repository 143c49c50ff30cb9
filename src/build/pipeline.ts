/**
 * The archive engine: gather facts, plan, then act — extract the app into the store, train,
 * write the archive atomically, verify it with a real boot, and publish its manifest. A build
 * that fails at any step leaves the store as it was: no manifest, no blob that looks valid.
 */
import { copyFile, mkdir, readFile, rm } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, join } from "node:path";
import { performance } from "node:perf_hooks";
import { archiveKey, SCOPE_PATTERN } from "../archive/key.ts";
import type { Launch, Layout, Manifest, Verification } from "../archive/manifest.ts";
import { ROOT_PLACEHOLDER } from "../archive/manifest.ts";
import { loadProfile, type AgentProfile } from "../archive/profile.ts";
import { capabilities, probeJdk, resolveJavaHome, type JdkIdentity } from "../jvm/jdk.ts";
import { fillRoot, freePort, launchArgs, type PathView } from "../jvm/launch.ts";
import { runtimeOptions, trainingOptions, type Plan } from "../jvm/options.ts";
import { ClasscacheError, usageError } from "../runtime/errors.ts";
import type { Logger } from "../runtime/log.ts";
import { asStoreError, LocalStore, storeError, type Journal } from "../store/store.ts";
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
  /** The namespace the archive is for; "" (the default) for cluster-wide. Part of the key. */
  scope?: string | undefined;
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
  if (req.scope !== undefined && !SCOPE_PATTERN.test(req.scope)) throw usageError(`--scope ${JSON.stringify(req.scope)} is not a namespace name`, "a scope is \"\" (cluster-wide) or a Kubernetes namespace name");
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
  const bp = planBuild({ app: { ...app, digests: appSha }, appArgs: req.appArgs, jvmOptions: req.jvmOptions, jdk, agent, training: req.training, scope: req.scope ?? "" });
  return { store, jdk, bp, key: archiveKey(bp.keyInputs), profile, agentSha, appSha, isBoot: app.kind === "boot", mainClass: app.mainClass };
}

/** A build whose inputs are gathered and key is known, ready to run. */
export interface PreparedBuild {
  key: string;
  /** Notes the plan already knows (e.g. the testing flag of baked mode on JDK 17). */
  notes: string[];
  /** Runs the build and publishes its manifest in the local store. */
  run(): Promise<BuildResult>;
}

/** Gathers the facts and computes the key without building (cheap: one short JVM run). */
export async function prepareBuild(req: BuildRequest, deps: BuildDeps): Promise<PreparedBuild> {
  checkRequest(req);
  const t0 = performance.now();
  const g = await gather(req, deps);
  return { key: g.key, notes: g.bp.notes, run: () => act(req, deps, g, t0) };
}

export async function buildArchive(req: BuildRequest, deps: BuildDeps): Promise<BuildResult> {
  const prepared = await prepareBuild(req, deps);
  if (!req.force) {
    const existing = await (await LocalStore.open(req.store)).getManifest(prepared.key);
    if (existing) return { manifest: existing, reused: true };
  }
  return prepared.run();
}

async function act(req: BuildRequest, deps: BuildDeps, g: Gathered, t0: number): Promise<BuildResult> {
  const run = await BuildRun.create(req, deps, g);
  return g.store.withBuildLock(
    async () => {
      try {
        const manifest = await run.act(t0);
        const { manifest: inForce, published } = await g.store.publishManifest(manifest, { replace: req.force ?? false });
        // Whatever no manifest references (ours lost a race for the key) is taken back.
        if (!published) await g.store.rollback(run.journal);
        deps.log.info("archive built", { key: g.key, hitRate: manifest.verification.hitRate, published });
        return { manifest: inForce, reused: !published };
      } catch (err) {
        await g.store.rollback(run.journal).catch(() => {});
        throw asStoreError(err, g.store.dir);
      } finally {
        await rm(run.work, { recursive: true, force: true });
      }
    },
    () => deps.log.warn("waiting for another build in this store to finish"),
  );
}

/** One build's acting phase: the state its steps share, and the steps in order. */
class BuildRun {
  readonly journal: Journal = { blobs: [], layouts: [] };
  readonly notes: string[];
  private baked: Manifest["baked"];
  private agentRel: string | undefined;
  private classPath: string[] = [];
  private readonly java: string;
  private readonly userPort: number | undefined;
  private readonly req: BuildRequest;
  private readonly deps: BuildDeps;
  private readonly g: Gathered;
  private readonly root: string;
  readonly work: string;
  private readonly logs: string;

  private constructor(req: BuildRequest, deps: BuildDeps, g: Gathered, work: string, logs: string) {
    this.req = req;
    this.deps = deps;
    this.g = g;
    this.root = req.root ?? g.store.dir;
    this.work = work;
    this.logs = logs;
    this.notes = [...g.bp.notes];
    this.java = join(g.jdk.home, "bin", "java");
    this.userPort = userServerPort(req);
    const strategy = g.bp.plan.bakedStrategy;
    this.baked = strategy ? { strategy, wovenClasses: null, wovenJars: [], unbaked: [], unbakedCount: 0 } : null;
  }

  static async create(req: BuildRequest, deps: BuildDeps, g: Gathered): Promise<BuildRun> {
    const logs = join(g.store.dir, "logs", g.key);
    await mkdir(logs, { recursive: true }).catch((e: unknown) => {
      throw storeError(e, g.store.dir, "write logs to");
    });
    return new BuildRun(req, deps, g, await g.store.workDir(`build-${g.key.slice(0, 12)}`), logs);
  }

  private get view(): PathView {
    return { store: this.g.store.dir, root: this.root };
  }

  /** A path under the work directory as the JVM sees it. */
  private jvmWork(name: string): string {
    return join(this.root, "tmp", basename(this.work), name);
  }

  async act(t0: number): Promise<Manifest> {
    this.deps.onStep?.("extract");
    let layout = await this.extract();
    if (this.g.bp.plan.bakedStrategy === "weave") layout = await this.captureAndWeave(layout);
    this.deps.onStep?.("train");
    const { archive, trainingMs } = await this.train(layout);
    this.deps.onStep?.("verify");
    const plan = this.planFor(layout);
    const archiveRel = `blobs/sha256/${archive.sha256}`;
    const injected = runtimeOptions(plan, { archive: `${ROOT_PLACEHOLDER}/${archiveRel}`, shareMemory: false });
    const verification = await this.verify(layout, injected);
    this.deps.onStep?.("publish");
    const { g, req } = this;
    return {
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
      root: this.root,
      archive: { kind: plan.kind, sha256: archive.sha256, size: archive.size, file: archiveRel },
      runtime: { launch: this.launchFor(layout), jvmOptions: injected, appArgs: req.appArgs },
      baked: this.baked,
      verification,
      build: { durationMs: Math.round(performance.now() - t0), trainingMs, host: hostname(), classcacheVersion: CLASSCACHE_VERSION, notes: this.notes },
    };
  }

  /** The app (and the agent) as an immutable layout in the store. */
  private async extract(): Promise<Layout> {
    const dir = join(this.work, "app");
    const extracted = this.req.app ? await extractBootJar(this.req.app, dir) : await copyClassPath(this.req.classPath!, dir);
    this.classPath = extracted.classPath;
    const files: ExtractedFile[] = [...extracted.files];
    if (this.req.agent) {
      this.agentRel = `agent/${basename(this.req.agent)}`;
      await mkdir(join(dir, "agent"), { recursive: true });
      await copyFile(this.req.agent, join(dir, this.agentRel));
      files.push({ path: this.agentRel, tempPath: join(dir, this.agentRel) });
    }
    return this.g.store.addLayout(files, this.journal);
  }

  private launchFor(l: Layout): Launch {
    return this.g.isBoot
      ? { kind: "jar", jar: `layouts/${l.id}/app.jar` }
      : { kind: "main", classPath: this.classPath.map((p) => `layouts/${l.id}/${p}`), mainClass: this.g.mainClass };
  }

  private planFor(l: Layout): Plan {
    const { profile } = this.g;
    const agent = profile && this.agentRel ? { jar: `${ROOT_PLACEHOLDER}/layouts/${l.id}/${this.agentRel}`, build: profile.build, runtime: profile.runtime } : null;
    return { ...this.g.bp.plan, agent };
  }

  private async port(): Promise<number | undefined> {
    if (!this.g.isBoot) return undefined;
    return this.userPort ?? (await freePort());
  }

  /**
   * A JVM command line: the workload's options, phase options, a port for a Boot app we chose
   * ourselves, then the launch and the app's arguments.
   */
  private args(layout: Layout, phase: string[], port: number | undefined, training: boolean): string[] {
    const errorFile = `-XX:ErrorFile=${join(this.root, "logs", this.g.key, "hs_err_pid%p.log")}`;
    const portOpt = port !== undefined && this.userPort === undefined ? [`-Dserver.port=${port}`] : [];
    const exitOpt = training && this.g.bp.exit === "on-refresh" ? ["-Dspring.context.exit=onRefresh"] : [];
    return [
      ...this.req.jvmOptions,
      errorFile,
      ...phase.map((o) => fillRoot(o, this.root)),
      ...portOpt,
      ...exitOpt,
      ...launchArgs(this.launchFor(layout), this.root),
      ...this.req.appArgs,
    ];
  }

  /** Baked on JDKs that drop transformed classes: capture them in a run with the agent on, and weave them into copies of their jars. */
  private async captureAndWeave(layout: Layout): Promise<Layout> {
    this.deps.onStep?.("capture");
    const capture = await captureAgentJar(this.g.jdk.home);
    const port = await this.port();
    const opts = trainingOptions(this.planFor(layout), "", this.jvmWork("capture-cds.log"), { agent: true }).filter(
      (o) => !o.startsWith("-XX:AOTCacheOutput") && !o.startsWith("-XX:ArchiveClassesAtExit"),
    );
    await runTraining({
      java: this.java,
      view: this.view,
      args: this.args(layout, [...opts, `-javaagent:${capture}=${this.jvmWork("captured")}`], port, true),
      exit: this.g.bp.exit,
      training: this.req.training,
      baseUrl: port ? `http://127.0.0.1:${port}` : undefined,
      output: undefined,
      logFile: join(this.logs, "capture.log"),
      cdsLogFile: join(this.work, "capture-cds.log"),
      what: "the capture run (training with the agent on, recording its transformed classes)",
    });
    this.deps.onStep?.("weave");
    const captured = await readCaptured(join(this.work, "captured"));
    const woven = await weaveLayout(layout, join(this.root, "layouts", layout.id), (s) => this.g.store.blobPath(s), captured.byJar, join(this.work, "woven"));
    if (woven.wovenClasses === 0) this.notes.push("the agent transformed no class that could be woven: the baked archive holds no instrumentation");
    else this.notes.push(`wove ${woven.wovenClasses} transformed classes into ${woven.wovenJars.join(", ")}`);
    if (woven.unsigned.length) this.notes.push(`dropped the signatures of ${woven.unsigned.join(", ")} to weave them`);
    if (captured.unbaked.length) this.notes.push(`${captured.unbaked.length} transformed classes cannot be baked; their instrumentation is lost with the agent off (see baked.unbaked)`);
    this.baked = { strategy: "weave", wovenClasses: woven.wovenClasses, wovenJars: woven.wovenJars, unbaked: captured.unbaked.slice(0, 50), unbakedCount: captured.unbaked.length };
    return this.g.store.addLayout(woven.files, this.journal);
  }

  /** The training run: the app's own JVM writes the archive, which then becomes a blob. */
  private async train(layout: Layout): Promise<{ archive: { sha256: string; size: number }; trainingMs: number }> {
    const plan = this.planFor(layout);
    const out = `archive.${plan.kind === "aot" ? "aot" : "jsa"}`;
    const port = await this.port();
    const training = await runTraining({
      java: this.java,
      view: this.view,
      args: this.args(layout, trainingOptions(plan, this.jvmWork(out), this.jvmWork("training-cds.log")), port, true),
      exit: this.g.bp.exit,
      training: this.req.training,
      baseUrl: port ? `http://127.0.0.1:${port}` : undefined,
      output: join(this.work, out),
      logFile: join(this.logs, "training.log"),
      cdsLogFile: join(this.work, "training-cds.log"),
      what: "the training run",
    });
    for (const w of training.warmups) if (typeof w.status !== "number" || w.status >= 400) this.notes.push(`warm-up ${w.url} answered ${w.status}`);
    await copyFile(join(this.work, "training-cds.log"), join(this.logs, "training-cds.log")).catch(() => {});
    const archive = await this.g.store.addBlob(join(this.work, out));
    if (archive.created) this.journal.blobs.push(archive.sha256);
    return { archive, trainingMs: training.durationMs };
  }

  /** The verification boot, with exactly the options that will be injected. */
  private async verify(layout: Layout, injected: string[]): Promise<Verification> {
    const { g, req } = this;
    const port = await this.port();
    const verification = await verifyBoot({
      kind: g.bp.plan.kind,
      java: this.java,
      view: this.view,
      injected: injected.map((o) => fillRoot(o, this.root)),
      args: this.args(layout, g.profile ? g.profile.verify.extraJvmOpts : [], port, false),
      exit: g.bp.exit === "on-refresh" ? "on-ready" : g.bp.exit,
      training: req.training,
      baseUrl: port ? `http://127.0.0.1:${port}` : undefined,
      mainClass: g.mainClass,
      evidence: g.profile?.verify.evidence ? new RegExp(g.profile.verify.evidence) : undefined,
      hasAgent: g.bp.mode !== "none",
      probes: req.training.warmupUrls.length ? req.training.warmupUrls : g.isBoot ? ["/"] : [],
      logFile: join(this.logs, "verify.log"),
      classLogFile: join(this.logs, "verify-classes.log"),
    });
    if (g.bp.mode !== "none" && verification.instrumented === false) {
      // Fail closed: an archive whose agent does not instrument is not what was asked for.
      // Where the agent ran live: training, and (hybrid) the verification boot.
      const log = join(this.logs, "verify.log");
      const said = await Promise.all(["training.log", "verify.log"].map((f) => readFile(join(this.logs, f), "utf8").catch(() => "")));
      const own = agentComplaints(said.join("\n"));
      throw new ClasscacheError("verification", `the agent's instrumentation did not fire in the verification boot: no line of the JVM's output matched the profile's evidence /${g.profile?.verify.evidence}/, so nothing was published`, {
        details: own.length ? ["what the JVM and the agent said:", ...own].join("\n") : `the agent wrote no error; the verification boot's whole output is in ${log}, the training run's next to it`,
        hint: "check the agent's settings in its profile (boot class path, its own configuration or license) and that the training requests reach instrumented code; the profile's evidence is what proves the agent works",
      });
    }
    if (g.bp.mode !== "none" && verification.instrumented === null) {
      this.notes.push("the profile names no evidence, so the agent's instrumentation is not proven (instrumented: null in the manifest)");
    }
    return verification;
  }
}

/**
 * The lines of a JVM's output that say something went wrong — an agent's own error, a stack
 * trace's first line, its cause — deduplicated, the first 12, each cut at 300 characters.
 */
export function agentComplaints(output: string): string[] {
  const out: string[] = [];
  for (const line of output.split("\n")) {
    const l = line.trim();
    if (!/\b(ERROR|FATAL|SEVERE)\b|^Caused by: |^(Exception|Error) in |^[\w.$]+(Exception|Error)(: |$)/.test(l)) continue;
    const cut = l.length > 300 ? `${l.slice(0, 300)}…` : l;
    if (!out.includes(cut)) out.push(cut);
    if (out.length === 12) break;
  }
  return out;
}

/**
 * The port the user said the app listens on: `server.port` in its options or arguments, else the
 * port of the training URLs when they name one on this host (http://localhost:8080/… means the
 * app serves on 8080 — Spring Boot's default — and the build must not move it elsewhere).
 */
export function userServerPort(req: Pick<BuildRequest, "appArgs" | "jvmOptions" | "training">): number | undefined {
  for (const a of [...req.appArgs, ...req.jvmOptions]) {
    const m = /^(?:--|-D)server\.port=(\d+)$/.exec(a);
    if (m) return Number(m[1]);
  }
  for (const u of [req.training.readyUrl, ...req.training.warmupUrls]) {
    if (!u || !/^https?:\/\//.test(u)) continue;
    const url = new URL(u);
    if (url.port && ["localhost", "127.0.0.1", "[::1]"].includes(url.hostname)) return Number(url.port);
  }
  return undefined;
}
