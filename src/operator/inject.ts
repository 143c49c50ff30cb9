/**
 * The pod patch: one pure function used both for Owned mode (on the workload's pod template)
 * and by the webhook (on a Pod being created). Policy, cert-manager style: spec in, spec and a
 * (reason, message) out; no API calls.
 *
 * What a patched pod gets:
 *  - its scope's view of the node store (`<store>/scopes/<namespace>`, or `_cluster`: only that
 *    scope's archives and jars, as hard links to the store's files, and the agent's socket for
 *    it), read-only, at the fixed STORE_ROOT, where the archive's paths expect the store
 *    (hostPath DirectoryOrCreate, so a node without an agent still starts the pod; or, where
 *    the namespace's Pod Security level forbids hostPath, an inline volume of the agent's CSI
 *    driver, which mounts the same view), and an emptyDir for two argument files;
 *  - an init step (`classcache pod-init`) that writes those files from what the node holds:
 *    the archive and the store's extracted, mtime-pinned app when the node has them, else the
 *    pod's own launch — it always exits 0;
 *  - `JDK_JAVA_OPTIONS=@/classcache/jvm.args` (the java launcher reads it; it may hold an
 *    @file) and any -Xshare option taken out of JAVA_TOOL_OPTIONS — the user's own options kept
 *    byte for byte and every variable kept where it was, so `$(VAR)` references still expand
 *    (see appEnv);
 *  - the launch rewritten from `java [opts] -jar <jar> [args]` (or `-cp <cp> <Main>`) to
 *    `java [opts] @/classcache/launch.args [args]`. A Boot fat jar only benefits in extracted
 *    form, so a launch we cannot see (it comes from the image) is reported, not guessed.
 *  - in hybrid and baked mode with an agent image, the agent jar copied into the emptyDir, so
 *    a pod on a node without the archive still runs the agent live — instrumentation is never
 *    lost to a missing archive.
 */
import { AGENT_DIR, ARGS_DIR, CSI_DRIVER, CSI_VIEW_ATTRIBUTE, JVM_ARGS_FILE, LAUNCH_ARGS_FILE, STORE_ROOT, storeViewHostPath, type CsiView, type StoreVolume } from "./constants.ts";
import { lockedDown, type Container, type EnvVar, type PodSpec, type Volume, type VolumeMount } from "./objects/meta.ts";

export type { Container, EnvVar, PodSpec, PodTemplate, VolumeMount } from "./objects/meta.ts";

export interface InjectionInput {
  ref: string;
  /** Whose archives the pod may see: its namespace, or "" for the cluster's shared ones (see scopeOf). */
  scope: string;
  /** The app container's name; default: the first container. */
  container?: string | undefined;
  jarPath: string;
  mode: "none" | "hybrid" | "baked";
  memorySharing: boolean;
  /** The java command the image runs, when the pod spec does not say (e.g. an ENTRYPOINT). */
  launchCommand?: string[] | undefined;
  agent?: { image: string; jarPath: string; runtimeOptions: string[] } | undefined;
  /** The classcache image, for the init step. */
  image: string;
  /** How the pod reaches its view of the store (see storeVolumeFor); default hostPath. */
  storeVolume?: StoreVolume | undefined;
}

/** The pod's view of the node store as a volume: the hostPath of its scope's view, or the CSI driver's inline volume of it. */
export function storeVolume(name: string, scope: string, kind: StoreVolume = "hostPath"): Volume {
  if (kind === "hostPath") return { name, hostPath: { path: storeViewHostPath(scope), type: "DirectoryOrCreate" } };
  // The plugin takes the namespace from the pod itself; a pod can only ask for the cluster's shared view instead.
  return { name, csi: { driver: CSI_DRIVER, readOnly: true, ...(scope === "" ? { volumeAttributes: { [CSI_VIEW_ATTRIBUTE]: "cluster" satisfies CsiView } } : {}) } };
}

export const Reasons = {
  Patched: "Patched",
  LaunchUnknown: "LaunchUnknown",
  LaunchNotJava: "LaunchNotJava",
  ContainerNotFound: "ContainerNotFound",
  /** Set by the caller, which knows the namespace: see POD_SECURITY_ENFORCE_LABEL. */
  PodSecurityForbidsHostPath: "PodSecurityForbidsHostPath",
} as const;

export interface InjectionOutcome {
  patched: boolean;
  reason: (typeof Reasons)[keyof typeof Reasons];
  message: string;
}

