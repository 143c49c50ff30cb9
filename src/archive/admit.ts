/**
 * Admitting a build made elsewhere. A manifest uploaded by a build Job is a claim by whoever
 * ran that Job; before a node publishes it, trusted code checks the claim and re-derives
 * everything in it that reaches a workload JVM:
 *
 *  - the key is recomputed from the manifest's inputs, and those inputs must be of the scope
 *    the upload was granted for: a build in one namespace can neither satisfy nor pre-empt a
 *    key of another;
 *  - the runtime — the JVM options and launch every pod of the ref gets — is derived here from
 *    the inputs (archive kind, mode, JDK, profile) and the layout, never copied from the upload;
 *  - the profile's own run-time options may not load code or name files (no agent, boot class
 *    path, argument file, `-XX:On…` command or path option);
 *  - the layout's files must be the blobs the node received, size for size.
 *
 * Pure: the caller passes what it knows of the blobs.
 */
import { capabilities } from "../jvm/jdk.ts";
import { runtimeOptions, type Plan } from "../jvm/options.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { archiveKey, FORMAT_VERSION } from "./key.ts";
import { ROOT_PLACEHOLDER, validateManifest, type Launch, type Manifest } from "./manifest.ts";
import { parseProfile, type AgentProfile } from "./profile.ts";

export interface AdmitContext {
  /** The scope the upload was granted for. */
  scope: string;
  /** Size of each blob the node holds for this upload, by sha256; undefined when absent. */
  blobSize: (sha256: string) => number | undefined;
}

function refused(what: string, hint?: string): ClasscacheError {
  return new ClasscacheError("input", `the uploaded build was refused: ${what}`, hint ? { hint } : {});
}

/** The manifest as this node will sign and publish it: checked, with a runtime of its own making. */
export function admitManifest(v: unknown, ctx: AdmitContext): Manifest {
  let m: Manifest;
  try {
    m = validateManifest(v);
  } catch (err) {
    throw refused(err instanceof Error ? err.message : String(err));
  }
  const inputs = m.inputs;
  const feature = checkInputs(m, ctx.scope);
  const caps = capabilities(feature);
  // Every file it names is a blob this node received, of the size the manifest says.
  for (const b of [m.archive, ...m.layout.files]) {
    const have = ctx.blobSize(b.sha256);
    if (have === undefined) throw refused(`blob ${b.sha256.slice(0, 12)} was not uploaded`, "upload every blob the manifest names before the manifest");
    if (have !== b.size) throw refused(`blob ${b.sha256.slice(0, 12)} has ${have} bytes, the manifest says ${b.size}`);
  }

  const profile = profileOf(inputs.profile, inputs.agent !== null);
  if (profile && profile.mode !== inputs.mode) throw refused(`its profile is of mode ${profile.mode}, its inputs of mode ${inputs.mode}`);
  const layoutDir = `layouts/${m.layout.id}`;
  let agentJar: string | undefined;
  if (inputs.agent) {
    const files = m.layout.files.filter((f) => f.path.startsWith("agent/") && f.sha256 === inputs.agent!.sha256);
    if (files.length !== 1) throw refused("its layout does not hold the agent jar its inputs name");
    agentJar = `${ROOT_PLACEHOLDER}/${layoutDir}/${files[0]!.path}`;
  }
  for (const o of profile?.runtime.extraJvmOpts ?? []) {
    const why = refusedRuntimeOption(o);
    if (why) throw refused(`its profile's run-time option ${JSON.stringify(o).slice(0, 200)} ${why}`, "run-time options of a profile may set properties and tuning flags, nothing that loads code or names a file");
  }
  const plan: Plan = {
    kind: inputs.archiveKind,
    mode: inputs.mode,
    feature,
    agent: profile && agentJar ? { jar: agentJar, build: profile.build, runtime: profile.runtime } : null,
    bakedStrategy: inputs.mode === "baked" ? (caps.dropsTransformedClasses ? "weave" : "allow-archiving") : null,
  };
  const runtime = {
    launch: launchOf(m, layoutDir),
    jvmOptions: runtimeOptions(plan, { archive: `${ROOT_PLACEHOLDER}/${m.archive.file}`, shareMemory: false }),
    appArgs: [...inputs.app.args],
  };
  // Where the JDK was in the build's image means nothing on a node: nothing may start it.
  return { ...m, jvm: { ...m.jvm, home: "" }, runtime };
}

