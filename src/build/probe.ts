/**
 * The launch probe (probe/LaunchProbe.java): a Java agent that a build pod runs in the
 * workload's image with the image's own ENTRYPOINT, to learn the java command it really runs.
 * Here: its jar, and the reading of its record, which every reader (the build, the operator)
 * checks the same way before it uses anything in it: a JSON object with a bounded `command`, an
 * array of strings whose first is `java` or an absolute path to a `java`, or an `error` saying
 * why no launch could be recorded.
 *
 * The record comes from the tenant's own image, in the tenant's own namespace: it is that tenant's
 * statement about its own pods, trusted as much as the image itself, and no more — so only its
 * shape is taken, and what it says only ever goes into that tenant's own build and pod template.
 */
import { isAbsolute, join, posix } from "node:path";
import { toolJar } from "../jvm/tools.ts";
import { ClasscacheError } from "../runtime/errors.ts";
import { openJar, readJarManifest } from "./extract.ts";

/** Where a build pod keeps the probe's record (an emptyDir shared by the probe and the build). */
export const PROBE_DIR = "/classcache-probe";
export const LAUNCH_RECORD = `${PROBE_DIR}/launch.json`;
/** The probe's jar in a kit (scripts/kit.sh puts it there under this fixed name). */
export const KIT_PROBE_JAR = "probe/launch-probe.jar";
/** The environment variable the probe compares JAVA_TOOL_OPTIONS with: what the pod set. */
export const EXPECTED_TOOL_OPTIONS = "CLASSCACHE_PROBE_TOOL_OPTIONS";

/** What a kubelet keeps of a termination message: the operator reads the record from there. */
export const TERMINATION_MESSAGE_BYTES = 4096;
/** The record as a file in the build pod: a long class path fits, a runaway one does not. */
export const RECORD_FILE_BYTES = 1 << 20;
export const MAX_COMMAND_ITEMS = 1024;

/** The probe (probe/LaunchProbe.java), compiled ahead in a kit, else now. */
export function launchProbeJar(): Promise<string> {
  return toolJar({
    name: "launch-probe",
    source: join(import.meta.dirname, "probe", "LaunchProbe.java"),
    release: 8,
    manifest: [["Premain-Class", "dev.classcache.probe.LaunchProbe"]],
    preferredHome: "",
    why: "the launch probe needs javac once, to be compiled",
  });
}

export type LaunchRecord = { command: string[]; workingDir: string | undefined } | { error: string };

/**
 * The probe's record in `text`, checked: at most `maxBytes`, a JSON object with either `error`
 * (a string) or `command` (1..MAX_COMMAND_ITEMS strings without NUL, the first `java` or an
 * absolute path ending in /java) and an optional absolute `workingDir`. Anything else is an
 * error saying what is wrong; nothing of it is used.
 */
export function parseLaunchRecord(text: string, maxBytes: number): LaunchRecord {
  const size = Buffer.byteLength(text);
  if (size > maxBytes) return { error: `the recorded launch is ${size} bytes, more than the ${maxBytes} allowed` };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { error: "the recorded launch is not JSON" };
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) return { error: "the recorded launch is not a JSON object" };
  const r = v as { command?: unknown; workingDir?: unknown; error?: unknown };
  if (typeof r.error === "string") return { error: r.error.slice(0, 2000) };
  const command = r.command;
  if (!isArgv(command)) return { error: `the recorded launch's command is not an array of 1 to ${MAX_COMMAND_ITEMS} strings` };
  if (!isJava(command[0]!)) return { error: `the recorded launch starts with ${JSON.stringify(command[0]!.slice(0, 200))}, not java or an absolute path to a java` };
  if (r.workingDir !== undefined && (typeof r.workingDir !== "string" || !posix.isAbsolute(r.workingDir) || r.workingDir.includes("\0"))) {
    return { error: "the recorded launch's workingDir is not an absolute path" };
  }
  return { command, workingDir: r.workingDir };
}

function isArgv(v: unknown): v is string[] {
  return Array.isArray(v) && v.length > 0 && v.length <= MAX_COMMAND_ITEMS && v.every((s) => typeof s === "string" && !s.includes("\0"));
}