/**
 * What the patch changed in the app container, so it can be put back exactly. Where each option
 * variable sat is not recorded: the patch writes its variables in place, so the patched list
 * itself says it (see stripInjection).
 */
export interface OriginalLaunch {
  container: string;
  command: string[] | null;
  env: Record<string, EnvVar | null>;
}

export const VOLUMES = { store: "classcache-store", args: "classcache-args" } as const;
export const INIT_CONTAINERS = { init: "classcache-init", agent: "classcache-agent-jar", check: "classcache-check" } as const;
const ENV_NAMES = ["JDK_JAVA_OPTIONS", "JAVA_TOOL_OPTIONS"] as const;
/** The name under which a JDK_JAVA_OPTIONS from a ConfigMap or Secret is kept, referenced from our JDK_JAVA_OPTIONS. */
export const USER_JDK_OPTIONS = "CLASSCACHE_USER_JDK_JAVA_OPTIONS";
const JVM_ARGS = `@${JVM_ARGS_FILE}`;
const USER_JDK_OPTIONS_REF = `${JVM_ARGS} $(${USER_JDK_OPTIONS})`;

/** Where the launch sits in a java command line, and what it is. */
export function findLaunch(argv: string[]): { start: number; end: number; launch: string[] } | { problem: "not-java" | "no-launch" } {
  const exe = argv[0]?.split("/").pop();
  if (exe !== "java") return { problem: "not-java" };
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-jar" && i + 1 < argv.length) return { start: i, end: i + 2, launch: argv.slice(i, i + 2) };
    if ((a === "-cp" || a === "-classpath" || a === "--class-path") && i + 2 < argv.length) return { start: i, end: i + 3, launch: argv.slice(i, i + 3) };
    if (!a.startsWith("-") && !a.startsWith("@")) return { problem: "no-launch" }; // a main class without a class path flag
    if (a === "--module" || a === "-m") return { problem: "no-launch" };
  }
  return { problem: "no-launch" };
}

/** Removes everything a previous injection added, restoring what it replaced. */
export function stripInjection(spec: PodSpec, original: OriginalLaunch | undefined): PodSpec {
  const ours = new Set<string>(Object.values(INIT_CONTAINERS));
  const vols = new Set<string>(Object.values(VOLUMES));
  const out: PodSpec = structuredClone(spec);
  out.initContainers = (out.initContainers ?? []).filter((c) => !ours.has(c.name));
  if (out.initContainers.length === 0) delete out.initContainers;
  out.volumes = (out.volumes ?? []).filter((v) => !vols.has(v.name));
  if (out.volumes.length === 0) delete out.volumes;
  out.containers = out.containers.map((c) => {
    const mounts = (c.volumeMounts ?? []).filter((m) => !vols.has(m.name));
    const copy: Container = { ...c, volumeMounts: mounts };
    if (mounts.length === 0) delete copy.volumeMounts;
    if (original && original.container === c.name) {
      if (original.command) copy.command = original.command;
      else delete copy.command;
      const env = restoreEnv(c.env ?? [], original);
      copy.env = env;
      if (env.length === 0) delete copy.env;
    }
    return copy;
  });
  return out;
}

/**
 * The app container's option variables put back as they were, each at the place the patch kept
 * it at: a renamed JDK_JAVA_OPTIONS goes back under its own name where its source sits. A
 * variable with a valueFrom was never rewritten and stays as it is. (A record from an older
 * version, whose patch appended the variables, restores them at the end, as that version did.)
 */
function restoreEnv(current: EnvVar[], original: OriginalLaunch): EnvVar[] {
  const env = [...current];
  for (const name of ENV_NAMES) {
    const before = original.env[name] ?? null;
    const at = env.findIndex((e) => e.name === name);
    const source = env.findIndex((e) => e.name === USER_JDK_OPTIONS);
    if (name === "JDK_JAVA_OPTIONS" && at >= 0 && source >= 0 && env[at]!.value === USER_JDK_OPTIONS_REF) {
      env[source] = { ...env[source]!, name };
      env.splice(at, 1);
    } else if (at >= 0 && env[at]!.valueFrom === undefined) {
      if (before) env[at] = before;
      else env.splice(at, 1);
    } else if (at < 0 && before) {
      env.push(before);
    }
  }
  return env;
}