/** The inputs are of the granted scope, make the key, and agree with the rest; returns the JDK's feature release. */
function checkInputs(m: Manifest, scope: string): number {
  const inputs = m.inputs;
  if (inputs.format !== FORMAT_VERSION) throw refused(`its inputs are of format ${String(inputs.format)}, not ${FORMAT_VERSION}`);
  if (inputs.scope !== scope) {
    throw refused(`it is for scope ${JSON.stringify(inputs.scope)}, but the build grant is for scope ${JSON.stringify(scope)}`, "a build Job may only publish archives of its own ClassCache's scope");
  }
  if (archiveKey(inputs) !== m.key) throw refused(`its key ${m.key.slice(0, 12)} is not the digest of its inputs`, "the key is recomputed from the inputs; it cannot be chosen");
  if (m.mode !== inputs.mode || m.archive.kind !== inputs.archiveKind || m.jvm.arch !== inputs.jvm.arch) throw refused("its mode, archive kind or arch differ from its inputs");
  const feature = Number(/^(?:1\.)?(\d+)/.exec(inputs.jvm.runtimeVersion ?? "")?.[1]);
  const caps = capabilities(feature);
  if (!Number.isFinite(feature) || !caps.dynamicArchive || (caps.aotCache ? "aot" : "cds") !== inputs.archiveKind) throw refused(`its JDK ${inputs.jvm.runtimeVersion} does not make ${inputs.archiveKind} archives`);
  return feature;
}

function profileOf(doc: unknown, withAgent: boolean): AgentProfile | undefined {
  if (!withAgent) {
    if (doc !== null) throw refused("it has a profile but no agent");
    return undefined;
  }
  try {
    return parseProfile(JSON.stringify(doc), "in the uploaded inputs");
  } catch (err) {
    throw refused(err instanceof Error ? err.message : String(err));
  }
}

/** The launch, from the inputs and the layout: the layout's app.jar, or its jars and the inputs' main class. */
function launchOf(m: Manifest, layoutDir: string): Launch {
  const paths = new Set(m.layout.files.map((f) => f.path));
  if (m.inputs.app.kind === "boot") {
    if (!paths.has("app.jar")) throw refused("its layout of a Spring Boot app has no app.jar");
    return { kind: "jar", jar: `${layoutDir}/app.jar` };
  }
  const claimed = m.runtime.launch;
  if (claimed.kind !== "main" || claimed.mainClass !== m.inputs.app.mainClass) throw refused("its launch is not its inputs' main class");
  const classPath = claimed.classPath.map((p) => {
    const rel = p.startsWith(`${layoutDir}/`) ? p.slice(layoutDir.length + 1) : undefined;
    if (rel === undefined || !paths.has(rel) || !rel.endsWith(".jar") || rel.startsWith("agent/")) throw refused(`its class path names ${JSON.stringify(p).slice(0, 200)}, which is no app jar of its layout`);
    return `${layoutDir}/${rel}`;
  });
  if (!/^[\p{L}_$][\p{L}\p{N}_$]*(\.[\p{L}_$][\p{L}\p{N}_$]*)*$/u.test(m.inputs.app.mainClass)) throw refused("its main class is not a class name");
  return { kind: "main", classPath, mainClass: m.inputs.app.mainClass };
}

/** System properties that change how the JVM finds or trusts code. */
const CODE_PROPERTIES = /^(java\.(system\.class\.loader|security\.manager|security\.policy|security\.properties|class\.path|library\.path|home|ext\.dirs|endorsed\.dirs)|sun\.boot\.|jdk\.module\.|jdk\.internal\.)/;

/**
 * Why a profile's run-time option may not reach a workload JVM, or undefined when it may: it
 * must not load code (agents, class paths, modules), read more options from a file, run a
 * command, or name a file — only properties and tuning flags.
 */
export function refusedRuntimeOption(o: string): string | undefined {
  if (o.startsWith("@")) return "reads options from a file";
  if (/^-(javaagent|agentpath|agentlib|Xrun|Xbootclasspath|cp$|classpath$|-class-path|jar$|p$|-module-path|-upgrade-module-path|-patch-module|-system|-source)/.test(o)) return "loads code";
  if (o.startsWith("-D")) {
    const name = o.slice(2).split("=")[0] ?? "";
    return CODE_PROPERTIES.test(name) ? "sets a property that decides where code comes from" : undefined;
  }
  if (/^--(add-opens|add-exports|add-reads|add-modules|enable-native-access)[= ]/.test(o)) return undefined;
  if (/^-XX:[+-]?(On|Flags|VMOptionsFile|SharedArchiveFile|SharedClassListFile|ArchiveClassesAtExit|AOT|ErrorFile|HeapDumpPath|LogFile|StartFlightRecording|FlightRecorderOptions)/.test(o)) return "runs a command, reads options or names a file";
  if (!/^-X/.test(o)) return "is not a system property or a -X/-XX option";
  if (/[/\\]/.test(o)) return "names a file";
  return undefined;
}