function isJava(argv0: string): boolean {
  return argv0 === "java" || (posix.isAbsolute(argv0) && posix.basename(argv0) === "java");
}

export interface JavaCommand {
  java: string;
  options: string[];
  launch: { jar: string } | { classPath: string; mainClass: string } | { module: string };
  args: string[];
}

/**
 * A java command line split as the probe writes it: the java executable, one-token options,
 * then `-jar <jar>`, `-cp <class path> <main>` or `-m <module>`, then the app's arguments.
 */
export function splitJavaCommand(command: string[]): JavaCommand | { problem: string } {
  const options: string[] = [];
  for (let i = 1; i < command.length; i++) {
    const a = command[i]!;
    const java = command[0]!;
    if (a === "-jar" && i + 1 < command.length) return { java, options, launch: { jar: command[i + 1]! }, args: command.slice(i + 2) };
    if ((a === "-cp" || a === "-classpath" || a === "--class-path") && i + 2 < command.length) {
      return { java, options, launch: { classPath: command[i + 1]!, mainClass: command[i + 2]! }, args: command.slice(i + 3) };
    }
    if ((a === "-m" || a === "--module") && i + 1 < command.length) return { java, options, launch: { module: command[i + 1]! }, args: command.slice(i + 2) };
    if (!a.startsWith("-")) return { problem: `${JSON.stringify(a)} comes before any -jar, -cp or -m` };
    options.push(a);
  }
  return { problem: "it names no -jar <jar>, -cp <class path> <main class> or -m <module>" };
}

/** What `classcache build` takes from a recorded launch: the JDK, the app, its options and arguments. */
export interface LaunchInputs {
  java: string | undefined;
  app: string | undefined;
  classPath: string[] | undefined;
  mainClass: string | undefined;
  jvmOptions: string[];
  appArgs: string[];
}

/**
 * The build's inputs from the probe's record file. No file means the ENTRYPOINT never started a
 * JVM (the probe writes it before main in the first one); an error in it is the probe's own.
 * `-jar` of a Spring Boot fat jar is the app; of another jar, that jar as a class path with its
 * Main-Class. Relative paths are the JVM's, from its working directory.
 */
export async function launchInputs(file: string, read: (f: string) => Promise<string>): Promise<LaunchInputs> {
  let text: string;
  try {
    text = await read(file);
  } catch {
    throw new ClasscacheError("input", "the image's ENTRYPOINT started no JVM: the classcache launch probe recorded no launch", {
      hint: "the image runs something other than java (a shell or another program) or ended first; set spec.launch.command of the ClassCache to the java command the container runs",
    });
  }
  const record = parseLaunchRecord(text, RECORD_FILE_BYTES);
  const fix = "set spec.launch.command of the ClassCache to the java command the container runs";
  if ("error" in record) throw new ClasscacheError("input", `the image's java launch cannot be used: ${record.error}`, { hint: fix });
  const split = splitJavaCommand(record.command);
  if ("problem" in split) throw new ClasscacheError("input", `the image's java launch cannot be used: ${split.problem}`, { hint: fix });
  if ("module" in split.launch) throw new ClasscacheError("input", `the image starts module ${split.launch.module} (java -m): classcache builds for -jar and -cp launches only`, { hint: fix });
  const dir = record.workingDir ?? "/";
  const at = (p: string) => (isAbsolute(p) ? p : posix.join(dir, p));
  const base = { java: isAbsolute(split.java) ? posix.dirname(posix.dirname(split.java)) : undefined, jvmOptions: split.options, appArgs: split.args };
  if ("classPath" in split.launch) {
    return { ...base, app: undefined, classPath: split.launch.classPath.split(":").filter(Boolean).map(at), mainClass: split.launch.mainClass };
  }
  const jar = at(split.launch.jar);
  const zip = await openJar(jar, "app");
  try {
    const mf = await readJarManifest(zip);
    const boot = mf.get("Start-Class") !== undefined && zip.entries.some((e) => e.name.startsWith("BOOT-INF/"));
    const main = mf.get("Main-Class");
    if (boot || !main) return { ...base, app: jar, classPath: undefined, mainClass: undefined };
    return { ...base, app: undefined, classPath: [jar], mainClass: main };
  } finally {
    zip.close();
  }
}