/** The env entries of a patched container that the patch wrote: what Owned mode applies. */
export function injectedEnv(env: EnvVar[]): EnvVar[] {
  const renamed = env.some((e) => e.name === "JDK_JAVA_OPTIONS" && e.value === USER_JDK_OPTIONS_REF);
  return env.filter((e) => ((ENV_NAMES as readonly string[]).includes(e.name) && e.valueFrom === undefined) || (renamed && e.name === USER_JDK_OPTIONS));
}

const JVM_SPACE = new Set([" ", "\t", "\n", "\v", "\f", "\r"]);

/**
 * The options the JVM reads from JAVA_TOOL_OPTIONS, with where each is written: split on
 * whitespace outside '…' or "…", the quotes themselves dropped — HotSpot's
 * Arguments::parse_options_buffer. An unclosed quote runs to the end (the JVM refuses it).
 */
export function toolOptions(text: string): { start: number; end: number; option: string }[] {
  const out: { start: number; end: number; option: string }[] = [];
  let i = 0;
  while (i < text.length) {
    while (i < text.length && JVM_SPACE.has(text[i]!)) i++;
    if (i >= text.length) break;
    const start = i;
    let option = "";
    while (i < text.length && !JVM_SPACE.has(text[i]!)) {
      const c = text[i]!;
      if (c !== "'" && c !== '"') {
        option += c;
        i++;
        continue;
      }
      const close = text.indexOf(c, i + 1);
      option += text.slice(i + 1, close < 0 ? text.length : close);
      i = close < 0 ? text.length : close + 1;
    }
    out.push({ start, end: i, option });
  }
  return out;
}

/**
 * JAVA_TOOL_OPTIONS without -Xshare: every -Xshare: option cut out exactly where it is written,
 * every other byte left as written (quoted spaces included). A stale archive must never stop a
 * JVM, which -Xshare:on would; and nothing is put in its place: the archive's own options (in
 * jvm.args) say -Xshare:auto for a CDS archive, while next to -XX:AOTCache (JDK 25) any -Xshare
 * option, auto included, stops the JVM ("Option AOTCache cannot be used at the same time with
 * -Xshare:…" — found on a real node: a JDK 25 pod in a crash loop).
 */
export function mergeToolOptions(existing: string | undefined): string {
  const text = existing ?? "";
  let kept = "";
  let from = 0;
  for (const t of toolOptions(text)) {
    if (!t.option.startsWith("-Xshare:")) continue;
    kept += text.slice(from, t.start);
    from = t.end;
  }
  kept += text.slice(from);
  return kept;
}

/**
 * Patches a pod spec (already stripped of any earlier injection). Returns the spec unchanged
 * with a reason when the launch cannot be patched; then nothing is injected at all.
 */
export function injectPod(spec: PodSpec, input: InjectionInput): { spec: PodSpec; outcome: InjectionOutcome; original?: OriginalLaunch } {
  const container = input.container ? spec.containers.find((c) => c.name === input.container) : spec.containers[0];
  if (!container) {
    return {
      spec,
      outcome: { patched: false, reason: Reasons.ContainerNotFound, message: `the pod template has no container named "${input.container}"; set spec.container to one of: ${spec.containers.map((c) => c.name).join(", ")}` },
    };
  }
  const fromSpec = container.command !== undefined;
  const argv = [...(container.command ?? input.launchCommand ?? []), ...(container.args ?? [])];
  if (!fromSpec && !input.launchCommand) {
    return {
      spec,
      outcome: {
        patched: false,
        reason: Reasons.LaunchUnknown,
        message: `container "${container.name}" has no command in the pod spec (the image's ENTRYPOINT runs it), so the launch cannot be rewritten to the extracted app; set spec.launch.command to the java command the image runs, e.g. ["java", "-jar", "${input.jarPath}"]`,
      },
    };
  }
  const found = findLaunch(argv);
  if ("problem" in found) {
    return {
      spec,
      outcome: {
        patched: false,
        reason: found.problem === "not-java" ? Reasons.LaunchNotJava : Reasons.LaunchUnknown,
        message:
          found.problem === "not-java"
            ? `container "${container.name}" runs "${argv[0] ?? ""}", not java (a shell wrapper hides the java command line); set the container's command to the java command itself, or spec.launch.command`
            : `container "${container.name}" runs java without "-jar <jar>" or "-cp <class path> <main class>", so its launch cannot be rewritten; use one of those forms`,
      },
    };
  }
  // The rewritten command: the part before the launch, the argfile, and the app's arguments.
  // Container args stay as they are; the rewrite only replaces the command.
  const commandLength = fromSpec ? container.command!.length : input.launchCommand!.length;
  if (found.end > commandLength) {
    return { spec, outcome: { patched: false, reason: Reasons.LaunchUnknown, message: `container "${container.name}" splits its launch between command and args; put "java … -jar <jar>" (or -cp … <main>) in the command` } };
  }
  const { env: newEnv, original, jvmArgsInCommand } = appEnv(container);
  const command = [
    argv[0]!,
    ...(jvmArgsInCommand ? [JVM_ARGS] : []),
    ...argv.slice(1, found.start),
    `@${LAUNCH_ARGS_FILE}`,
    ...argv.slice(found.end, commandLength),
  ];

  const inits = [...initContainers(input, found.launch), jarCheck(container, argv[0]!)];
  const argsMount: VolumeMount = { name: VOLUMES.args, mountPath: ARGS_DIR, readOnly: true };
  const storeMount: VolumeMount = { name: VOLUMES.store, mountPath: STORE_ROOT, readOnly: true };

  const out = structuredClone(spec);
  out.initContainers = [...(out.initContainers ?? []), ...inits];
  out.volumes = [
    ...(out.volumes ?? []),
    storeVolume(VOLUMES.store, input.scope, input.storeVolume),
    { name: VOLUMES.args, emptyDir: { sizeLimit: "64Mi" } },
  ];
  out.containers = out.containers.map((c) =>
    c.name !== container.name ? c : { ...c, command, env: newEnv, volumeMounts: [...(c.volumeMounts ?? []), storeMount, argsMount] },
  );
  return {
    spec: out,
    original,
    outcome: { patched: true, reason: Reasons.Patched, message: `container "${container.name}" launches through ${LAUNCH_ARGS_FILE}; the init step picks the node's archive for ref ${input.ref.slice(0, 12)} or the original launch` },
  };
}

const RESTRICTED = lockedDown({ runAsUser: 65532 });

/** The init step, and in agent modes the copy of the agent jar for a live fallback. */
function initContainers(input: InjectionInput, launch: string[]): Container[] {
  const withAgent = input.agent && input.mode !== "none";
  const fallbackJvm = withAgent ? [`-javaagent:${AGENT_DIR}/agent.jar`, ...input.agent!.runtimeOptions] : [];
  const args = [
    "pod-init",
    `--ref=${input.ref}`,
    `--out=${ARGS_DIR}`,
    ...launch.map((a) => `--fallback=${a}`),
    ...fallbackJvm.map((o) => `--fallback-jvm=${o}`),
    ...(input.memorySharing ? ["--share-memory"] : []),
    "--check",
  ];
  const out: Container[] = [];
  if (withAgent) {
    out.push({
      name: INIT_CONTAINERS.agent,
      image: input.agent!.image,
      command: ["cp", input.agent!.jarPath, `${AGENT_DIR}/agent.jar`],
      volumeMounts: [{ name: VOLUMES.args, mountPath: AGENT_DIR, subPath: "agent" }],
      resources: { requests: { cpu: "10m", memory: "16Mi" }, limits: { memory: "64Mi" } },
      // A copy needs no privilege or root; this keeps the pod admissible under runAsNonRoot and "restricted".
      securityContext: RESTRICTED,
    });
  }
  out.push({
    name: INIT_CONTAINERS.init,
    image: input.image,
    command: ["classcache"],
    args,
    volumeMounts: [
      { name: VOLUMES.store, mountPath: STORE_ROOT, readOnly: true },
      { name: VOLUMES.args, mountPath: ARGS_DIR },
    ],
    resources: { requests: { cpu: "10m", memory: "32Mi" }, limits: { memory: "128Mi" } },
    securityContext: RESTRICTED,
  });
  return out;
}

/**
 * The jar check: the last init step, in the app container's own image with its own `java`, its
 * own mounts (read-only) and its user. It switches the pod to the staged archive only if the
 * image's application jars have the digests the archive was built from (src/node/check/
 * JarCheck.java); otherwise the pod starts without it and the reason is the container's
 * termination message. The JVM runs small and alone: no options from the image's environment.
 */
function jarCheck(app: Container, java: string): Container {
  const sc = (app.securityContext ?? {}) as Record<string, unknown>;
  const user = Object.fromEntries(["runAsUser", "runAsGroup", "runAsNonRoot"].filter((k) => sc[k] !== undefined).map((k) => [k, sc[k]]));
  const theirs = (app.volumeMounts ?? []).filter((m) => !(Object.values(VOLUMES) as string[]).includes(m.name)).map((m) => ({ ...m, readOnly: true }));
  return {
    name: INIT_CONTAINERS.check,
    image: app.image,
    ...(app.imagePullPolicy ? { imagePullPolicy: app.imagePullPolicy } : {}),
    command: [java, "-Xshare:auto", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Xmx32m", "-cp", `${ARGS_DIR}/jar-check.jar`, "dev.classcache.check.JarCheck", ARGS_DIR],
    env: ["JAVA_TOOL_OPTIONS", "JDK_JAVA_OPTIONS", "_JAVA_OPTIONS"].map((name) => ({ name, value: "" })),
    volumeMounts: [...theirs, { name: VOLUMES.args, mountPath: ARGS_DIR }],
    resources: { requests: { cpu: "10m", memory: "64Mi" }, limits: { memory: "192Mi" } },
    securityContext: { ...user, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] }, seccompProfile: { type: "RuntimeDefault" } },
  };
}

/**
 * The app container's env with the option variables set, and what they were before.
 *
 * Every variable stays where it is: Kubernetes expands `$(VAR)` only for a VAR defined earlier
 * in the list, so moving one would change what a later reference gets. A variable the container
 * did not have is appended (appending cannot change what an earlier reference gets). The user's
 * options are kept as written:
 *  - JDK_JAVA_OPTIONS with a value: `@/classcache/jvm.args <value>`, in place;
 *  - JDK_JAVA_OPTIONS from a ConfigMap, Secret or field: its source kept in place as
 *    CLASSCACHE_USER_JDK_JAVA_OPTIONS, and right after it JDK_JAVA_OPTIONS =
 *    `@/classcache/jvm.args $(CLASSCACHE_USER_JDK_JAVA_OPTIONS)`;
 *  - where that reference might stay unresolved — an optional key (a missing one defines no
 *    variable, and the JVM would refuse the literal `$(…)`), the name already taken — or where a
 *    JDK_JAVA_OPTIONS may come from envFrom, the variable is left alone and the command reads
 *    the file instead: `java @/classcache/jvm.args …` (after the user's JDK_JAVA_OPTIONS then);
 *  - JAVA_TOOL_OPTIONS with a value: mergeToolOptions (its -Xshare options out), in place;
 *    from a source, or absent: left alone.
 */
function appEnv(container: Container): { env: EnvVar[]; original: OriginalLaunch; jvmArgsInCommand: boolean } {
  const env = container.env ?? [];
  const original: OriginalLaunch = { container: container.name, command: container.command ?? null, env: {} };
  for (const name of ENV_NAMES) original.env[name] = env.find((e) => e.name === name) ?? null;
  const fromEnvFrom = Array.isArray(container.envFrom) && container.envFrom.length > 0;
  const jdk = original.env.JDK_JAVA_OPTIONS;
  const renamable = jdk?.valueFrom !== undefined && !isOptional(jdk.valueFrom) && !env.some((e) => e.name === USER_JDK_OPTIONS);
  const jvmArgsInCommand = jdk ? jdk.valueFrom !== undefined && !renamable : fromEnvFrom;
  const out: EnvVar[] = [];
  for (const e of env) {
    if (e.name === "JDK_JAVA_OPTIONS" && e.valueFrom === undefined) out.push({ name: e.name, value: e.value ? `${JVM_ARGS} ${e.value}` : JVM_ARGS });
    else if (e.name === "JDK_JAVA_OPTIONS" && renamable) out.push({ ...e, name: USER_JDK_OPTIONS }, { name: e.name, value: USER_JDK_OPTIONS_REF });
    else if (e.name === "JAVA_TOOL_OPTIONS" && e.valueFrom === undefined) out.push({ name: e.name, value: mergeToolOptions(e.value) });
    else out.push(e);
  }
  if (!jdk && !fromEnvFrom) out.push({ name: "JDK_JAVA_OPTIONS", value: JVM_ARGS });
  return { env: out, original, jvmArgsInCommand };
}

/** A key reference marked optional: when the key is missing, the kubelet defines no variable at all. */
function isOptional(valueFrom: Record<string, unknown>): boolean {
  return Object.values(valueFrom).some((ref) => typeof ref === "object" && ref !== null && (ref as { optional?: unknown }).optional === true);
}
